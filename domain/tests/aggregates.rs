//! The aggregates' rules, exercised through `handle` and `State::apply` only: no I/O.

use gatehouse_domain::{
    ApplyError, Command, Consistency, DomainError, EventMeta, State, handle, lifecycle as lc,
};
use gatehouse_proto::events::{
    ApiDefinition, ApiUpdated, EndpointGroup, Endpoints, EventEnvelope, Resource, ResponseCache,
    event_envelope::Event, lifecycle::State as Lc, subscription_status::State as SubState,
    throttle_policy::Level,
};
use gatehouse_testkit::domain::{commit, try_run as run};
use gatehouse_testkit::world::custom_policy;

fn definition(name: &str, context: &str, version: &str) -> ApiDefinition {
    ApiDefinition {
        name: name.into(),
        context: context.into(),
        version: version.into(),
        resources: vec![Resource {
            method: "get".into(),
            path: "/users".into(),
            ..Default::default()
        }],
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                urls: vec!["http://localhost:8001".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        subscription_tiers: vec!["Gold".into(), "Unlimited".into()],
        ..Default::default()
    }
}

fn create_api_as(
    state: &mut State,
    id: &str,
    definition: ApiDefinition,
) -> Result<usize, DomainError> {
    run(
        state,
        Command::CreateApi {
            api_id: id.into(),
            definition,
        },
    )
}

fn create_api(state: &mut State, id: &str, context: &str, version: &str) {
    create_api_as(state, id, definition("ClientServiceAPI", context, version)).expect("create api");
}

fn new_version(
    state: &mut State,
    id: &str,
    source: &str,
    version: &str,
    make_default: bool,
) -> Result<usize, DomainError> {
    run(
        state,
        Command::CreateApiVersion {
            api_id: id.into(),
            source_api_id: source.into(),
            new_version: version.into(),
            make_default,
        },
    )
}

fn lifecycle(state: &mut State, id: &str, target: Lc) -> Result<usize, DomainError> {
    run(
        state,
        Command::ChangeLifecycle {
            api_id: id.into(),
            target,
            expected_version: None,
        },
    )
}

fn create_app(state: &mut State, id: &str, name: &str, owner: &str) -> Result<usize, DomainError> {
    run(
        state,
        Command::CreateApplication {
            application_id: id.into(),
            name: name.into(),
            owner: owner.into(),
            throttling_tier: String::new(),
            description: String::new(),
        },
    )
}

fn subscribe(
    state: &mut State,
    id: &str,
    app: &str,
    api: &str,
    tier: &str,
) -> Result<usize, DomainError> {
    run(
        state,
        Command::Subscribe {
            subscription_id: id.into(),
            application_id: app.into(),
            api_id: api.into(),
            tier: tier.into(),
        },
    )
}

fn invalid_field(result: Result<usize, DomainError>) -> String {
    match result {
        Err(DomainError::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn creating_an_api_folds_into_a_created_api_with_normalised_definition() {
    let mut s = State::new();
    create_api(&mut s, "a1", "/client", "1.0.0");
    let api = s.api("a1").unwrap();
    assert_eq!(api.lifecycle(), Lc::Created);
    assert_eq!(api.aggregate_version, 1);
    assert_eq!(api.last_sequence, 1);
    assert_eq!(api.created_by, "tester");
    let d = api.definition.as_ref().unwrap();
    assert_eq!(d.resources[0].method, "GET", "methods are upper-cased");
    assert_eq!(s.sequence(), 1);
}

#[test]
fn context_and_version_are_unique() {
    let mut s = State::new();
    create_api(&mut s, "a1", "/client", "1.0.0");
    let again = create_api_as(&mut s, "a2", definition("Other", "/client", "1.0.0"));
    assert!(
        matches!(again, Err(DomainError::AlreadyExists(ref m)) if m.contains("/client")),
        "{again:?}"
    );
    // Another version of the same context is fine.
    create_api(&mut s, "a3", "/client", "2.0.0");
}

#[test]
fn bad_definitions_name_the_field() {
    let s = State::new();
    type Mutation = Box<dyn Fn(&mut ApiDefinition)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("definition.name", Box::new(|d| d.name = " ".into())),
        (
            "definition.context",
            Box::new(|d| d.context = "client".into()),
        ),
        (
            "definition.context",
            Box::new(|d| d.context = "/a/../b".into()),
        ),
        ("definition.version", Box::new(|d| d.version = "1 0".into())),
        (
            "definition.resources[0].path",
            Box::new(|d| d.resources[0].path = "users/{id".into()),
        ),
        (
            "definition.resources[0].method",
            Box::new(|d| d.resources[0].method = "FETCH".into()),
        ),
        (
            "definition.resources[0].throttling_tier",
            Box::new(|d| d.resources[0].throttling_tier = "Platinum".into()),
        ),
        (
            "definition.subscription_tiers",
            Box::new(|d| d.subscription_tiers = vec!["Platinum".into()]),
        ),
        (
            "definition.endpoints.production.urls",
            Box::new(|d| {
                d.endpoints
                    .as_mut()
                    .unwrap()
                    .production
                    .as_mut()
                    .unwrap()
                    .urls = vec!["ftp://x".into()]
            }),
        ),
        (
            "definition.resources[1]",
            Box::new(|d| d.resources.push(d.resources[0].clone())),
        ),
        (
            "definition.max_request_body_bytes",
            Box::new(|d| {
                d.max_request_body_bytes = gatehouse_domain::validate::MAX_REQUEST_BODY_BYTES + 1
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut d = definition("X", "/x", "1.0.0");
        mutate(&mut d);
        let result = handle(
            &s,
            Command::CreateApi {
                api_id: "a".into(),
                definition: d,
            },
        )
        .map(|e| e.len());
        assert_eq!(invalid_field(result), field);
    }
}

#[test]
fn defaults_are_filled() {
    let mut s = State::new();
    let mut d = definition("X", "/x", "1.0.0");
    d.subscription_tiers.clear();
    d.cache = Some(ResponseCache {
        enabled: true,
        ttl_seconds: 0,
    });
    create_api_as(&mut s, "x", d).unwrap();
    let d = s.api("x").unwrap().definition.clone().unwrap();
    assert_eq!(d.subscription_tiers, vec!["Unlimited"]);
    assert_eq!(d.cache.unwrap().ttl_seconds, 300);
    assert_eq!(d.max_request_body_bytes, 0, "0: the gateway's default");
}

#[test]
fn a_request_body_limit_up_to_one_gib_is_kept() {
    let mut s = State::new();
    let mut d = definition("X", "/x", "1.0.0");
    d.max_request_body_bytes = gatehouse_domain::validate::MAX_REQUEST_BODY_BYTES;
    create_api_as(&mut s, "x", d).unwrap();
    let d = s.api("x").unwrap().definition.clone().unwrap();
    assert_eq!(d.max_request_body_bytes, 1 << 30);
}

/// Walks every allowed transition through `handle`, and tries every refused one.
#[test]
fn every_lifecycle_transition_through_commands() {
    let all = [
        Lc::Created,
        Lc::Prototyped,
        Lc::Published,
        Lc::Blocked,
        Lc::Deprecated,
        Lc::Retired,
    ];
    // A path from CREATED to each state, using allowed transitions only.
    let path_to = |target: Lc| -> Vec<Lc> {
        match target {
            Lc::Created => vec![],
            Lc::Prototyped => vec![Lc::Prototyped],
            Lc::Published => vec![Lc::Published],
            Lc::Blocked => vec![Lc::Published, Lc::Blocked],
            Lc::Deprecated => vec![Lc::Published, Lc::Deprecated],
            Lc::Retired => vec![Lc::Published, Lc::Deprecated, Lc::Retired],
            Lc::Unspecified => unreachable!(),
        }
    };
    let mut checked = 0;
    for from in all {
        for to in all {
            let mut s = State::new();
            create_api(&mut s, "a", "/client", "1.0.0");
            for step in path_to(from) {
                lifecycle(&mut s, "a", step).expect("path step");
            }
            assert_eq!(s.api("a").unwrap().lifecycle(), from);
            let result = lifecycle(&mut s, "a", to);
            if lc::can_transition(from, to) {
                assert_eq!(result, Ok(1), "{from:?} -> {to:?}");
                assert_eq!(s.api("a").unwrap().lifecycle(), to);
            } else {
                match result {
                    Err(DomainError::FailedPrecondition(m)) => {
                        assert!(m.contains("allowed from"), "{m}");
                        for allowed in lc::allowed_transitions(from) {
                            assert!(
                                m.contains(lc::name(*allowed)),
                                "{m} should list {allowed:?}"
                            );
                        }
                    }
                    other => {
                        panic!("{from:?} -> {to:?}: expected FailedPrecondition, got {other:?}")
                    }
                }
                assert_eq!(
                    s.api("a").unwrap().lifecycle(),
                    from,
                    "refused transition left state alone"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn created_to_deprecated_is_refused_with_the_allowed_states() {
    let mut s = State::new();
    create_api(&mut s, "a", "/client", "1.0.0");
    let err = lifecycle(&mut s, "a", Lc::Deprecated).unwrap_err();
    assert_eq!(
        err.to_string(),
        "API a cannot go from CREATED to DEPRECATED; allowed from CREATED: PUBLISHED, PROTOTYPED"
    );
}

#[test]
fn publishing_needs_an_endpoint_and_resources() {
    let mut s = State::new();
    let mut d = definition("X", "/x", "1.0.0");
    d.endpoints = None;
    create_api_as(&mut s, "x", d).unwrap();
    let err = lifecycle(&mut s, "x", Lc::Published).unwrap_err();
    assert!(
        matches!(err, DomainError::FailedPrecondition(ref m) if m.contains("production endpoint")),
        "{err}"
    );
}

#[test]
fn new_version_copies_the_definition_and_moves_the_default_flag() {
    let mut s = State::new();
    let mut d = definition("ClientServiceAPI", "/client", "1.0.0");
    d.is_default_version = true;
    d.description = "users".into();
    create_api_as(&mut s, "v1", d).unwrap();
    new_version(&mut s, "v2", "v1", "2.0.0", true).unwrap();
    let v2 = s.api("v2").unwrap();
    let d2 = v2.definition.as_ref().unwrap();
    assert_eq!(d2.version, "2.0.0");
    assert_eq!(d2.description, "users");
    assert_eq!(d2.resources.len(), 1);
    assert_eq!(v2.source_api_id, "v1");
    assert_eq!(v2.lifecycle(), Lc::Created);
    assert!(d2.is_default_version);
    assert!(
        !s.api("v1")
            .unwrap()
            .definition
            .as_ref()
            .unwrap()
            .is_default_version
    );
    // The same version twice is refused.
    let again = new_version(&mut s, "v3", "v1", "2.0.0", false);
    assert!(matches!(again, Err(DomainError::AlreadyExists(_))));
}

/// A new version is a new API: it cannot reuse the id of one that exists, which would
/// replace it and leave its subscriptions pointing at the copy.
#[test]
fn a_new_version_cannot_reuse_the_id_of_an_existing_api() {
    let mut s = State::new();
    create_api(&mut s, "a", "/client", "1.0.0");
    lifecycle(&mut s, "a", Lc::Published).unwrap();
    create_app(&mut s, "app", "App", "admin").unwrap();
    subscribe(&mut s, "s1", "app", "a", "Gold").unwrap();
    let before = s.clone();

    let reused = new_version(&mut s, "a", "a", "2.0.0", false);
    assert!(
        matches!(reused, Err(DomainError::AlreadyExists(ref m)) if m == "API a already exists"),
        "{reused:?}"
    );
    assert_eq!(s, before, "a refused command changes nothing");
}

/// "On error the state is unchanged": an update of an API the state does not have is
/// refused before it takes the default-version flag from the other versions of its
/// context.
#[test]
fn an_update_of_an_unknown_api_changes_no_default_version() {
    let mut s = State::new();
    let mut d = definition("ClientServiceAPI", "/c", "1.0.0");
    d.is_default_version = true;
    create_api_as(&mut s, "a", d.clone()).unwrap();
    let before = s.clone();

    d.version = "2.0.0".into();
    let envelope = EventEnvelope {
        event_id: "evt-ghost".into(),
        aggregate_id: "ghost".into(),
        aggregate_version: 2,
        event: Some(Event::ApiUpdated(ApiUpdated {
            definition: Some(d),
        })),
        ..Default::default()
    };
    let result = s.apply(s.sequence() + 1, &envelope);
    assert!(
        matches!(result, Err(ApplyError::UnknownAggregate { kind: "api", ref id, .. }) if id == "ghost"),
        "{result:?}"
    );
    assert!(
        s.api("a")
            .unwrap()
            .definition
            .as_ref()
            .unwrap()
            .is_default_version,
        "a is still the default version of /c"
    );
    assert_eq!(s, before, "a refused event changes nothing");
}

#[test]
fn updates_keep_identity_and_check_the_expected_version() {
    let mut s = State::new();
    create_api(&mut s, "a", "/client", "1.0.0");
    let mut d = definition("ClientServiceAPI", "/other", "1.0.0");
    let err = run(
        &mut s,
        Command::UpdateApi {
            api_id: "a".into(),
            definition: d.clone(),
            expected_version: None,
        },
    );
    assert_eq!(invalid_field(err), "definition.context");

    d.context = String::new(); // empty: keep the current one
    d.description = "v2".into();
    let stale = run(
        &mut s,
        Command::UpdateApi {
            api_id: "a".into(),
            definition: d.clone(),
            expected_version: Some(7),
        },
    );
    assert!(
        matches!(
            stale,
            Err(DomainError::VersionMismatch {
                expected: 7,
                actual: 1,
                ..
            })
        ),
        "{stale:?}"
    );

    let events = handle(
        &s,
        Command::UpdateApi {
            api_id: "a".into(),
            definition: d,
            expected_version: Some(1),
        },
    )
    .unwrap();
    assert_eq!(
        events[0].consistency,
        Consistency::Aggregate { last_sequence: 1 }
    );
    commit(&mut s, events);
    let api = s.api("a").unwrap();
    assert_eq!(api.aggregate_version, 2);
    assert_eq!(api.definition.as_ref().unwrap().context, "/client");
    assert_eq!(api.definition.as_ref().unwrap().description, "v2");
}

#[test]
fn subscription_rules() {
    let mut s = State::new();
    create_api(&mut s, "api", "/client", "1.0.0");
    create_app(&mut s, "app", "MyPythonApp", "admin").unwrap();

    // Not published yet.
    let early = subscribe(&mut s, "s1", "app", "api", "Gold");
    assert!(
        matches!(early, Err(DomainError::FailedPrecondition(ref m)) if m.contains("CREATED")),
        "{early:?}"
    );

    lifecycle(&mut s, "api", Lc::Published).unwrap();
    assert_eq!(
        invalid_field(subscribe(&mut s, "s1", "app", "api", "Platinum")),
        "tier"
    );
    assert_eq!(
        invalid_field(subscribe(&mut s, "s1", "app", "api", "Bronze")),
        "tier",
        "not offered"
    );
    assert!(matches!(
        subscribe(&mut s, "s1", "nope", "api", "Gold"),
        Err(DomainError::NotFound { .. })
    ));
    assert!(matches!(
        subscribe(&mut s, "s1", "app", "nope", "Gold"),
        Err(DomainError::NotFound { .. })
    ));

    subscribe(&mut s, "s1", "app", "api", "Gold").unwrap();
    assert_eq!(s.subscription("s1").unwrap().state(), SubState::Active);
    let twice = subscribe(&mut s, "s2", "app", "api", "Unlimited");
    assert!(
        matches!(twice, Err(DomainError::AlreadyExists(_))),
        "{twice:?}"
    );

    run(
        &mut s,
        Command::BlockSubscription {
            subscription_id: "s1".into(),
            production_only: true,
        },
    )
    .unwrap();
    assert_eq!(
        s.subscription("s1").unwrap().state(),
        SubState::ProdOnlyBlocked
    );
    run(
        &mut s,
        Command::BlockSubscription {
            subscription_id: "s1".into(),
            production_only: false,
        },
    )
    .unwrap();
    assert_eq!(s.subscription("s1").unwrap().state(), SubState::Blocked);
    let same = run(
        &mut s,
        Command::BlockSubscription {
            subscription_id: "s1".into(),
            production_only: false,
        },
    );
    assert_eq!(
        same,
        Ok(0),
        "blocking a blocked subscription appends nothing"
    );
    run(
        &mut s,
        Command::UnblockSubscription {
            subscription_id: "s1".into(),
        },
    )
    .unwrap();
    assert_eq!(s.subscription("s1").unwrap().state(), SubState::Active);

    // An API with subscriptions cannot be deleted.
    let del = run(
        &mut s,
        Command::DeleteApi {
            api_id: "api".into(),
        },
    );
    assert!(
        matches!(del, Err(DomainError::FailedPrecondition(ref m)) if m.contains("1 subscription")),
        "{del:?}"
    );
    run(
        &mut s,
        Command::Unsubscribe {
            subscription_id: "s1".into(),
        },
    )
    .unwrap();
    assert!(s.subscription("s1").is_none());
    run(
        &mut s,
        Command::DeleteApi {
            api_id: "api".into(),
        },
    )
    .unwrap();
    assert!(s.api("api").is_none());
}

#[test]
fn prototyped_apis_accept_subscriptions_and_retired_ones_do_not() {
    let mut s = State::new();
    create_api(&mut s, "api", "/client", "1.0.0");
    create_app(&mut s, "app", "App", "admin").unwrap();
    lifecycle(&mut s, "api", Lc::Prototyped).unwrap();
    subscribe(&mut s, "s1", "app", "api", "Gold").unwrap();
    for step in [Lc::Published, Lc::Deprecated] {
        lifecycle(&mut s, "api", step).unwrap();
    }
    create_app(&mut s, "app2", "App2", "admin").unwrap();
    assert!(matches!(
        subscribe(&mut s, "s2", "app2", "api", "Gold"),
        Err(DomainError::FailedPrecondition(_))
    ));
}

#[test]
fn applications_are_unique_per_owner_and_deleting_one_ends_its_subscriptions() {
    let mut s = State::new();
    create_app(&mut s, "a1", "MyPythonApp", "admin").unwrap();
    assert!(matches!(
        create_app(&mut s, "a2", "mypythonapp", "admin"),
        Err(DomainError::AlreadyExists(_))
    ));
    create_app(&mut s, "a3", "MyPythonApp", "alice").unwrap();
    assert_eq!(s.application("a1").unwrap().throttling_tier, "Unlimited");
    assert_eq!(invalid_field(create_app(&mut s, "a4", "", "admin")), "name");
    let bad_tier = run(
        &mut s,
        Command::CreateApplication {
            application_id: "a5".into(),
            name: "X".into(),
            owner: "admin".into(),
            throttling_tier: "Gold".into(),
            description: String::new(),
        },
    );
    assert_eq!(
        invalid_field(bad_tier),
        "throttling_tier",
        "Gold is a subscription tier, not an application one"
    );

    create_api(&mut s, "api", "/client", "1.0.0");
    lifecycle(&mut s, "api", Lc::Published).unwrap();
    subscribe(&mut s, "s1", "a1", "api", "Gold").unwrap();
    run(
        &mut s,
        Command::DeleteApplication {
            application_id: "a1".into(),
        },
    )
    .unwrap();
    assert!(s.application("a1").is_none());
    assert!(
        s.subscription("s1").is_none(),
        "subscriptions go with their application"
    );
    // The deleted application's name is free again for its owner; other names stay
    // taken, in a state restored from a snapshot too.
    assert!(!s.owner_has_application_named("admin", "MYPYTHONAPP"));
    create_app(&mut s, "a6", "MYPYTHONAPP", "admin").unwrap();
    let mut restored = State::from_snapshot(s.to_snapshot());
    for (id, name, owner) in [
        ("a7", "mypythonapp", "admin"),
        ("a8", "MyPythonApp", "alice"),
    ] {
        assert!(
            matches!(
                create_app(&mut restored, id, name, owner),
                Err(DomainError::AlreadyExists(_))
            ),
            "{owner} already has {name}"
        );
    }
    create_app(&mut restored, "a9", "MyPythonApp", "bob").unwrap();
}

#[test]
fn custom_policies() {
    let mut s = State::new();
    let create = |name: &str, count: u64| {
        Command::CreatePolicy(custom_policy(name, Level::Subscription, count, 60))
    };
    run(&mut s, create("Platinum", 10_000)).unwrap();
    let p = s.policy(Level::Subscription, "Platinum").unwrap();
    assert_eq!(p.request_count, 10_000);
    assert!(!p.built_in);
    assert!(matches!(
        run(&mut s, create("Gold", 1)),
        Err(DomainError::AlreadyExists(_))
    ));
    assert_eq!(
        invalid_field(run(&mut s, create("Zero", 0))),
        "request_count"
    );
    assert_eq!(invalid_field(run(&mut s, create("with space", 5))), "name");
    // The new tier can be offered by an API.
    let mut d = definition("X", "/x", "1.0.0");
    d.subscription_tiers = vec!["Platinum".into()];
    create_api_as(&mut s, "x", d).unwrap();
}

#[test]
fn cross_aggregate_commands_guard_the_whole_log() {
    let mut s = State::new();
    create_api(&mut s, "api", "/client", "1.0.0");
    let events = handle(
        &s,
        Command::CreateApi {
            api_id: "b".into(),
            definition: definition("B", "/b", "1"),
        },
    )
    .unwrap();
    assert_eq!(events[0].consistency, Consistency::Log { last_sequence: 1 });
    let events = handle(
        &s,
        Command::ChangeLifecycle {
            api_id: "api".into(),
            target: Lc::Published,
            expected_version: None,
        },
    )
    .unwrap();
    assert_eq!(
        events[0].consistency,
        Consistency::Aggregate { last_sequence: 1 }
    );
    assert!(matches!(events[0].event, Event::ApiLifecycleChanged(_)));
}

#[test]
fn snapshots_round_trip_and_apply_refuses_out_of_order_events() {
    let mut s = State::new();
    create_api(&mut s, "api", "/client", "1.0.0");
    lifecycle(&mut s, "api", Lc::Published).unwrap();
    create_app(&mut s, "app", "App", "admin").unwrap();
    subscribe(&mut s, "s1", "app", "api", "Gold").unwrap();
    let restored = State::from_snapshot(s.to_snapshot());
    assert_eq!(restored, s);

    let events = handle(
        &s,
        Command::UnblockSubscription {
            subscription_id: "s1".into(),
        },
    )
    .unwrap();
    assert!(events.is_empty());
    let events = handle(
        &s,
        Command::BlockSubscription {
            subscription_id: "s1".into(),
            production_only: false,
        },
    )
    .unwrap();
    let envelope = events[0].envelope(EventMeta::default());
    let mut copy = s.clone();
    assert!(
        copy.apply(s.sequence() + 2, &envelope).is_err(),
        "a gap is refused"
    );
    assert!(
        copy.apply(s.sequence(), &envelope).is_err(),
        "a replay is refused"
    );
    assert_eq!(copy, s, "refused events change nothing");
    copy.apply(s.sequence() + 1, &envelope).unwrap();
    assert_eq!(copy.subscription("s1").unwrap().state(), SubState::Blocked);
}

#[test]
fn config_hash_follows_the_state() {
    let mut a = State::new();
    let b = State::new();
    assert_eq!(a.config_hash(), b.config_hash());
    assert_eq!(a.config_hash().len(), 16);
    create_api(&mut a, "api", "/client", "1.0.0");
    assert_ne!(a.config_hash(), b.config_hash());
    assert_eq!(
        State::from_snapshot(a.to_snapshot()).config_hash(),
        a.config_hash()
    );
}

/// Credentials are never shared with "any origin": the rule browsers enforce, refused
/// at the source, naming the field.
#[test]
fn cors_refuses_credentials_with_any_origin() {
    use gatehouse_proto::events::CorsPolicy;
    let mut state = State::new();
    let with_cors = |origins: &[&str], credentials: bool| {
        let mut d = definition("Client", "/client", "1.0.0");
        d.cors = Some(CorsPolicy {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: credentials,
            ..Default::default()
        });
        d
    };
    let refused = run(
        &mut state,
        Command::CreateApi {
            api_id: "a".into(),
            definition: with_cors(&["*"], true),
        },
    )
    .unwrap_err();
    match refused {
        DomainError::InvalidArgument {
            field,
            rule: message,
        } => {
            assert_eq!(field, "definition.cors.allow_credentials");
            assert!(message.contains('*'), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.sequence(), 0, "nothing appended");
    // Named origins may send credentials; any origin may call without them.
    for (origins, credentials) in [
        (&["https://app.example.com"][..], true),
        (&["*"][..], false),
    ] {
        run(
            &mut state,
            Command::CreateApi {
                api_id: format!("api-{credentials}"),
                definition: {
                    let mut d = with_cors(origins, credentials);
                    d.version = format!("{credentials}");
                    d
                },
            },
        )
        .unwrap();
    }
}

/// An admin grants a subscription scopes its API declares (replacing the grant before);
/// an undeclared scope is refused naming it, the same grant again changes nothing.
#[test]
fn scopes_are_granted_per_subscription_among_those_the_api_declares() {
    let mut state = State::new();
    let mut d = definition("Client", "/client", "1.0.0");
    d.resources[0].scopes = vec!["read:users".into(), "write:users".into()];
    run(
        &mut state,
        Command::CreateApi {
            api_id: "api".into(),
            definition: d,
        },
    )
    .unwrap();
    run(
        &mut state,
        Command::ChangeLifecycle {
            api_id: "api".into(),
            target: Lc::Published,
            expected_version: None,
        },
    )
    .unwrap();
    run(
        &mut state,
        Command::CreateApplication {
            application_id: "app".into(),
            name: "App".into(),
            owner: "o".into(),
            throttling_tier: String::new(),
            description: String::new(),
        },
    )
    .unwrap();
    run(
        &mut state,
        Command::Subscribe {
            subscription_id: "sub".into(),
            application_id: "app".into(),
            api_id: "api".into(),
            tier: "Unlimited".into(),
        },
    )
    .unwrap();
    let grant = |scopes: &[&str]| Command::GrantSubscriptionScopes {
        subscription_id: "sub".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    assert!(state.subscription("sub").unwrap().granted_scopes.is_empty());
    assert_eq!(
        run(
            &mut state,
            grant(&["write:users", "read:users", "read:users"])
        ),
        Ok(1)
    );
    assert_eq!(
        state.subscription("sub").unwrap().granted_scopes,
        ["read:users", "write:users"]
    );
    assert_eq!(
        run(&mut state, grant(&["read:users", "write:users"])),
        Ok(0),
        "no change"
    );
    let before = state.sequence();
    match run(&mut state, grant(&["read:users", "admin:everything"])).unwrap_err() {
        DomainError::InvalidArgument { field, rule } => {
            assert_eq!(field, "scopes[1]");
            assert!(
                rule.contains("read:users"),
                "lists what the API declares: {rule}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.sequence(), before);
    assert_eq!(
        run(&mut state, grant(&["read:users"])),
        Ok(1),
        "replaces the grant"
    );
    assert_eq!(
        state.subscription("sub").unwrap().granted_scopes,
        ["read:users"]
    );
    assert!(matches!(
        run(
            &mut state,
            Command::GrantSubscriptionScopes {
                subscription_id: "nope".into(),
                scopes: vec![]
            }
        ),
        Err(DomainError::NotFound { .. })
    ));
}
