//! The key manager's aggregates (clients, signing keys, revoked tokens), exercised
//! through `handle` and `State::apply` only: no I/O.

use std::time::{Duration, SystemTime};

use gatehouse_domain::{Command, DomainError, State, handle};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{OAuthClient, SigningKey, o_auth_client::KeyType};
use gatehouse_testkit::domain::try_run as run;

fn admin(id: &str) -> Command {
    Command::RegisterClient {
        client: OAuthClient {
            client_id: id.into(),
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            admin_scopes: vec!["apim:admin".into()],
            ..Default::default()
        },
    }
}

fn app_keys(id: &str, app: &str, key_type: KeyType) -> Command {
    Command::RegisterClient {
        client: OAuthClient {
            client_id: id.into(),
            application_id: app.into(),
            key_type: key_type as i32,
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            ..Default::default()
        },
    }
}

fn with_app(id: &str) -> State {
    let mut state = State::new();
    run(
        &mut state,
        Command::CreateApplication {
            application_id: id.into(),
            name: "MyPythonApp".into(),
            owner: "alice".into(),
            throttling_tier: String::new(),
            description: String::new(),
        },
    )
    .unwrap();
    state
}

fn key(kid: &str) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        alg: "RS256".into(),
        public_jwk: r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#.into(),
        ..Default::default()
    }
}

#[test]
fn a_registered_client_gets_the_defaults() {
    let mut state = State::new();
    run(&mut state, admin("admin-1")).unwrap();
    let client = state.client("admin-1").unwrap();
    assert_eq!(client.grant_types, ["client_credentials"]);
    assert_eq!(client.token_lifetime_seconds, 3600);
    assert!(!client.revoked);
    assert!(client.created_at.is_some());
    assert_eq!(client.aggregate_version, 1);
}

#[test]
fn client_registration_rules() {
    let mut state = with_app("app-1");
    let invalid = |r: Result<usize, DomainError>| {
        assert!(
            matches!(r, Err(DomainError::InvalidArgument { .. })),
            "{r:?}"
        )
    };
    // An admin client needs scopes; an application client has none.
    let mut no_scopes = admin("a");
    if let Command::RegisterClient { client } = &mut no_scopes {
        client.admin_scopes.clear();
    }
    invalid(run(&mut state, no_scopes));
    let mut app_with_scopes = app_keys("k", "app-1", KeyType::Production);
    if let Command::RegisterClient { client } = &mut app_with_scopes {
        client.admin_scopes = vec!["apim:admin".into()];
    }
    invalid(run(&mut state, app_with_scopes));
    // No hash, a bad id, another grant type, a missing key type.
    let mut no_hash = admin("a");
    if let Command::RegisterClient { client } = &mut no_hash {
        client.secret_hash.clear();
    }
    invalid(run(&mut state, no_hash));
    invalid(run(&mut state, admin("has.dot")));
    let mut password = admin("a");
    if let Command::RegisterClient { client } = &mut password {
        client.grant_types = vec!["password".into()];
    }
    invalid(run(&mut state, password));
    invalid(run(
        &mut state,
        app_keys("k", "app-1", KeyType::Unspecified),
    ));
    // An unknown application.
    assert!(matches!(
        run(&mut state, app_keys("k", "nope", KeyType::Production)),
        Err(DomainError::NotFound { .. })
    ));
    // One live client per application and key type; ids are unique.
    run(&mut state, app_keys("k1", "app-1", KeyType::Production)).unwrap();
    assert!(matches!(
        run(&mut state, app_keys("k2", "app-1", KeyType::Production)),
        Err(DomainError::AlreadyExists(_))
    ));
    run(&mut state, app_keys("k2", "app-1", KeyType::Sandbox)).unwrap();
    assert!(matches!(
        run(&mut state, admin("k1")),
        Err(DomainError::AlreadyExists(_))
    ));
    assert_eq!(
        state
            .client_of("app-1", KeyType::Production)
            .unwrap()
            .client_id,
        "k1"
    );
}

