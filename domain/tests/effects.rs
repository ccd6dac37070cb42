//! What the fold says it touched ([`Effects`]) and the state's indexes, through real
//! commands (`handle` and `State::apply`, no I/O): each kind of event names its own
//! aggregate and the records it changes besides (default versions that move, the
//! subscriptions and keys a deletion ends, revocations that expire); a refused event
//! touches nothing; and the indexed lookups answer what a scan of the records answers.

use std::collections::BTreeSet;

use gatehouse_domain::{
    AggregateKind, Command, Consistency, CustomPolicy, Effects, PendingEvent, State, handle,
};
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    ApiDeleted, OAuthClient, SigningKey, event_envelope::Event, lifecycle::State as Lifecycle,
    o_auth_client::KeyType, throttle_policy::Level,
};
use gatehouse_testkit::domain::{EPOCH_SECONDS, commit, run, try_run};
use gatehouse_testkit::world::{api, resources};
use proptest::prelude::*;

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.into_iter().map(String::from).collect()
}

fn pairs<const N: usize>(items: [(&str, &str); N]) -> BTreeSet<(String, String)> {
    items
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn create_api(id: &str, context: &str, version: &str, default: bool) -> Command {
    let urls = ["http://127.0.0.1:9".to_string()];
    let mut definition = api(id, context, version, resources(&[("GET", "/x")]), &urls);
    definition.is_default_version = default;
    definition.resources[0].scopes = vec!["read".into()];
    Command::CreateApi {
        api_id: id.into(),
        definition,
    }
}

fn publish(id: &str) -> Command {
    Command::ChangeLifecycle {
        api_id: id.into(),
        target: Lifecycle::Published,
        expected_version: None,
    }
}

fn application(id: &str, owner: &str) -> Command {
    Command::CreateApplication {
        application_id: id.into(),
        name: format!("App {id}"),
        owner: owner.into(),
        throttling_tier: String::new(),
        description: String::new(),
    }
}

fn subscribe(id: &str, app: &str, api: &str) -> Command {
    Command::Subscribe {
        subscription_id: id.into(),
        application_id: app.into(),
        api_id: api.into(),
        tier: "Unlimited".into(),
    }
}

fn keys(id: &str, app: &str, key_type: KeyType) -> Command {
    Command::RegisterClient {
        client: OAuthClient {
            client_id: id.into(),
            application_id: app.into(),
            key_type: key_type as i32,
            secret_hash: "$argon2id$unused".into(),
            ..Default::default()
        },
    }
}

/// What running `command` touched.
fn effects_of(state: &mut State, command: Command) -> Effects {
    state.record_effects();
    let _ = state.take_effects();
    run(state, command);
    state.take_effects()
}

/// Two published APIs (`v1` default, `v2`) of `/client`, applications `a` and `b`
/// with production keys, `a` subscribed to both and `b` to `v1`.
fn world() -> State {
    let mut state = State::new();
    for command in [
        create_api("v1", "/client", "1.0.0", true),
        publish("v1"),
        create_api("v2", "/client", "2.0.0", false),
        publish("v2"),
        application("a", "alice"),
        application("b", "bob"),
        keys("a-prod", "a", KeyType::Production),
        keys("b-prod", "b", KeyType::Production),
        subscribe("s1", "a", "v1"),
        subscribe("s2", "a", "v2"),
        subscribe("s3", "b", "v1"),
    ] {
        run(&mut state, command);
    }
    state
}

#[test]
fn api_events_name_their_api_and_the_versions_whose_default_flag_moved() {
    let mut state = world();
    let created = effects_of(&mut state, create_api("v3", "/other", "1.0.0", false));
    assert_eq!(created.apis, set(["v3"]));
    assert!(created.subscriptions.is_empty() && created.applications.is_empty());
    assert_eq!(effects_of(&mut state, publish("v3")).apis, set(["v3"]));
    // A new default version of /client takes the flag from v1.
    let moved = effects_of(
        &mut state,
        Command::CreateApiVersion {
            api_id: "v4".into(),
            source_api_id: "v2".into(),
            new_version: "4.0.0".into(),
            make_default: true,
        },
    );
    assert_eq!(moved.apis, set(["v1", "v4"]));
    assert!(
        !state
            .api("v1")
            .unwrap()
            .definition
            .as_ref()
            .unwrap()
            .is_default_version
    );
    // Deleting an API without subscriptions names only it.
    assert_eq!(
        effects_of(
            &mut state,
            Command::DeleteApi {
                api_id: "v3".into()
            }
        )
        .apis,
        set(["v3"])
    );
}

#[test]
fn an_api_deleted_with_subscriptions_names_the_pairs_it_ends() {
    // The handlers refuse it; the fold accepts it, and must say what it ended.
    let mut state = world();
    state.record_effects();
    let event = PendingEvent::first(
        AggregateKind::Api,
        "v1",
        Consistency::log(&state),
        Event::ApiDeleted(ApiDeleted {}),
    );
    commit(&mut state, vec![event]);
    let effects = state.take_effects();
    assert_eq!(effects.apis, set(["v1"]));
    assert_eq!(effects.subscriptions, pairs([("a", "v1"), ("b", "v1")]));
    assert_eq!(state.subscriptions_of_api("v1").count(), 0);
    assert!(state.subscription_of("a", "v1").is_none());
    assert!(state.subscription_of("a", "v2").is_some());
}

#[test]
fn subscription_events_name_their_pair() {
    let mut state = world();
    let block = Command::BlockSubscription {
        subscription_id: "s1".into(),
        production_only: true,
    };
    assert_eq!(
        effects_of(&mut state, block).subscriptions,
        pairs([("a", "v1")])
    );
    let grant = Command::GrantSubscriptionScopes {
        subscription_id: "s2".into(),
        scopes: vec!["read".into()],
    };
    assert_eq!(
        effects_of(&mut state, grant).subscriptions,
        pairs([("a", "v2")])
    );
    let end = Command::Unsubscribe {
        subscription_id: "s3".into(),
    };
    let ended = effects_of(&mut state, end);
    assert_eq!(ended.subscriptions, pairs([("b", "v1")]));
    assert!(ended.apis.is_empty());
    assert!(state.subscription_of("b", "v1").is_none());
}

#[test]
fn an_application_deleted_names_its_subscriptions_and_revoked_keys() {
    let mut state = world();
    let effects = effects_of(
        &mut state,
        Command::DeleteApplication {
            application_id: "a".into(),
        },
    );
    assert_eq!(effects.applications, set(["a"]));
    assert_eq!(effects.subscriptions, pairs([("a", "v1"), ("a", "v2")]));
    assert_eq!(effects.clients, set(["a-prod"]));
    assert!(state.client("a-prod").unwrap().revoked);
    assert!(!state.client("b-prod").unwrap().revoked);
    assert_eq!(state.subscriptions_of_application("a").count(), 0);
    assert_eq!(state.subscriptions_of_api("v1").count(), 1);
}

#[test]
fn key_events_name_what_they_change() {
    let mut state = world();
    let key = |kid: &str| SigningKey {
        kid: kid.into(),
        alg: "ES256".into(),
        public_jwk: "{}".into(),
        ..Default::default()
    };
    let first = Command::PublishSigningKey {
        key: key("k1"),
        retire_previous_after: None,
    };
    assert_eq!(effects_of(&mut state, first).signing_keys, set(["k1"]));
    let rotate = Command::PublishSigningKey {
        key: key("k2"),
        retire_previous_after: None,
    };
    assert_eq!(
        effects_of(&mut state, rotate).signing_keys,
        set(["k1", "k2"])
    );
    let revoke = Command::RevokeClient {
        client_id: "b-prod".into(),
    };
    assert_eq!(effects_of(&mut state, revoke).clients, set(["b-prod"]));
    let policy = Command::CreatePolicy(CustomPolicy {
        name: "Custom".into(),
        level: Level::Subscription,
        request_count: 5,
        unit_seconds: 60,
        unlimited: false,
        description: String::new(),
    });
    assert_eq!(
        effects_of(&mut state, policy).policies,
        [(Level::Subscription, "Custom".to_string())].into()
    );
}

#[test]
fn revocations_are_named_when_recorded_and_when_forgotten() {
    let mut state = world();
    let revoke = |jti: &str, expires: i64| Command::RevokeToken {
        jti: jti.into(),
        expires_at: Some(Timestamp {
            seconds: expires,
            nanos: 0,
        }),
        client_id: "a-prod".into(),
    };
    let kept = effects_of(&mut state, revoke("new", EPOCH_SECONDS + 10_000));
    assert_eq!(kept.revoked_tokens, set(["new"]));
    assert!(state.revoked_token("new").is_some());
    // Expired long before the event's time: forgotten as soon as it is recorded, and
    // named all the same (a reader that saw it must drop it).
    let expired = effects_of(&mut state, revoke("old", EPOCH_SECONDS - 10_000));
    assert_eq!(expired.revoked_tokens, set(["old"]));
    assert!(state.revoked_token("old").is_none());
    assert!(state.revoked_token("new").is_some());
}

#[test]
fn a_refused_event_and_a_state_not_recording_touch_nothing() {
    let mut state = world();
    // Not recording: nothing is kept.
    run(&mut state, application("c", "carol"));
    assert!(state.take_effects().is_empty());
    state.record_effects();
    // A subscription to a missing API is refused by the rules...
    assert!(try_run(&mut state, subscribe("s9", "a", "missing")).is_err());
    // ... and an event on a missing aggregate by the fold.
    let before = state.clone();
    let event = PendingEvent::first(
        AggregateKind::Api,
        "missing",
        Consistency::log(&state),
        Event::ApiDeleted(ApiDeleted {}),
    )
    .envelope(Default::default());
    assert!(state.apply(state.sequence() + 1, &event).is_err());
    assert_eq!(state, before);
    assert!(state.take_effects().is_empty());
}

#[test]
fn clones_are_independent_and_equal_until_one_changes() {
    let mut state = world();
    let copy = state.clone();
    assert_eq!(copy, state);
    run(&mut state, application("c", "carol"));
    assert_ne!(copy, state);
    assert!(copy.application("c").is_none());
    assert!(state.application("c").is_some());
    assert_eq!(State::from_snapshot(state.to_snapshot()), state);
}

/// One random step of a small history (refused commands change nothing).
fn command() -> impl Strategy<Value = Command> {
    let api_id = (0..4usize).prop_map(|i| format!("api{i}"));
    let app_id = (0..4usize).prop_map(|i| format!("app{i}"));
    prop_oneof![
        (api_id.clone(), 0..3usize, 0..2usize, any::<bool>()).prop_map(|(id, c, v, d)| {
            create_api(&id, ["/a", "/b", "/a/b"][c], ["1.0.0", "2.0.0"][v], d)
        }),
        api_id.clone().prop_map(|id| publish(&id)),
        api_id
            .clone()
            .prop_map(|id| Command::DeleteApi { api_id: id }),
        (app_id.clone(), 0..2usize).prop_map(|(id, o)| application(&id, ["alice", "bob"][o])),
        app_id
            .clone()
            .prop_map(|id| Command::DeleteApplication { application_id: id }),
        (0..6usize, app_id.clone(), api_id).prop_map(|(s, app, api)| subscribe(
            &format!("sub{s}"),
            &app,
            &api
        )),
        (0..6usize).prop_map(|s| Command::Unsubscribe {
            subscription_id: format!("sub{s}")
        }),
        (0..4usize, app_id, any::<bool>()).prop_map(|(c, app, sandbox)| keys(
            &format!("client{c}"),
            &app,
            if sandbox {
                KeyType::Sandbox
            } else {
                KeyType::Production
            }
        )),
        (0..4usize).prop_map(|c| Command::RevokeClient {
            client_id: format!("client{c}")
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The indexes answer what scanning every record answers, after any history and
    /// after a snapshot round trip.
    #[test]
    fn indexed_lookups_agree_with_scans(commands in prop::collection::vec(command(), 1..40)) {
        let mut state = State::new();
        for command in commands {
            if handle(&state, command.clone()).is_ok() {
                run(&mut state, command);
            }
        }
        for state in [state.clone(), State::from_snapshot(state.to_snapshot())] {
            for app in (0..5).map(|i| format!("app{i}")) {
                for api in (0..5).map(|i| format!("api{i}")) {
                    let scanned = state
                        .subscriptions()
                        .find(|s| s.application_id == app && s.api_id == api);
                    prop_assert_eq!(state.subscription_of(&app, &api), scanned);
                }
                let scanned: Vec<_> = state.subscriptions().filter(|s| s.application_id == app).collect();
                let mut indexed: Vec<_> = state.subscriptions_of_application(&app).collect();
                indexed.sort_by(|a, b| a.id.cmp(&b.id));
                prop_assert_eq!(indexed, scanned);
                for key_type in [KeyType::Production, KeyType::Sandbox] {
                    let scanned = state.clients().find(|c| {
                        c.application_id == app && c.key_type() == key_type && !c.revoked
                    });
                    prop_assert_eq!(state.client_of(&app, key_type), scanned);
                }
            }
            for api in (0..5).map(|i| format!("api{i}")) {
                let scanned: Vec<_> = state.subscriptions().filter(|s| s.api_id == api).collect();
                let mut indexed: Vec<_> = state.subscriptions_of_api(&api).collect();
                indexed.sort_by(|a, b| a.id.cmp(&b.id));
                prop_assert_eq!(indexed, scanned);
            }
            for context in ["/a", "/b", "/a/b", "/c"] {
                for version in ["1.0.0", "2.0.0"] {
                    let scanned = state.apis().find(|a| {
                        a.definition.as_ref().is_some_and(|d| d.context == context && d.version == version)
                    });
                    prop_assert_eq!(state.api_by_context_version(context, version), scanned);
                }
                let mut scanned: Vec<_> = state
                    .apis()
                    .filter(|a| a.definition.as_ref().is_some_and(|d| d.context == context))
                    .map(|a| a.id.clone())
                    .collect();
                let mut indexed: Vec<_> = state.apis_of_context(context).map(|(id, _)| id.to_string()).collect();
                scanned.sort();
                indexed.sort();
                prop_assert_eq!(indexed, scanned);
            }
            for owner in ["alice", "bob", "carol"] {
                let scanned: Vec<_> = state.applications().filter(|a| a.owner == owner).collect();
                let indexed: Vec<_> = state.applications_of_owner(owner).collect();
                prop_assert_eq!(indexed, scanned);
            }
        }
    }
}
