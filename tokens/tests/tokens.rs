//! Signing and verification through the public API, and each way a token is refused,
//! produced by a token crafted for it.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_domain::{Command, State};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::SigningKey;
use gatehouse_testkit::domain::run_at;
use gatehouse_testkit::now;
use gatehouse_tokens::{
    ADMIN_AUDIENCE, ADMIN_SCOPES, API_AUDIENCE, AccessClaims, DEFAULT_ISSUER, PublishedKeys,
    SigningKeyPair, TokenError, VerificationKeys, VerifiedTokens, Verifier, check_revocation,
    is_published,
};

/// RSA generation takes a moment even optimised: one key per algorithm for all tests.
fn rsa_key() -> &'static SigningKeyPair {
    static KEY: OnceLock<SigningKeyPair> = OnceLock::new();
    KEY.get_or_init(|| SigningKeyPair::generate("RS256").expect("RS256 key"))
}

fn ec_key() -> &'static SigningKeyPair {
    static KEY: OnceLock<SigningKeyPair> = OnceLock::new();
    KEY.get_or_init(|| SigningKeyPair::generate("ES256").expect("ES256 key"))
}

fn claims() -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: DEFAULT_ISSUER.into(),
        sub: "alice".into(),
        aud: API_AUDIENCE.into(),
        exp: now + 3600,
        nbf: now,
        iat: now,
        jti: "5f0c8f4e-3b0e-4d59-9a52-0b6f1b0d1a11".into(),
        scope: "default read:users".into(),
        client_id: "client-1".into(),
        application_id: "app-1".into(),
        application_name: "MyPythonApp".into(),
        key_type: "PRODUCTION".into(),
        application_tier: "Unlimited".into(),
    }
}

fn keys() -> VerificationKeys {
    let records = [
        rsa_key().to_signing_key_record(),
        ec_key().to_signing_key_record(),
    ];
    VerificationKeys::new(&records)
}

fn verifier() -> Verifier {
    Verifier::new(DEFAULT_ISSUER, API_AUDIENCE)
}

