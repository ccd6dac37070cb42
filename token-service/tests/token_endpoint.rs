//! The HTTPS endpoints of the real binary on its embedded log: the token endpoint
//! (RFC 6749 §4.4, every §5.2 error), revocation (RFC 7009), introspection (RFC 7662),
//! the JWKS, key rotation, restarts, and what may never reach the log.

mod support;

use std::sync::Arc;

use gatehouse_domain::Command;
use gatehouse_eventlog::{AppendRequest, EventLog, Expectation};
use gatehouse_proto::events::{
    ClientRegistered, EventEnvelope, OAuthClient, event_envelope::Event, o_auth_client::KeyType,
};
use gatehouse_proto::keymanager::{
    GenerateKeysRequest, RegenerateSecretRequest, RotateSigningKeyRequest,
};
use gatehouse_token_service::secrets::hash_secret;
use gatehouse_tokens::{ADMIN_AUDIENCE, ADMIN_SCOPES, AccessClaims, SigningKeyPair};
use prost::Message;
use support::*;

const ADMIN_ID: &str = "gatehouse-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gatehouse-token-")
        .tempdir()
        .unwrap()
}

async fn start_admin(dir: &tempfile::TempDir) -> TokenService {
    TokenService::start(Options::embedded(dir.path()).with_admin(ADMIN_ID, ADMIN_SECRET))
}

/// Opens the embedded log of a data directory that no process uses, waiting for a
/// previous user in this process to let go of it.
async fn open_embedded(dir: &std::path::Path) -> Arc<dyn EventLog> {
    LogLocation::Embedded(dir.to_path_buf()).open().await
}

/// Runs `commands` on the (not running) service's embedded log, then lets go of it.
async fn prepopulate(dir: &std::path::Path, commands: Vec<Command>) {
    let writer = World::writer(open_embedded(dir).await).await;
    for command in commands {
        writer.run(command).await;
    }
    writer.close().await;
    drop(open_embedded(dir).await);
}

