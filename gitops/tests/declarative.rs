//! The declarative file on states built with the domain's own commands: export, then
//! apply on an empty state, reproduces the configuration (same content hash); a second
//! plan changes nothing; a diff after an edit lists exactly that edit; a change made
//! since the plan was read stops its guarded steps; bad files name file, line, field.

use gatehouse_domain::{Command, CustomPolicy, DomainError, State, handle};
use gatehouse_gitops::config::{self, ConfigFile};
use gatehouse_gitops::plan::{self, Action, Plan, PlanOptions, simulate};
use gatehouse_proto::events::{
    ApiDefinition, CorsPolicy, EndpointGroup, Endpoints, Resource, lifecycle,
    throttle_policy::Level,
};
use gatehouse_testkit::domain::run;

fn definition(context: &str, version: &str, default: bool) -> ApiDefinition {
    ApiDefinition {
        name: format!("API {context}"),
        context: context.into(),
        version: version.into(),
        description: "an API".into(),
        resources: vec![
            Resource {
                method: "GET".into(),
                path: "/users".into(),
                scopes: vec!["read:users".into()],
                ..Default::default()
            },
            Resource {
                method: "POST".into(),
                path: "/users/{id}".into(),
                throttling_tier: "Premium".into(),
                ..Default::default()
            },
            Resource {
                method: "GET".into(),
                path: "/health".into(),
                auth_disabled: true,
                ..Default::default()
            },
        ],
        endpoints: Some(Endpoints {
            production: Some(EndpointGroup {
                mode: 1,
                urls: vec!["http://a:8001".into(), "http://b:8001".into()],
            }),
            sandbox: Some(EndpointGroup {
                mode: 0,
                urls: vec!["http://sandbox:8001".into()],
            }),
            timeout_ms: 5000,
        }),
        subscription_tiers: vec!["Gold".into(), "Platinum".into()],
        is_default_version: default,
        cors: Some(CorsPolicy {
            enabled: true,
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into()],
            ..Default::default()
        }),
        tags: vec!["users".into()],
        ..Default::default()
    }
}

/// A configuration of every kind of object, under ids of `prefix`.
fn source(prefix: &str) -> State {
    let mut s = State::new();
    let id = |what: &str| format!("{prefix}-{what}");
    for (name, level) in [("Platinum", Level::Subscription), ("Premium", Level::Api)] {
        run(
            &mut s,
            Command::CreatePolicy(CustomPolicy {
                name: name.into(),
                level,
                request_count: 100,
                unit_seconds: 60,
                unlimited: false,
                description: format!("{name} tier"),
            }),
        );
    }
    for (api, version, default) in [("v1", "1.0.0", false), ("v2", "2.0.0", true)] {
        run(
            &mut s,
            Command::CreateApi {
                api_id: id(api),
                definition: definition("/client", version, default),
            },
        );
        run(
            &mut s,
            Command::ChangeLifecycle {
                api_id: id(api),
                target: lifecycle::State::Published,
                expected_version: None,
            },
        );
    }
    run(
        &mut s,
        Command::CreateApi {
            api_id: id("draft"),
            definition: definition("/draft", "0.1", false),
        },
    );
    run(
        &mut s,
        Command::CreateApplication {
            application_id: id("app"),
            name: "MyPythonApp".into(),
            owner: "admin".into(),
            throttling_tier: "10PerMin".into(),
            description: "the demo".into(),
        },
    );
    for (sub, api, tier) in [("s1", "v1", "Gold"), ("s2", "v2", "Platinum")] {
        run(
            &mut s,
            Command::Subscribe {
                subscription_id: id(sub),
                application_id: id("app"),
                api_id: id(api),
                tier: tier.into(),
            },
        );
    }
    run(
        &mut s,
        Command::GrantSubscriptionScopes {
            subscription_id: id("s1"),
            scopes: vec!["read:users".into()],
        },
    );
    run(
        &mut s,
        Command::BlockSubscription {
            subscription_id: id("s2"),
            production_only: true,
        },
    );
    // v1 is deprecated after being subscribed to: applying the file must subscribe
    // before deprecating.
    run(
        &mut s,
        Command::ChangeLifecycle {
            api_id: id("v1"),
            target: lifecycle::State::Deprecated,
            expected_version: None,
        },
    );
    s
}

/// New ids, unique across plans (as control's uuids are).
fn ids() -> impl FnMut() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    || format!("new-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn plan_error(state: &State, text: &str) -> config::ConfigError {
    let file: ConfigFile = config::parse("g.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    plan::plan(
        state,
        "g.yaml",
        text,
        &file,
        PlanOptions::default(),
        &mut ids(),
    )
    .unwrap_err()
}

