//! Application keys through the KeyManager gRPC API, with token-service following a
//! NATS JetStream log that another writer (standing in for control) fills while it
//! runs: key generation, scope granting, the application claims, secret regeneration,
//! key revocation — and the stream holds no secret and no private key.

mod support;

use gatehouse_node::pki::NodeRole;
use gatehouse_proto::events::{OAuthClient, o_auth_client::KeyType};
use gatehouse_proto::keymanager::{
    ApplicationKeys, GenerateKeysRequest, ListKeysRequest, RegenerateSecretRequest,
    RevokeKeysRequest,
};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::poll::Poll;
use gatehouse_tokens::{API_AUDIENCE, AccessClaims};
use support::*;

const ADMIN_ID: &str = "nats-admin";
const ADMIN_SECRET: &str = "nats-admin-secret-0123456789";

struct Setup {
    // Dropped last: the service before its NATS server.
    ts: TokenService,
    writer: World,
    seeded: Seeded,
    _dir: tempfile::TempDir,
    nats: NatsServer,
}

/// NATS, token-service on it, then the application data appended by another writer
/// while token-service runs (so it must follow the log to see it).
async fn setup() -> Setup {
    let nats = NatsServer::start();
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-token-nats-")
        .tempdir()
        .unwrap();
    let ts = TokenService::start(
        Options::nats(dir.path(), &nats.url()).with_admin(ADMIN_ID, ADMIN_SECRET),
    );
    let writer = World::writer(open_log(&ts.options).await).await;
    let seeded = seed_application(&writer).await;
    Setup {
        ts,
        writer,
        seeded,
        _dir: dir,
        nats,
    }
}