#[test]
fn secrets_regenerate_until_the_client_is_revoked() {
    let mut state = with_app("app-1");
    run(&mut state, app_keys("k1", "app-1", KeyType::Production)).unwrap();
    run(
        &mut state,
        Command::RegenerateSecret {
            client_id: "k1".into(),
            secret_hash: "$argon2id$new".into(),
        },
    )
    .unwrap();
    assert_eq!(state.client("k1").unwrap().secret_hash, "$argon2id$new");
    assert_eq!(state.client("k1").unwrap().aggregate_version, 2);

    assert_eq!(
        run(
            &mut state,
            Command::RevokeClient {
                client_id: "k1".into()
            }
        ),
        Ok(1)
    );
    let client = state.client("k1").unwrap();
    assert!(client.revoked);
    assert!(client.revoked_at.is_some());
    assert!(state.client_of("app-1", KeyType::Production).is_none());
    // Revoking again changes nothing; regenerating a revoked client is refused.
    assert_eq!(
        run(
            &mut state,
            Command::RevokeClient {
                client_id: "k1".into()
            }
        ),
        Ok(0)
    );
    assert!(matches!(
        run(
            &mut state,
            Command::RegenerateSecret {
                client_id: "k1".into(),
                secret_hash: "$argon2id$x".into()
            }
        ),
        Err(DomainError::FailedPrecondition(_))
    ));
    // New keys for the same key type are allowed once the old ones are revoked.
    run(&mut state, app_keys("k3", "app-1", KeyType::Production)).unwrap();
}

#[test]
fn deleting_an_application_revokes_its_keys() {
    let mut state = with_app("app-1");
    run(&mut state, app_keys("k1", "app-1", KeyType::Production)).unwrap();
    run(
        &mut state,
        Command::DeleteApplication {
            application_id: "app-1".into(),
        },
    )
    .unwrap();
    assert!(state.client("k1").unwrap().revoked);
}

#[test]
fn publishing_a_key_deactivates_the_previous_one() {
    let mut state = State::new();
    run(
        &mut state,
        Command::PublishSigningKey {
            key: key("kid-1"),
            retire_previous_after: None,
        },
    )
    .unwrap();
    assert_eq!(state.active_signing_key().unwrap().kid, "kid-1");
    let retire = Timestamp::from(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(
        run(
            &mut state,
            Command::PublishSigningKey {
                key: key("kid-2"),
                retire_previous_after: Some(retire),
            },
        ),
        Ok(2)
    );
    assert_eq!(state.active_signing_key().unwrap().kid, "kid-2");
    let old = state.signing_key("kid-1").unwrap();
    assert!(!old.active);
    assert_eq!(old.retire_after, Some(retire));
    assert_eq!(state.signing_keys().filter(|k| k.active).count(), 1);
    // Same kid again, another algorithm, no JWK: refused.
    assert!(matches!(
        run(
            &mut state,
            Command::PublishSigningKey {
                key: key("kid-2"),
                retire_previous_after: None
            }
        ),
        Err(DomainError::AlreadyExists(_))
    ));
    let mut hs = key("kid-3");
    hs.alg = "HS256".into();
    assert!(
        run(
            &mut state,
            Command::PublishSigningKey {
                key: hs,
                retire_previous_after: None
            }
        )
        .is_err()
    );
    let mut empty = key("kid-4");
    empty.public_jwk.clear();
    assert!(
        run(
            &mut state,
            Command::PublishSigningKey {
                key: empty,
                retire_previous_after: None
            }
        )
        .is_err()
    );
}

/// A key's events carry its version like every other aggregate's: published at 1,
/// deactivated (once) at 2.
#[test]
fn a_deactivation_is_the_second_version_of_its_key() {
    let mut state = State::new();
    let publish = |kid: &str| Command::PublishSigningKey {
        key: key(kid),
        retire_previous_after: None,
    };
    run(&mut state, publish("kid-1")).unwrap();
    let events = handle(&state, publish("kid-2")).unwrap();
    let versions: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.aggregate_version))
        .collect();
    assert_eq!(versions, [("kid-2", 1), ("kid-1", 2)]);
}