fn admin_client(id: &str, secret: &str) -> Command {
    Command::RegisterClient {
        client: OAuthClient {
            client_id: id.into(),
            secret_hash: hash_secret(secret).unwrap(),
            admin_scopes: vec!["apim:api_view".into()],
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn basic_and_form_client_authentication_both_work() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let basic = ts
        .post_form(
            "/oauth2/token",
            Some((ADMIN_ID, ADMIN_SECRET)),
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(basic.status, 200, "{}", basic.text());
    assert_eq!(basic.header("cache-control"), Some("no-store"));
    assert_eq!(basic.header("pragma"), Some("no-cache"));
    assert!(
        basic
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let json = basic.json();
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], 3600);
    assert!(json["access_token"].as_str().unwrap().split('.').count() == 3);

    let form = ts
        .post_form(
            "/oauth2/token",
            None,
            &format!(
                "grant_type=client_credentials&client_id={ADMIN_ID}&client_secret={ADMIN_SECRET}"
            ),
        )
        .await;
    assert_eq!(form.status, 200, "{}", form.text());
    // A charset parameter on the content type is fine.
    let charset = ts
        .request(
            "POST",
            "/oauth2/token",
            &[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=UTF-8",
                ),
                ("authorization", &basic_header(ADMIN_ID, ADMIN_SECRET)),
            ],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(charset.status, 200, "{}", charset.text());
}

#[tokio::test]
async fn token_verifies_against_jwks_and_carries_every_claim() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let token = ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
    let claims = verify_with_jwks(&token.access_token, &ts.jwks().await, ADMIN_AUDIENCE);
    let claims: AccessClaims = serde_json::from_value(claims).unwrap();
    assert_eq!(claims.iss, gatehouse_tokens::DEFAULT_ISSUER);
    assert_eq!(claims.sub, ADMIN_ID);
    assert_eq!(claims.aud, ADMIN_AUDIENCE);
    assert_eq!(claims.client_id, ADMIN_ID);
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.nbf, claims.iat);
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(claims.scope, ADMIN_SCOPES.join(" "));
    assert_eq!(token.scope, claims.scope);
    assert_eq!(claims.key_type, "");
    let header = jsonwebtoken::decode_header(&token.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    // A second token is another token.
    let again = ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
    assert_ne!(again.access_token, token.access_token);
}

#[tokio::test]
async fn admin_scopes_are_granted_as_requested() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let token = ts
        .token(
            ADMIN_ID,
            ADMIN_SECRET,
            "&scope=apim:api_view%20unknown:scope%20apim:admin",
        )
        .await;
    assert_eq!(token.scope, "apim:api_view apim:admin");
    // Only scopes it does not have: nothing to grant.
    ts.post_form(
        "/oauth2/token",
        Some((ADMIN_ID, ADMIN_SECRET)),
        "grant_type=client_credentials&scope=read:users",
    )
    .await
    .assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn invalid_request_errors() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let auth = Some((ADMIN_ID, ADMIN_SECRET));
    // Missing grant type (absent, or empty which counts as absent).
    ts.post_form("/oauth2/token", auth, "scope=apim:admin")
        .await
        .assert_error(400, "invalid_request");
    ts.post_form("/oauth2/token", auth, "grant_type=")
        .await
        .assert_error(400, "invalid_request");
    // A repeated parameter.
    ts.post_form(
        "/oauth2/token",
        auth,
        "grant_type=client_credentials&grant_type=client_credentials",
    )
    .await
    .assert_error(400, "invalid_request");
    // Not a form.
    let basic = basic_header(ADMIN_ID, ADMIN_SECRET);
    ts.request(
        "POST",
        "/oauth2/token",
        &[
            ("content-type", "application/json"),
            ("authorization", &basic),
        ],
        r#"{"grant_type":"client_credentials"}"#,
    )
    .await
    .assert_error(400, "invalid_request");
    ts.request(
        "POST",
        "/oauth2/token",
        &[("authorization", &basic)],
        "grant_type=client_credentials",
    )
    .await
    .assert_error(400, "invalid_request");
    // Two client authentication methods at once.
    ts.post_form(
        "/oauth2/token",
        auth,
        &format!("grant_type=client_credentials&client_id={ADMIN_ID}&client_secret={ADMIN_SECRET}"),
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn invalid_client_errors_carry_www_authenticate() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let grant = "grant_type=client_credentials";
    // Wrong secret, by Basic and by form.
    ts.post_form("/oauth2/token", Some((ADMIN_ID, "wrong-secret")), grant)
        .await
        .assert_error(401, "invalid_client");
    ts.post_form(
        "/oauth2/token",
        None,
        &format!("{grant}&client_id={ADMIN_ID}&client_secret=wrong-secret"),
    )
    .await
    .assert_error(401, "invalid_client");
    // Unknown client.
    ts.post_form(
        "/oauth2/token",
        Some(("no-such-client", ADMIN_SECRET)),
        grant,
    )
    .await
    .assert_error(401, "invalid_client");
    // No credentials, or an id without a secret.
    ts.post_form("/oauth2/token", None, grant)
        .await
        .assert_error(401, "invalid_client");
    ts.post_form(
        "/oauth2/token",
        None,
        &format!("{grant}&client_id={ADMIN_ID}"),
    )
    .await
    .assert_error(401, "invalid_client");
    // Another scheme, and malformed Basic credentials.
    for authorization in ["Bearer abc", "Basic !!!notbase64", "Basic Zm9v"] {
        ts.request(
            "POST",
            "/oauth2/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", authorization),
            ],
            grant,
        )
        .await
        .assert_error(401, "invalid_client");
    }
    // The right secret still works.
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
}