async fn generate(s: &Setup, key_type: KeyType) -> ApplicationKeys {
    let mut request = tonic::Request::new(GenerateKeysRequest {
        application_id: s.seeded.application_id.clone(),
        key_type: key_type as i32,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    s.ts.key_manager()
        .await
        .generate_keys(request)
        .await
        .expect("GenerateKeys")
        .into_inner()
}

#[tokio::test]
async fn application_keys_flow_on_nats() {
    let s = setup().await;
    let ts = &s.ts;
    let keys = generate(&s, KeyType::Production).await;
    assert_eq!(keys.application_id, s.seeded.application_id);
    assert_eq!(keys.key_type, KeyType::Production as i32);
    assert_eq!(keys.grant_types, ["client_credentials"]);
    assert_eq!(keys.token_lifetime_seconds, 3600);
    assert!(keys.consumer_secret.len() >= 32);
    let (id, secret) = (keys.consumer_key.as_str(), keys.consumer_secret.as_str());

    // The seed's flow: client credentials by Basic, a JWT that verifies with the JWKS
    // and carries the application claims.
    let token = ts.token(id, secret, "").await;
    assert_eq!(token.scope, "default");
    let claims: AccessClaims = serde_json::from_value(verify_with_jwks(
        &token.access_token,
        &ts.jwks().await,
        API_AUDIENCE,
    ))
    .unwrap();
    assert_eq!(claims.aud, API_AUDIENCE);
    assert_eq!(claims.client_id, id);
    assert_eq!(claims.sub, "alice", "the application's owner");
    assert_eq!(claims.application_id, s.seeded.application_id);
    assert_eq!(claims.application_name, "MyPythonApp");
    assert_eq!(claims.key_type, "PRODUCTION");
    assert_eq!(claims.application_tier, "Unlimited");
    assert_eq!(claims.scope, "default");

    // Scope granting: a resource's scope reaches a token only once an admin granted it
    // to the application's subscription; ungranted and unknown ones are dropped.
    let before_grant = ts
        .token(id, secret, "&scope=read:users%20write:users")
        .await;
    assert_eq!(before_grant.scope, "default", "declared is not granted");
    s.writer
        .run(gatehouse_domain::Command::GrantSubscriptionScopes {
            subscription_id: s.seeded.subscription_id.clone(),
            scopes: vec!["read:users".into(), "write:users".into()],
        })
        .await;
    Poll::new("token-service to fold the grant")
        .until_async(|| async {
            ts.token(id, secret, "&scope=read:users").await.scope == "read:users"
        })
        .await;
    let scoped = ts
        .token(
            id,
            secret,
            "&scope=read:users%20apim:admin%20unknown:scope%20default",
        )
        .await;
    assert_eq!(scoped.scope, "read:users default");
    let only_unknown = ts.token(id, secret, "&scope=delete:everything").await;
    assert_eq!(only_unknown.scope, "default");
    let both = ts
        .token(id, secret, "&scope=write:users%20read:users")
        .await;
    assert_eq!(both.scope, "write:users read:users");

    // Twice for the same key type: ALREADY_EXISTS; the other key type works.
    let mut km = ts.key_manager().await;
    let again = km
        .generate_keys(GenerateKeysRequest {
            application_id: s.seeded.application_id.clone(),
            key_type: KeyType::Production as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let sandbox = generate(&s, KeyType::Sandbox).await;
    let sandbox_token = ts
        .token(&sandbox.consumer_key, &sandbox.consumer_secret, "")
        .await;
    let sandbox_claims: AccessClaims = serde_json::from_value(verify_with_jwks(
        &sandbox_token.access_token,
        &ts.jwks().await,
        API_AUDIENCE,
    ))
    .unwrap();
    assert_eq!(sandbox_claims.key_type, "SANDBOX");

    // ListKeys: both, without hashes.
    let listed = km
        .list_keys(ListKeysRequest {
            application_id: s.seeded.application_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.secret_hash.is_empty()));
    assert!(listed.iter().any(|k| k.client_id == id));

    // Regenerate: the old secret fails, the new one works, same consumer key.
    let regenerated = km
        .regenerate_secret(RegenerateSecretRequest {
            application_id: s.seeded.application_id.clone(),
            key_type: KeyType::Production as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(regenerated.consumer_key, id);
    assert_ne!(regenerated.consumer_secret, secret);
    ts.post_form(
        "/oauth2/token",
        Some((id, secret)),
        "grant_type=client_credentials",
    )
    .await
    .assert_error(401, "invalid_client");
    let after = ts.token(id, &regenerated.consumer_secret, "").await;
    // Tokens issued before the regeneration stay valid.
    assert_eq!(
        ts.introspect((ADMIN_ID, ADMIN_SECRET), &token.access_token)
            .await["active"],
        true
    );

    // Revoke: every earlier token is inactive, and no new token is issued.
    km.revoke_keys(RevokeKeysRequest {
        application_id: s.seeded.application_id.clone(),
        key_type: KeyType::Production as i32,
    })
    .await
    .unwrap();
    for t in [
        &token.access_token,
        &scoped.access_token,
        &after.access_token,
    ] {
        assert_eq!(
            ts.introspect((ADMIN_ID, ADMIN_SECRET), t).await,
            serde_json::json!({"active": false})
        );
    }
    ts.post_form(
        "/oauth2/token",
        Some((id, &regenerated.consumer_secret)),
        "grant_type=client_credentials",
    )
    .await
    .assert_error(401, "invalid_client");
    // The sandbox keys are untouched.
    assert_eq!(
        ts.introspect((ADMIN_ID, ADMIN_SECRET), &sandbox_token.access_token)
            .await["active"],
        true
    );
    // Revoked keys are gone from the live ones: regenerate or revoke again is NOT_FOUND,
    // and new production keys can be generated.
    let gone = km
        .revoke_keys(RevokeKeysRequest {
            application_id: s.seeded.application_id.clone(),
            key_type: KeyType::Production as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let fresh = generate(&s, KeyType::Production).await;
    assert_ne!(fresh.consumer_key, id);

    // Every event records who caused it and the trace.
    let log = open_log(&ts.options).await;
    let registered = events(&log)
        .await
        .into_iter()
        .find(|(_, e)| e.aggregate_id == id)
        .expect("the ClientRegistered event");
    assert_eq!(
        registered.1.actor, ADMIN_ID,
        "the verified caller: the request carries no actor"
    );
    assert!(registered.1.traceparent.starts_with("00-4bf92f35"));
    drop(s.writer);
}

#[tokio::test]
async fn key_manager_answers_control_only_on_an_admins_behalf() {
    let s = setup().await;
    let (id, secret) = s.ts.admin();
    let admin_token = s.ts.token(&id, &secret, "").await.access_token;
    let request = || GenerateKeysRequest {
        application_id: s.seeded.application_id.clone(),
        key_type: KeyType::Production as i32,
        ..Default::default()
    };
    let refused = |r: Result<tonic::Response<ApplicationKeys>, tonic::Status>| {
        let status = r.expect_err("refused");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            "{status:?}"
        );
        status.code()
    };
    // No client certificate, even with an admin's token.
    let mut anonymous = s.ts.key_manager_as(None, &admin_token).await;
    assert_eq!(
        refused(anonymous.generate_keys(request()).await),
        tonic::Code::Unauthenticated
    );
    // A gateway's identity, even with an admin's token.
    let mut gateway =
        s.ts.key_manager_as(Some(NodeRole::Gateway), &admin_token)
            .await;
    assert_eq!(
        refused(gateway.generate_keys(request()).await),
        tonic::Code::PermissionDenied
    );
    // control's identity without a token, or with an application's token.
    let mut bare = s.ts.key_manager_as(Some(NodeRole::Control), "").await;
    assert_eq!(
        refused(bare.generate_keys(request()).await),
        tonic::Code::Unauthenticated
    );
    let app = s.writer.token("some-app", false, "");
    let mut with_app_token = s.ts.key_manager_as(Some(NodeRole::Control), &app).await;
    refused(with_app_token.generate_keys(request()).await);
    // A certificate of another CA does not even get a TLS session.
    let stranger = TestPki::new()
        .node_tls(NodeRole::Control, "control")
        .channel(&format!("https://127.0.0.1:{}", s.ts.grpc.port()))
        .unwrap();
    let mut stranger =
        gatehouse_proto::keymanager::key_manager_client::KeyManagerClient::new(stranger);
    assert!(stranger.generate_keys(request()).await.is_err());
    // From control, on the admin's behalf: it works.
    let keys = generate(&s, KeyType::Production).await;
    assert!(!keys.consumer_secret.is_empty());
    drop(s.writer);
}

#[tokio::test]
async fn key_manager_refuses_bad_requests() {
    let s = setup().await;
    let mut km = s.ts.key_manager().await;
    let code = |r: Result<tonic::Response<ApplicationKeys>, tonic::Status>| r.unwrap_err().code();
    let request = |app: &str, key_type: KeyType| GenerateKeysRequest {
        application_id: app.into(),
        key_type: key_type as i32,
        ..Default::default()
    };
    assert_eq!(
        code(
            km.generate_keys(request("no-such-app", KeyType::Production))
                .await
        ),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(km.generate_keys(request("", KeyType::Production)).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            km.generate_keys(request(&s.seeded.application_id, KeyType::Unspecified))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    let mut password = request(&s.seeded.application_id, KeyType::Production);
    password.grant_types = vec!["password".into()];
    assert_eq!(
        code(km.generate_keys(password).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            km.regenerate_secret(RegenerateSecretRequest {
                application_id: s.seeded.application_id.clone(),
                key_type: KeyType::Production as i32,
            })
            .await
        ),
        tonic::Code::NotFound
    );
    let listed = km
        .list_keys(ListKeysRequest {
            application_id: "no-such-app".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), tonic::Code::NotFound);
    // A custom lifetime is kept and used.
    let mut short = request(&s.seeded.application_id, KeyType::Sandbox);
    short.token_lifetime_seconds = 120;
    let keys = km.generate_keys(short).await.unwrap().into_inner();
    assert_eq!(keys.token_lifetime_seconds, 120);
    let token =
        s.ts.token(&keys.consumer_key, &keys.consumer_secret, "")
            .await;
    assert_eq!(token.json["expires_in"], 120);
}

#[tokio::test]
async fn the_nats_stream_holds_no_secret_and_no_private_key() {
    let s = setup().await;
    let keys = generate(&s, KeyType::Production).await;
    let token =
        s.ts.token(&keys.consumer_key, &keys.consumer_secret, "")
            .await;
    s.ts.post_form(
        "/oauth2/revoke",
        Some((&keys.consumer_key, &keys.consumer_secret)),
        &format!("token={}", token.access_token),
    )
    .await;
    let log = open_log(&s.ts.options).await;
    let records = log.read_to_end(1).await.unwrap();
    assert!(records.len() > 5);
    let mut raw = Vec::new();
    for record in &records {
        raw.extend_from_slice(record.subject.as_bytes());
        raw.extend_from_slice(record.msg_id.as_bytes());
        for (name, value) in &record.headers {
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        raw.extend_from_slice(&record.payload);
    }
    // Sanity: the client and its hash are there.
    let client: Vec<OAuthClient> = events(&log)
        .await
        .into_iter()
        .filter_map(|(_, e)| match e.event {
            Some(gatehouse_proto::events::event_envelope::Event::ClientRegistered(c)) => c.client,
            _ => None,
        })
        .collect();
    assert!(
        client
            .iter()
            .any(|c| c.client_id == keys.consumer_key && c.secret_hash.starts_with("$argon2id$"))
    );
    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("the admin secret", ADMIN_SECRET.as_bytes().to_vec()),
        (
            "the consumer secret",
            keys.consumer_secret.as_bytes().to_vec(),
        ),
    ];
    needles.extend(private_key_needles(&s.ts.options.data_dir));
    assert_absent(&raw, &needles, "the NATS stream");

    // And the stream as JetStream keeps it on disk: every file of the server's store,
    // read raw (file storage, no compression), once the messages have reached it.
    let store = s.nats.store_dir();
    let on_disk = Poll::new("the messages in the store files")
        .every(std::time::Duration::from_millis(100))
        .until_async(|| async {
            Some(read_tree(&store)).filter(|on_disk| {
                on_disk
                    .windows(keys.consumer_key.len())
                    .any(|w| w == keys.consumer_key.as_bytes())
            })
        })
        .await;
    assert_absent(&on_disk, &needles, "the JetStream store files");
}

/// The bytes of every file under `dir`.
fn read_tree(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return bytes;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(read_tree(&path));
        } else if let Ok(content) = std::fs::read(&path) {
            bytes.extend(content);
        }
    }
    bytes
}