#[test]
fn token_revocation_is_recorded_once() {
    let mut state = State::new();
    let revoke = || Command::RevokeToken {
        jti: "5f0c8f4e-3b0e-4d59-9a52-0b6f1b0d1a11".into(),
        expires_at: Some(Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        }),
        client_id: "k1".into(),
    };
    assert_eq!(run(&mut state, revoke()), Ok(1));
    assert_eq!(run(&mut state, revoke()), Ok(0));
    let revoked = state
        .revoked_token("5f0c8f4e-3b0e-4d59-9a52-0b6f1b0d1a11")
        .unwrap();
    assert_eq!(revoked.client_id, "k1");
    assert_eq!(revoked.expires_at.unwrap().seconds, 2_000_000_000);
    // Survives a snapshot round trip, like every other aggregate.
    let restored = State::from_snapshot(state.to_snapshot());
    assert_eq!(restored, state);
}

#[test]
fn the_config_hash_ignores_secret_hashes() {
    use gatehouse_domain::{Command, EventMeta, State, handle};
    use gatehouse_proto::events::OAuthClient;
    let mut state = State::new();
    let events = handle(
        &state,
        Command::RegisterClient {
            client: OAuthClient {
                client_id: "admin".into(),
                secret_hash: "$argon2id$v=19$...".into(),
                admin_scopes: vec!["apim:admin".into()],
                ..Default::default()
            },
        },
    )
    .unwrap();
    for event in events {
        let next = state.sequence() + 1;
        state
            .apply(next, &event.envelope(EventMeta::default()))
            .unwrap();
    }
    let mut public = state.to_snapshot();
    public.clients[0].secret_hash.clear();
    assert_eq!(
        State::from_snapshot(public).config_hash(),
        state.config_hash()
    );
}

/// A revocation is kept until the token has been expired for
/// `REVOCATION_RETENTION_SECONDS`, then leaves the state (the log keeps it): a
/// mint-and-revoke loop cannot grow the folded state without bound.
#[test]
fn revocations_leave_the_state_once_their_token_has_expired() {
    use gatehouse_domain::REVOCATION_RETENTION_SECONDS;
    use gatehouse_testkit::domain::time_of;

    let mut state = State::new();
    // Each event is stamped one second after the previous (the kit's clock); each token
    // lives one minute.
    let revoke = |state: &mut State, jti: String| {
        let expires = time_of(state.sequence() + 1).seconds + 60;
        run(
            state,
            Command::RevokeToken {
                jti,
                expires_at: Some(Timestamp {
                    seconds: expires,
                    nanos: 0,
                }),
                client_id: "looping-app".into(),
            },
        )
        .unwrap();
    };
    revoke(&mut state, "first".into());
    for i in 0..10_000 {
        revoke(&mut state, format!("jti-{i}"));
        if i < 300 {
            assert!(
                state.revoked_token("first").is_some(),
                "kept while it could still verify (event {i})"
            );
        }
    }
    assert!(
        state.revoked_token("first").is_none(),
        "forgotten long after"
    );
    let kept = state.revoked_tokens().count() as i64;
    let bound = 60 + REVOCATION_RETENTION_SECONDS + 1;
    assert!(kept <= bound, "{kept} revocations kept, at most {bound}");
    assert!(kept >= 60, "the live ones are all kept: {kept}");
    // The last one is there; a snapshot round trip keeps the index.
    assert!(state.revoked_token("jti-9999").is_some());
    let mut copy = State::from_snapshot(state.to_snapshot());
    for i in 10_000..10_400 {
        revoke(&mut copy, format!("jti-{i}"));
    }
    assert!(copy.revoked_token("jti-9000").is_none());
    assert!(copy.revoked_tokens().count() as i64 <= bound);
}