#[tokio::test]
async fn a_revoked_client_is_an_invalid_client() {
    let dir = temp();
    prepopulate(
        dir.path(),
        vec![
            admin_client("retired-admin", "retired-secret-0123456789"),
            Command::RevokeClient {
                client_id: "retired-admin".into(),
            },
        ],
    )
    .await;
    let ts = start_admin(&dir).await;
    ts.post_form(
        "/oauth2/token",
        Some(("retired-admin", "retired-secret-0123456789")),
        "grant_type=client_credentials",
    )
    .await
    .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn grant_types_other_than_client_credentials_are_unsupported() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    for grant in [
        "password&username=a&password=b",
        "authorization_code&code=x",
        "refresh_token&refresh_token=x",
        "urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=x",
        "made_up",
    ] {
        ts.post_form(
            "/oauth2/token",
            Some((ADMIN_ID, ADMIN_SECRET)),
            &format!("grant_type={grant}"),
        )
        .await
        .assert_error(400, "unsupported_grant_type");
    }
}

#[tokio::test]
async fn a_client_without_the_client_credentials_grant_is_unauthorized() {
    // A client record whose grant types do not include client_credentials (today's
    // commands refuse to make one; a newer writer could): appended as a raw event.
    let dir = temp();
    {
        let log = open_embedded(dir.path()).await;
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            aggregate_id: "jwt-bearer-client".into(),
            aggregate_version: 1,
            actor: "a-newer-writer".into(),
            event: Some(Event::ClientRegistered(ClientRegistered {
                client: Some(OAuthClient {
                    client_id: "jwt-bearer-client".into(),
                    secret_hash: hash_secret("jwt-bearer-secret-0123").unwrap(),
                    grant_types: vec!["urn:ietf:params:oauth:grant-type:jwt-bearer".into()],
                    token_lifetime_seconds: 600,
                    admin_scopes: vec!["apim:api_view".into()],
                    ..Default::default()
                }),
            })),
            ..Default::default()
        };
        log.append(AppendRequest {
            subject: gatehouse_eventlog::subject("client", "jwt-bearer-client"),
            msg_id: envelope.event_id.clone(),
            headers: vec![],
            payload: envelope.encode_to_vec().into(),
            expect: Expectation::Any,
        })
        .await
        .unwrap();
    }
    let ts = start_admin(&dir).await;
    ts.post_form(
        "/oauth2/token",
        Some(("jwt-bearer-client", "jwt-bearer-secret-0123")),
        "grant_type=client_credentials",
    )
    .await
    .assert_error(400, "unauthorized_client");
}

#[tokio::test]
async fn malformed_scopes_are_invalid_scope() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    for scope in [
        "apim:admin%20%20apim:api_view",
        "%22quoted%22",
        "back%5Cslash",
        "%20apim:admin",
    ] {
        ts.post_form(
            "/oauth2/token",
            Some((ADMIN_ID, ADMIN_SECRET)),
            &format!("grant_type=client_credentials&scope={scope}"),
        )
        .await
        .assert_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn jwks_health_and_unknown_routes() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let health = ts.request("GET", "/health", &[], "").await;
    assert_eq!(health.status, 200);
    let jwks = ts.jwks().await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none());
    let missing = ts.request("GET", "/nope", &[], "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
    let wrong_method = ts.request("GET", "/oauth2/token", &[], "").await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.json()["error"].is_string());
}

