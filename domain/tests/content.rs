//! Updating applications and policies, the configuration's content hash, and guarded
//! commands: through `handle` and `State::apply` only.

use gatehouse_domain::{Command, Consistency, DomainError, State, handle};
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, Resource, lifecycle, throttle_policy::Level,
};
use gatehouse_testkit::domain::{run, try_run};
use gatehouse_testkit::world::custom_policy;

fn definition() -> ApiDefinition {
    ApiDefinition {
        name: "ClientServiceAPI".into(),
        context: "/client".into(),
        version: "1.0.0".into(),
        resources: vec![Resource {
            method: "GET".into(),
            path: "/users".into(),
            scopes: vec!["read:users".into()],
            ..Default::default()
        }],
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                urls: vec!["http://localhost:8001".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        subscription_tiers: vec!["Gold".into()],
        ..Default::default()
    }
}

/// One configuration, built under ids of `prefix`: an API, a policy, an application
/// subscribed with a scope granted.
fn configured(prefix: &str) -> State {
    let mut state = State::new();
    let id = |what: &str| format!("{prefix}-{what}");
    run(
        &mut state,
        Command::CreatePolicy(custom_policy("Platinum", Level::Subscription, 100, 60)),
    );
    run(
        &mut state,
        Command::CreateApi {
            api_id: id("api"),
            definition: definition(),
        },
    );
    run(
        &mut state,
        Command::ChangeLifecycle {
            api_id: id("api"),
            target: lifecycle::State::Published,
            expected_version: None,
        },
    );
    run(
        &mut state,
        Command::CreateApplication {
            application_id: id("app"),
            name: "MyPythonApp".into(),
            owner: "admin".into(),
            throttling_tier: String::new(),
            description: String::new(),
        },
    );
    run(
        &mut state,
        Command::Subscribe {
            subscription_id: id("sub"),
            application_id: id("app"),
            api_id: id("api"),
            tier: "Gold".into(),
        },
    );
    run(
        &mut state,
        Command::GrantSubscriptionScopes {
            subscription_id: id("sub"),
            scopes: vec!["read:users".into()],
        },
    );
    state
}

#[test]
fn content_hash_names_objects_by_natural_keys_not_ids() {
    let (a, b) = (configured("a"), configured("b"));
    assert_ne!(
        a.config_hash(),
        b.config_hash(),
        "the chains differ: other ids"
    );
    assert_eq!(a.content_hash(), b.content_hash(), "the same configuration");
    let mut c = configured("c");
    run(
        &mut c,
        Command::UpdateApplication {
            application_id: "c-app".into(),
            throttling_tier: "10PerMin".into(),
            description: String::new(),
        },
    );
    assert_ne!(a.content_hash(), c.content_hash(), "a changed tier shows");
}

#[test]
fn applications_and_custom_policies_can_be_updated_built_in_ones_cannot() {
    let mut state = configured("a");
    let update = |tier: &str| Command::UpdateApplication {
        application_id: "a-app".into(),
        throttling_tier: tier.into(),
        description: "the demo".into(),
    };
    assert_eq!(run(&mut state, update("20PerMin")), 1);
    let app = state.application("a-app").unwrap();
    assert_eq!(
        (app.throttling_tier.as_str(), app.description.as_str()),
        ("20PerMin", "the demo")
    );
    assert_eq!(app.aggregate_version, 2);
    assert_eq!(
        run(&mut state, update("20PerMin")),
        0,
        "no change, no event"
    );
    let refused = try_run(&mut state, update("Gold")).unwrap_err();
    assert!(refused.to_string().contains("throttling_tier"), "{refused}");

    let policy = |name: &str, count: u64| {
        Command::UpdatePolicy(custom_policy(name, Level::Subscription, count, 60))
    };
    assert_eq!(run(&mut state, policy("Platinum", 200)), 1);
    let platinum = state.policy(Level::Subscription, "Platinum").unwrap();
    assert_eq!(
        (platinum.request_count, platinum.aggregate_version),
        (200, 2)
    );
    assert!(matches!(
        try_run(&mut state, policy("Gold", 1)),
        Err(DomainError::FailedPrecondition(_))
    ));
    assert!(matches!(
        try_run(&mut state, policy("Nope", 1)),
        Err(DomainError::NotFound { .. })
    ));
}

#[test]
fn a_guarded_command_needs_the_content_it_was_planned_on_and_guards_the_log() {
    let state = configured("a");
    let inner = Command::UpdateApplication {
        application_id: "a-app".into(),
        throttling_tier: "10PerMin".into(),
        description: String::new(),
    };
    let guarded = |hash| Command::Guarded {
        expected_content_hash: hash,
        command: Box::new(inner.clone()),
    };
    let events = handle(&state, guarded(state.content_hash())).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].consistency,
        Consistency::Log {
            last_sequence: state.sequence()
        },
        "the first event guards the whole log"
    );
    let stale = handle(&state, guarded(state.content_hash() ^ 1)).unwrap_err();
    assert!(matches!(stale, DomainError::Concurrent(_)), "{stale}");
}