fn plan_of(state: &State, text: &str, prune: bool) -> Plan {
    let file = config::parse("gatehouse.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    plan::plan(
        state,
        "gatehouse.yaml",
        text,
        &file,
        PlanOptions { prune },
        &mut ids(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a plan's steps, each guarded, as control would.
fn apply(state: &mut State, plan: &Plan) {
    for step in &plan.steps {
        simulate(state, step.guarded()).unwrap_or_else(|e| panic!("{}: {e}", step.object));
    }
}

#[test]
fn export_then_apply_on_an_empty_state_reproduces_the_configuration() {
    let source = source("src");
    let text = config::to_yaml(&config::export(&source));
    assert!(!text.contains("src-"), "no ids in the file:\n{text}");
    let mut target = State::new();
    let plan = plan_of(&target, &text, false);
    assert!(plan.changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(plan.result_content_hash, source.content_hash());
    apply(&mut target, &plan);
    assert_eq!(
        target.content_hash(),
        source.content_hash(),
        "same content hash"
    );
    assert_eq!(config::export(&target), config::export(&source));

    let again = plan_of(&target, &text, true);
    assert!(
        again.steps.is_empty(),
        "a second apply changes nothing: {:?}",
        again.steps
    );
    assert!(again.changes.is_empty());
    assert_eq!(plan::render(&again).trim(), "no change");
}

#[test]
fn a_diff_after_an_edit_lists_exactly_that_edit() {
    let state = source("src");
    let text = config::to_yaml(&config::export(&state));
    let edited = text.replacen("- read:users", "- read:users\n    - write:users", 1);
    assert_ne!(edited, text);
    let plan = plan_of(&state, &edited, false);
    assert_eq!(plan.changes.len(), 1, "{}", plan::render(&plan));
    let change = &plan.changes[0];
    assert_eq!(
        (change.action, change.kind, change.key.as_str()),
        (Action::Update, "api", "/client 1.0.0")
    );
    assert_eq!(change.fields.len(), 1, "{:?}", change.fields);
    assert_eq!(change.fields[0].field, "resources[0].scopes");
    assert_eq!(plan.steps.len(), 1);
    assert!(plan::render(&plan).contains("~ update api /client 1.0.0\n    resources[0].scopes: [\"read:users\"] -> [\"read:users\",\"write:users\"]"));
}

#[test]
fn tiers_states_and_prunes_are_planned_as_commands() {
    let state = source("src");
    let mut file = config::export(&state);
    // v1 is deprecated: no new subscription to it, so no tier change either.
    let mut deprecated = file.clone();
    deprecated.applications[0].subscriptions[0].tier = "Platinum".into();
    let e = plan_error(&state, &config::to_yaml(&deprecated));
    assert!(e.message.contains("DEPRECATED"), "{e}");
    file.applications[0].subscriptions[1].tier = "Gold".into(); // re-subscribes
    file.applications[0].subscriptions[1].state = config::SubscriptionStateName::Active;
    file.applications[0].throttling_tier = "20PerMin".into();
    file.policies[0].request_count = 500;
    file.apis.retain(|a| a.context != "/draft");
    let text = config::to_yaml(&file);
    let kept = plan_of(&state, &text, false);
    assert!(
        kept.notes
            .iter()
            .any(|n| n.contains("api /draft 0.1") && n.contains("--prune"))
    );
    let pruned = plan_of(&state, &text, true);
    let deleted: Vec<&str> = pruned
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(deleted, ["/draft 0.1"]);
    let mut after = state.clone();
    apply(&mut after, &pruned);
    assert_eq!(config::export(&after), file, "the state is the file");
    assert!(plan_of(&after, &text, true).steps.is_empty());
}

#[test]
fn a_change_since_the_plan_was_read_stops_the_guarded_step() {
    let mut state = source("src");
    let text = config::to_yaml(&config::export(&state)).replace("10PerMin", "50PerMin");
    let plan = plan_of(&state, &text, false);
    assert_eq!(plan.steps.len(), 1);
    // Someone else changes the configuration before the step runs.
    run(
        &mut state,
        Command::UpdateApplication {
            application_id: "src-app".into(),
            throttling_tier: "20PerMin".into(),
            description: "changed meanwhile".into(),
        },
    );
    let refused = handle(&state, plan.steps[0].guarded()).unwrap_err();
    assert!(matches!(refused, DomainError::Concurrent(_)), "{refused}");
}

#[test]
fn refused_commands_name_file_line_and_field_and_plan_nothing() {
    let api = "format: gatehouse/v1\napis:\n  - context: /a\n    version: '1'\n    name: A\n    resources:\n      - method: GET\n        path: /x\n        throttlingTier: Nope\n";
    let e = plan_error(&State::new(), api);
    assert_eq!(
        (e.line, e.field.as_str()),
        (9, "apis[0].resources[0].throttlingTier"),
        "{e}"
    );
    assert!(e.to_string().starts_with("g.yaml:9:"), "{e}");

    let route = api.replace(
        "path: /x\n        throttlingTier: Nope",
        "path: /files/{name}.json",
    );
    let e = plan_error(&State::new(), &route);
    assert_eq!(
        (e.line, e.field.as_str()),
        (8, "apis[0].resources[0].path"),
        "{e}"
    );

    let sub = "format: gatehouse/v1\napplications:\n  - owner: admin\n    name: App\n    subscriptions:\n      - {context: /nope, version: '1', tier: Gold}\n";
    let e = plan_error(&State::new(), sub);
    assert_eq!(
        (e.line, e.field.as_str()),
        (6, "applications[0].subscriptions[0]"),
        "{e}"
    );
    assert!(e.message.contains("no API /nope 1"), "{e}");

    let twice = "format: gatehouse/v1\napis:\n  - {context: /a, version: '1', name: A}\n  - {context: /a, version: '1', name: B}\n";
    let e = plan_error(&State::new(), twice);
    assert_eq!((e.line, e.field.as_str()), (4, "apis[1]"), "{e}");

    let retired = source("src");
    let mut file = config::export(&retired);
    file.apis[0].lifecycle = config::LifecycleName::Published; // v1: DEPRECATED -> PUBLISHED
    let text = config::to_yaml(&file);
    let e = plan_error(&retired, &text);
    assert_eq!(e.field, "apis[0].lifecycle", "{e}");
    assert!(
        e.message.contains("cannot go from DEPRECATED to PUBLISHED"),
        "{e}"
    );
}

/// Every property the schema declares, as paths with `[]` for array items.
fn schema_paths(
    schema: &serde_json::Value,
    node: &serde_json::Value,
    at: &str,
    out: &mut Vec<String>,
) {
    if let Some(reference) = node.get("$ref").and_then(|r| r.as_str()) {
        let target = schema.pointer(reference.trim_start_matches('#')).unwrap();
        return schema_paths(schema, target, at, out);
    }
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (key, sub) in props {
            let path = format!("{at}.{key}");
            out.push(path.clone());
            schema_paths(schema, sub, &path, out);
        }
    }
    if let Some(items) = node.get("items") {
        schema_paths(schema, items, &format!("{at}[]"), out);
    }
}

/// Every field a file holds, the same way.
fn value_paths(value: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, sub) in map {
                let path = format!("{at}.{key}");
                out.push(path.clone());
                value_paths(sub, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                value_paths(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_shipped_json_schema_describes_exactly_the_format() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../gatehouse.schema.json")).unwrap();
    let mut declared = Vec::new();
    schema_paths(&schema, &schema, "", &mut declared);
    // A file using every field: the source's export with the fields it leaves at
    // their defaults set.
    let mut file = config::export(&source("src"));
    file.policies.push(config::PolicySpec {
        name: "Free".into(),
        level: config::LevelName::Application,
        unlimited: true,
        request_count: 1,
        unit_seconds: 1,
        description: String::new(),
    });
    let api = &mut file.apis[0];
    api.api_throttling_tier = "Premium".into();
    api.cache = Some(config::CacheSpec {
        enabled: true,
        ttl_seconds: 1,
    });
    api.max_request_body_bytes = 1;
    if let Some(sandbox) = api.endpoints.as_mut().and_then(|e| e.sandbox.as_mut()) {
        sandbox.mode = config::ModeName::Failover;
    }
    if let Some(cors) = api.cors.as_mut() {
        cors.allow_headers = vec!["x".into()];
        cors.allow_credentials = true;
        cors.max_age_seconds = 1;
    }
    let mut used = Vec::new();
    value_paths(&serde_json::to_value(&file).unwrap(), "", &mut used);
    used.sort();
    used.dedup();
    declared.sort();
    declared.dedup();
    assert_eq!(used, declared, "the schema and the format differ");
}

#[test]
fn an_interrupted_apply_converges_when_run_again() {
    let source = source("src");
    let text = config::to_yaml(&config::export(&source));
    let mut target = State::new();
    let plan = plan_of(&target, &text, false);
    // control stops after half the steps: those stay written.
    for step in &plan.steps[..plan.steps.len() / 2] {
        simulate(&mut target, step.guarded()).unwrap();
    }
    assert_ne!(target.content_hash(), source.content_hash());
    let rest = plan_of(&target, &text, false);
    assert!(rest.steps.len() < plan.steps.len(), "goes on from there");
    apply(&mut target, &rest);
    assert_eq!(target.content_hash(), source.content_hash());
}