#[tokio::test]
async fn revoke_then_introspect_says_inactive_and_the_log_has_it() {
    let dir = temp();
    let mut ts = start_admin(&dir).await;
    let admin = (ADMIN_ID, ADMIN_SECRET);
    let token = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    let live = ts.introspect(admin, &token).await;
    assert_eq!(live["active"], true, "{live}");
    for field in [
        "scope",
        "client_id",
        "exp",
        "iat",
        "nbf",
        "sub",
        "aud",
        "iss",
        "jti",
    ] {
        assert!(!live[field].is_null(), "{field} in {live}");
    }
    assert_eq!(live["token_type"], "Bearer");
    assert_eq!(live["client_id"], ADMIN_ID);
    // Revocation needs client authentication.
    ts.post_form("/oauth2/revoke", None, &format!("token={token}"))
        .await
        .assert_error(401, "invalid_client");
    ts.post_form(
        "/oauth2/revoke",
        Some(admin),
        "token_type_hint=access_token",
    )
    .await
    .assert_error(400, "invalid_request");
    let revoked = ts
        .post_form(
            "/oauth2/revoke",
            Some(admin),
            &format!("token={token}&token_type_hint=access_token"),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(
        ts.introspect(admin, &token).await,
        serde_json::json!({"active": false})
    );
    // Revoking again, or a garbage token: still 200.
    for again in [token.as_str(), "not-a-token"] {
        let answer = ts
            .post_form("/oauth2/revoke", Some(admin), &format!("token={again}"))
            .await;
        assert_eq!(answer.status, 200);
    }
    // Other tokens of the client live on.
    let other = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    assert_eq!(ts.introspect(admin, &other).await["active"], true);

    let jti = live["jti"].as_str().unwrap().to_string();
    ts.stop();
    let log = open_embedded(dir.path()).await;
    let revocations: Vec<_> = events(&log)
        .await
        .into_iter()
        .filter_map(|(record, e)| match e.event {
            Some(Event::TokenRevoked(t)) => Some((record, e.aggregate_id, e.actor, t)),
            _ => None,
        })
        .collect();
    assert_eq!(revocations.len(), 1, "one revocation, recorded once");
    let (record, aggregate, actor, event) = &revocations[0];
    assert_eq!(aggregate, &jti);
    assert_eq!(record.subject, format!("gatehouse.events.token.{jti}"));
    assert_eq!(actor, ADMIN_ID);
    assert_eq!(event.client_id, ADMIN_ID);
    assert_eq!(
        event.expires_at.unwrap().seconds,
        live["exp"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn revoking_another_clients_token_changes_nothing() {
    let dir = temp();
    prepopulate(
        dir.path(),
        vec![admin_client("viewer", "viewer-secret-0123456789")],
    )
    .await;
    let ts = start_admin(&dir).await;
    let token = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    let answer = ts
        .post_form(
            "/oauth2/revoke",
            Some(("viewer", "viewer-secret-0123456789")),
            &format!("token={token}"),
        )
        .await;
    assert_eq!(answer.status, 200);
    // Any live client may introspect.
    let seen = ts
        .introspect(("viewer", "viewer-secret-0123456789"), &token)
        .await;
    assert_eq!(seen["active"], true);
}

#[tokio::test]
async fn introspection_is_inactive_for_expired_foreign_and_garbage_tokens() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let admin = (ADMIN_ID, ADMIN_SECRET);
    let token = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    let claims: AccessClaims =
        serde_json::from_value(verify_with_jwks(&token, &ts.jwks().await, ADMIN_AUDIENCE)).unwrap();

    // Expired: signed with the service's own key (read from its key store).
    let kid = kid_of(&token);
    let pem = std::fs::read_to_string(dir.path().join(format!("keys/{kid}.RS256.pem"))).unwrap();
    let own_key = SigningKeyPair::from_pem(&kid, "RS256", &pem).unwrap();
    let mut expired = claims.clone();
    expired.iat -= 7200;
    expired.nbf -= 7200;
    expired.exp = expired.iat + 3600;
    let expired = own_key.sign(&expired).unwrap();
    // Sanity: the same key with live claims is accepted.
    let mut fresh = claims.clone();
    fresh.jti = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        ts.introspect(admin, &own_key.sign(&fresh).unwrap()).await["active"],
        true
    );

    // Foreign: a key nobody published, and the right kid with another key.
    let stranger = SigningKeyPair::generate("ES256").unwrap();
    let foreign = stranger.sign(&claims).unwrap();
    let impostor = SigningKeyPair::generate("RS256").unwrap();
    let forged = {
        let real_header = token.split('.').next().unwrap();
        let signed = impostor.sign(&claims).unwrap();
        let mut parts: Vec<&str> = signed.split('.').collect();
        parts[0] = real_header;
        parts.join(".")
    };
    // Another issuer, signed with the real key.
    let mut elsewhere = claims.clone();
    elsewhere.iss = "https://elsewhere.example.com/oauth2/token".into();
    let elsewhere = own_key.sign(&elsewhere).unwrap();

    for (what, t) in [
        ("expired", expired.as_str()),
        ("foreign", foreign.as_str()),
        ("forged", forged.as_str()),
        ("other issuer", elsewhere.as_str()),
        ("garbage", "garbage"),
        ("empty-ish", "a.b.c"),
    ] {
        let answer = ts.introspect(admin, t).await;
        assert_eq!(answer, serde_json::json!({"active": false}), "{what}");
    }
    // Introspection needs an authenticated client.
    ts.post_form("/oauth2/introspect", None, &format!("token={token}"))
        .await
        .assert_error(401, "invalid_client");
    ts.post_form(
        "/oauth2/introspect",
        Some((ADMIN_ID, "wrong-secret")),
        &format!("token={token}"),
    )
    .await
    .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let admin = (ADMIN_ID, ADMIN_SECRET);
    let old = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    let old_kid = kid_of(&old);

    // grpc.health.v1 says the KeyManager serves (to anyone: health needs no identity).
    let channel = gatehouse_testkit::grpc::channel(
        &ts.options
            .pki()
            .target(format!("127.0.0.1:{}", ts.grpc.port())),
    )
    .await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "gatehouse.keymanager.v1.KeyManager".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut km = ts.key_manager().await;
    let rotated = km
        .rotate_signing_key(RotateSigningKeyRequest {
            alg: "ES256".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.alg, "ES256");
    assert_ne!(rotated.kid, old_kid);

    let new = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    assert_eq!(kid_of(&new), rotated.kid);
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
    let jwks = ts.jwks().await;
    let mut kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    kids.sort();
    let mut expected = vec![old_kid.as_str(), rotated.kid.as_str()];
    expected.sort();
    assert_eq!(kids, expected);
    for token in [&old, &new] {
        verify_with_jwks(token, &jwks, ADMIN_AUDIENCE);
        assert_eq!(ts.introspect(admin, token).await["active"], true);
    }
    // Unsupported algorithms are refused.
    let refused = km
        .rotate_signing_key(RotateSigningKeyRequest {
            alg: "HS256".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // Both private keys are in the key store.
    let files = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
    assert_eq!(files, 2);
}

#[tokio::test]
async fn tokens_and_the_generated_admin_survive_a_restart() {
    let dir = temp();
    let ts = TokenService::start(Options::embedded(dir.path()).with_alg("ES256"));
    let (id, secret) = ts
        .printed_admin
        .clone()
        .expect("admin client printed at first start");
    assert!(ts.stdout.contains("(shown once)"));
    assert!(secret.len() >= 32);
    let token = ts.token(&id, &secret, "").await.access_token;
    let kid = kid_of(&token);
    let jwks_before = ts.jwks().await;

    let ts = ts.restart();
    assert!(
        ts.printed_admin.is_none(),
        "the admin secret is shown once: {}",
        ts.stdout
    );
    assert!(!ts.stdout.contains(&secret));
    assert_eq!(ts.jwks().await, jwks_before, "same keys after a restart");
    verify_with_jwks(&token, &ts.jwks().await, ADMIN_AUDIENCE);
    assert_eq!(ts.introspect((&id, &secret), &token).await["active"], true);
    let after = ts.token(&id, &secret, "").await.access_token;
    assert_eq!(kid_of(&after), kid, "still signing with the same key");
}

#[tokio::test]
async fn private_key_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp();
    let _ts = start_admin(&dir).await;
    let keys = dir.path().join("keys");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut count = 0;
    for entry in std::fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        count += 1;
    }
    assert_eq!(count, 1);
    let tls_key = dir.path().join("tls/key.pem");
    assert_eq!(
        std::fs::metadata(tls_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn the_configured_admin_secret_wins_on_restart() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    assert!(
        ts.printed_admin.is_none(),
        "a configured admin is not printed"
    );
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
    let mut options = ts.options.clone();
    drop(ts);
    options.admin = Some((ADMIN_ID.into(), "a-brand-new-secret-0123".into()));
    let ts = TokenService::start(options);
    ts.post_form(
        "/oauth2/token",
        Some((ADMIN_ID, ADMIN_SECRET)),
        "grant_type=client_credentials",
    )
    .await
    .assert_error(401, "invalid_client");
    ts.token(ADMIN_ID, "a-brand-new-secret-0123", "").await;
}

#[tokio::test]
async fn the_embedded_log_holds_no_secret_and_no_private_key() {
    let dir = temp();
    let seeded = {
        let writer = World::writer(open_embedded(dir.path()).await).await;
        let seeded = seed_application(&writer).await;
        writer.close().await;
        drop(open_embedded(dir.path()).await);
        seeded
    };
    let mut ts = start_admin(&dir).await;
    let mut km = ts.key_manager().await;
    let keys = km
        .generate_keys(GenerateKeysRequest {
            application_id: seeded.application_id.clone(),
            key_type: KeyType::Production as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ts.token(&keys.consumer_key, &keys.consumer_secret, "")
        .await;
    let regenerated = km
        .regenerate_secret(RegenerateSecretRequest {
            application_id: seeded.application_id.clone(),
            key_type: KeyType::Production as i32,
        })
        .await
        .unwrap()
        .into_inner();
    ts.token(&regenerated.consumer_key, &regenerated.consumer_secret, "")
        .await;
    km.rotate_signing_key(RotateSigningKeyRequest {
        alg: "ES256".into(),
    })
    .await
    .unwrap();
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
    ts.stop();

    let raw = std::fs::read(dir.path().join("eventlog/events.log")).unwrap();
    // Sanity: this is the log, with the hashes and the public keys in it.
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("$argon2id$"));
    assert!(text.contains(&keys.consumer_key));
    assert!(text.contains(r#""kty":"RSA""#));
    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("the admin secret", ADMIN_SECRET.as_bytes().to_vec()),
        (
            "the consumer secret",
            keys.consumer_secret.as_bytes().to_vec(),
        ),
        (
            "the regenerated consumer secret",
            regenerated.consumer_secret.as_bytes().to_vec(),
        ),
    ];
    needles.extend(private_key_needles(dir.path()));
    assert!(needles.len() > 8, "both keys' material is checked");
    assert_absent(&raw, &needles, "the embedded event log");
}

/// Reflection on the KeyManager's port names exactly the services that answer there.
#[tokio::test]
async fn reflection_on_the_key_manager_port_lists_exactly_its_services() {
    let dir = temp();
    let ts = start_admin(&dir).await;
    let target = ts
        .options
        .pki()
        .target(format!("127.0.0.1:{}", ts.grpc.port()));
    let mut listed: Vec<String> = gatehouse_testkit::grpc::grpcurl_list(&target)
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "gatehouse.keymanager.v1.KeyManager",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
}

/// With `--admin-client-secret-file` (compose), the first start generates the admin
/// secret into the file, owner-only, and prints it nowhere; later starts use it.
#[tokio::test]
async fn the_admin_secret_is_generated_into_its_file_and_kept() {
    let dir = temp();
    let file = dir.path().join("secrets/admin-client-secret");
    let options = Options::embedded(&dir.path().join("ts")).with_admin_secret_file("admin", &file);
    let ts = TokenService::start(options);
    let secret = std::fs::read_to_string(&file)
        .expect("generated")
        .trim()
        .to_string();
    assert!(secret.len() >= 32, "a long random secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
    }
    assert!(
        !ts.stdout.contains(&secret),
        "the secret is printed nowhere"
    );
    let first = ts.token("admin", &secret, "").await;
    assert!(first.scope.contains("apim:admin"), "{}", first.scope);
    let ts = ts.restart();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        secret,
        "kept"
    );
    ts.token("admin", &secret, "").await;
    let wrong = ts
        .post_form(
            "/oauth2/token",
            Some(("admin", "not-the-secret")),
            "grant_type=client_credentials",
        )
        .await;
    wrong.assert_error(401, "invalid_client");
}