fn b64json(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `token` with its header replaced by `header` (signature kept).
fn with_header(token: &str, header: serde_json::Value) -> String {
    let mut parts = token.splitn(2, '.');
    parts.next();
    format!("{}.{}", b64json(&header), parts.next().unwrap())
}

#[test]
fn rs256_round_trip() {
    let claims = claims();
    let token = rsa_key().sign(&claims).unwrap();
    assert_eq!(verifier().verify(&token, &keys()), Ok(claims));
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rsa_key().kid()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
}

#[test]
fn es256_round_trip() {
    let claims = claims();
    let token = ec_key().sign(&claims).unwrap();
    assert_eq!(verifier().verify(&token, &keys()), Ok(claims));
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(ec_key().kid()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
}

#[test]
fn pem_round_trip_keeps_the_key() {
    for key in [rsa_key(), ec_key()] {
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let loaded = SigningKeyPair::from_pem(key.kid(), key.alg(), &pem).unwrap();
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.public_jwk(), key.public_jwk());
        // A token of the reloaded key verifies with the original's published record.
        let claims = claims();
        let token = loaded.sign(&claims).unwrap();
        assert_eq!(verifier().verify(&token, &keys()), Ok(claims));
    }
}

#[test]
fn from_pem_refuses_a_key_of_the_other_algorithm() {
    let rsa_pem = rsa_key().to_pem().unwrap();
    assert!(SigningKeyPair::from_pem("k", "ES256", &rsa_pem).is_err());
    let ec_pem = ec_key().to_pem().unwrap();
    assert!(SigningKeyPair::from_pem("k", "RS256", &ec_pem).is_err());
    assert!(SigningKeyPair::from_pem("k", "HS256", &ec_pem).is_err());
    assert!(SigningKeyPair::generate("none").is_err());
}

#[test]
fn public_jwk_has_the_rfc7517_members_and_no_private_ones() {
    let rsa: serde_json::Value = serde_json::from_str(&rsa_key().public_jwk()).unwrap();
    assert_eq!(rsa["kty"], "RSA");
    assert_eq!(rsa["alg"], "RS256");
    assert_eq!(rsa["use"], "sig");
    assert_eq!(rsa["kid"], rsa_key().kid());
    assert_eq!(rsa["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(rsa["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(rsa.get(private).is_none(), "{private} in {rsa}");
    }
    let ec: serde_json::Value = serde_json::from_str(&ec_key().public_jwk()).unwrap();
    assert_eq!(ec["kty"], "EC");
    assert_eq!(ec["crv"], "P-256");
    assert_eq!(ec["alg"], "ES256");
    assert_eq!(ec["use"], "sig");
    assert!(ec.get("d").is_none());
    for c in ["x", "y"] {
        let bytes = URL_SAFE_NO_PAD.decode(ec[c].as_str().unwrap()).unwrap();
        assert_eq!(bytes.len(), 32);
    }
    // The kid is the RFC 7638 thumbprint, a valid log subject token.
    for key in [rsa_key(), ec_key()] {
        assert_eq!(key.kid().len(), 43);
        assert!(
            key.kid()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
    // jsonwebtoken agrees on the thumbprint.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&rsa_key().public_jwk()).unwrap();
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        rsa_key().kid()
    );
}

#[test]
fn the_record_carries_public_material_only() {
    let record = rsa_key().to_signing_key_record();
    assert_eq!(record.kid, rsa_key().kid());
    assert_eq!(record.alg, "RS256");
    assert!(record.active);
    assert_eq!(record.public_jwk, rsa_key().public_jwk());
    assert!(!format!("{record:?}").contains("PRIVATE"));
    assert!(!format!("{:?}", rsa_key()).contains("PRIVATE"));
}

#[test]
fn expired_token() {
    let mut c = claims();
    c.iat -= 7200;
    c.nbf -= 7200;
    c.exp = now() - 3600;
    let token = rsa_key().sign(&c).unwrap();
    assert_eq!(verifier().verify(&token, &keys()), Err(TokenError::Expired));
}

#[test]
fn leeway_applies_to_exp_and_nbf() {
    let mut c = claims();
    c.exp = now() - 10;
    let token = ec_key().sign(&c).unwrap();
    assert!(verifier().verify(&token, &keys()).is_ok());
    assert_eq!(
        verifier().with_leeway(0).verify(&token, &keys()),
        Err(TokenError::Expired)
    );
    let mut c = claims();
    c.nbf = now() + 10;
    let token = ec_key().sign(&c).unwrap();
    assert!(verifier().verify(&token, &keys()).is_ok());
    assert_eq!(
        verifier().with_leeway(0).verify(&token, &keys()),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn nbf_in_the_future() {
    let mut c = claims();
    c.nbf = now() + 600;
    let token = rsa_key().sign(&c).unwrap();
    assert_eq!(
        verifier().verify(&token, &keys()),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn wrong_issuer() {
    let mut c = claims();
    c.iss = "https://evil.example.com/oauth2/token".into();
    let token = rsa_key().sign(&c).unwrap();
    assert_eq!(
        verifier().verify(&token, &keys()),
        Err(TokenError::WrongIssuer)
    );
}

#[test]
fn wrong_audience() {
    // An application token presented to the admin API.
    let token = rsa_key().sign(&claims()).unwrap();
    let admin = Verifier::new(DEFAULT_ISSUER, ADMIN_AUDIENCE);
    assert_eq!(
        admin.verify(&token, &keys()),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn unknown_kid() {
    let other = SigningKeyPair::generate("ES256").unwrap();
    let token = other.sign(&claims()).unwrap();
    assert_eq!(
        verifier().verify(&token, &keys()),
        Err(TokenError::UnknownKid(other.kid().to_string()))
    );
    // The same key, once known, verifies.
    let records = [other.to_signing_key_record()];
    assert!(
        verifier()
            .verify(&token, &VerificationKeys::new(&records))
            .is_ok()
    );
}

#[test]
fn missing_kid() {
    let token = rsa_key().sign(&claims()).unwrap();
    let token = with_header(&token, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
    assert_eq!(
        verifier().verify(&token, &keys()),
        Err(TokenError::MissingKid)
    );
}

#[test]
fn alg_none_is_refused() {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims()).unwrap());
    let header = b64json(&serde_json::json!({"alg": "none", "kid": rsa_key().kid()}));
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.AAAA"),
    ] {
        assert_eq!(
            verifier().verify(&token, &keys()),
            Err(TokenError::AlgorithmNotAllowed("none".into()))
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_as_secret_is_refused() {
    for key in [rsa_key(), ec_key()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(key.kid().to_string());
        for secret in [key.public_jwk().into_bytes(), {
            let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk()).unwrap();
            URL_SAFE_NO_PAD
                .decode(jwk.get("n").or(jwk.get("x")).unwrap().as_str().unwrap())
                .unwrap()
        }] {
            let forged = jsonwebtoken::encode(
                &header,
                &claims(),
                &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
            )
            .unwrap();
            assert_eq!(
                verifier().verify(&forged, &keys()),
                Err(TokenError::AlgorithmNotAllowed("HS256".into()))
            );
        }
    }
}

#[test]
fn rs256_token_presented_with_an_es256_kid_is_refused() {
    let token = rsa_key().sign(&claims()).unwrap();
    let confused = with_header(
        &token,
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": ec_key().kid()}),
    );
    assert_eq!(
        verifier().verify(&confused, &keys()),
        Err(TokenError::AlgorithmNotAllowed("RS256".into()))
    );
    let token = ec_key().sign(&claims()).unwrap();
    let confused = with_header(
        &token,
        serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": rsa_key().kid()}),
    );
    assert_eq!(
        verifier().verify(&confused, &keys()),
        Err(TokenError::AlgorithmNotAllowed("ES256".into()))
    );
}

#[test]
fn tampered_payload() {
    for key in [rsa_key(), ec_key()] {
        let token = key.sign(&claims()).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut more = claims();
        more.scope = "default read:users apim:admin".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&more).unwrap());
        parts[1] = &payload;
        let tampered = parts.join(".");
        assert_eq!(
            verifier().verify(&tampered, &keys()),
            Err(TokenError::BadSignature)
        );
        // A signature from elsewhere does not help either.
        let other = key.sign(&more).unwrap();
        let spliced = format!(
            "{}.{}",
            token.rsplit_once('.').unwrap().0,
            other.rsplit_once('.').unwrap().1
        );
        assert_eq!(
            verifier().verify(&spliced, &keys()),
            Err(TokenError::BadSignature)
        );
    }
}

#[test]
fn garbage_is_malformed() {
    for garbage in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.e30.sig",
        &format!(
            "{}.e30.sig",
            b64json(&serde_json::json!(["not", "an", "object"]))
        ),
    ] {
        let result = verifier().verify(garbage, &keys());
        assert!(
            matches!(result, Err(TokenError::Malformed | TokenError::MissingKid)),
            "{garbage:?}: {result:?}"
        );
    }
    // A signed token missing required claims.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(ec_key().kid().into());
    let pem = ec_key().to_pem().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&pem_der(&pem));
    let partial = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": DEFAULT_ISSUER, "aud": API_AUDIENCE, "exp": now() + 60}),
        &encoding,
    )
    .unwrap();
    assert_eq!(
        verifier().verify(&partial, &keys()),
        Err(TokenError::Malformed)
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn unusable_records_are_skipped() {
    let good = ec_key().to_signing_key_record();
    let bad_json = SigningKey {
        kid: "bad-json".into(),
        alg: "RS256".into(),
        public_jwk: "{not json".into(),
        active: true,
        ..Default::default()
    };
    let wrong_alg = SigningKey {
        kid: "wrong-alg".into(),
        alg: "RS256".into(),
        public_jwk: ec_key().public_jwk(),
        ..Default::default()
    };
    let hmac = SigningKey {
        kid: "hmac".into(),
        alg: "HS256".into(),
        public_jwk: r#"{"kty":"oct","k":"c2VjcmV0"}"#.into(),
        ..Default::default()
    };
    let keys = VerificationKeys::new([&good, &bad_json, &wrong_alg, &hmac]);
    assert_eq!(keys.len(), 1);
    assert!(keys.contains(ec_key().kid()));
    assert!(!keys.contains("bad-json"));
}

#[test]
fn published_keys_are_active_or_not_yet_retired() {
    let now = SystemTime::now();
    let at = |t: SystemTime| Some(Timestamp::from(t));
    let mut key = rsa_key().to_signing_key_record();
    assert!(is_published(&key, now));
    key.active = false;
    assert!(!is_published(&key, now));
    key.retire_after = at(now + Duration::from_secs(60));
    assert!(is_published(&key, now));
    key.retire_after = at(now - Duration::from_secs(60));
    assert!(!is_published(&key, now));
}

fn state_with_client() -> State {
    let mut state = State::new();
    run_at(
        &mut state,
        Command::RegisterClient {
            client: gatehouse_proto::events::OAuthClient {
                client_id: "client-1".into(),
                secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                admin_scopes: ADMIN_SCOPES.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        },
        SystemTime::now(),
    );
    state
}

#[test]
fn a_live_token_passes_revocation_checks() {
    let state = state_with_client();
    assert_eq!(check_revocation(&claims(), &state), Ok(()));
    // A client the state does not know does not refuse the token.
    let mut c = claims();
    c.client_id = "unknown".into();
    assert_eq!(check_revocation(&c, &state), Ok(()));
}

#[test]
fn a_revoked_jti_is_refused() {
    let mut state = state_with_client();
    let c = claims();
    run_at(
        &mut state,
        Command::RevokeToken {
            jti: c.jti.clone(),
            expires_at: Some(Timestamp {
                seconds: c.exp,
                nanos: 0,
            }),
            client_id: c.client_id.clone(),
        },
        SystemTime::now(),
    );
    assert_eq!(check_revocation(&c, &state), Err(TokenError::Revoked));
    let mut other = claims();
    other.jti = "another-token".into();
    assert_eq!(check_revocation(&other, &state), Ok(()));
}

#[test]
fn tokens_of_a_revoked_client_are_refused() {
    let mut state = state_with_client();
    let c = claims();
    run_at(
        &mut state,
        Command::RevokeClient {
            client_id: c.client_id.clone(),
        },
        SystemTime::now(),
    );
    assert_eq!(check_revocation(&c, &state), Err(TokenError::ClientRevoked));
    // Issued long before the revocation: refused too.
    let mut old = claims();
    old.iat -= 3000;
    assert_eq!(
        check_revocation(&old, &state),
        Err(TokenError::ClientRevoked)
    );
}

#[test]
fn admin_scopes_are_wso2_names() {
    assert_eq!(ADMIN_SCOPES.len(), 9);
    assert!(ADMIN_SCOPES.iter().all(|s| s.starts_with("apim:")));
    assert!(ADMIN_SCOPES.contains(&"apim:admin"));
}

#[test]
fn errors_read_well() {
    assert_eq!(TokenError::Expired.to_string(), "the token has expired");
    assert!(
        TokenError::UnknownKid("k1".into())
            .to_string()
            .contains("\"k1\"")
    );
}

fn state_publishing(keys: &[&SigningKeyPair]) -> State {
    let mut state = State::new();
    for key in keys {
        run_at(
            &mut state,
            Command::PublishSigningKey {
                key: key.to_signing_key_record(),
                retire_previous_after: Some(Timestamp {
                    seconds: now() + 3600,
                    nanos: 0,
                }),
            },
            SystemTime::now(),
        );
    }
    state
}

#[test]
fn published_keys_are_built_again_only_when_the_set_changes() {
    let published = PublishedKeys::default();
    let state = state_publishing(&[ec_key()]);
    let first = published.of(&state, SystemTime::now());
    assert!(first.contains(ec_key().kid()));
    assert!(std::sync::Arc::ptr_eq(
        &first,
        &published.of(&state, SystemTime::now())
    ));
    let state = state_publishing(&[ec_key(), rsa_key()]);
    let both = published.of(&state, SystemTime::now());
    assert!(!std::sync::Arc::ptr_eq(&first, &both));
    assert_eq!(both.len(), 2);
    // Once the first key's retirement has passed, it verifies nothing.
    let later = SystemTime::now() + Duration::from_secs(7200);
    let after_retirement = published.of(&state, later);
    assert!(!after_retirement.contains(ec_key().kid()));
    assert!(after_retirement.contains(rsa_key().kid()));
}

/// A verified token is remembered under the keys it was verified with; refused tokens
/// are not; another key set verifies it again.
#[test]
fn verified_tokens_are_remembered_per_key_set_until_they_expire() {
    let verified = VerifiedTokens::default();
    let keys = std::sync::Arc::new(keys());
    let claims = claims();
    let token = ec_key().sign(&claims).unwrap();
    let now = now();
    assert_eq!(
        *verified.verify(&verifier(), &token, &keys, now).unwrap(),
        claims
    );
    assert_eq!(verified.len(), 1);
    assert_eq!(
        *verified.verify(&verifier(), &token, &keys, now).unwrap(),
        claims
    );

    let forged = with_header(&token, serde_json::json!({"alg": "ES256", "kid": "nobody"}));
    assert!(verified.verify(&verifier(), &forged, &keys, now).is_err());
    assert_eq!(verified.len(), 1, "a refused token is not remembered");

    // The key was retired: the token is verified again, and refused.
    let without = std::sync::Arc::new(VerificationKeys::new(&[rsa_key().to_signing_key_record()]));
    assert!(matches!(
        verified.verify(&verifier(), &token, &without, now),
        Err(TokenError::UnknownKid(_))
    ));
    // An expired token is refused, not remembered.
    let mut short = claims.clone();
    short.exp = now - 120;
    short.jti = "short".into();
    let expired = ec_key().sign(&short).unwrap();
    assert_eq!(
        verified.verify(&verifier(), &expired, &keys, now),
        Err(TokenError::Expired)
    );
}

#[test]
fn verified_tokens_stay_bounded() {
    let verified = VerifiedTokens::default();
    let keys = std::sync::Arc::new(keys());
    let now = now();
    for i in 0..=VerifiedTokens::MAX_TOKENS {
        let mut c = claims();
        c.jti = format!("jti-{i}");
        let token = ec_key().sign(&c).unwrap();
        verified.verify(&verifier(), &token, &keys, now).unwrap();
        assert!(verified.len() <= VerifiedTokens::MAX_TOKENS);
    }
}
