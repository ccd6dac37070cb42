//! control as a user meets it: the real binary, driven with grpcurl through server
//! reflection and with a tonic client, on the embedded log and on a real nats-server.

mod support;

use std::time::Duration;

use futures::StreamExt;
use gatehouse_proto::admin::{
    ApplyConfigRequest, ChangeLifecycleRequest, CreateApiRequest, CreateApplicationRequest,
    ListApisRequest, UpdateApiRequest, WatchEventsRequest,
};
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, Resource, event_envelope::Event, lifecycle,
};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::eventually_async;
use gatehouse_testkit::tls::HttpClient;
use serde_json::{Value, json};
use support::{ControlProcess, grpcurl_list};
use tonic::Code;

const CLIENT_API: &str = r#"{"definition": {"name": "ClientServiceAPI", "context": "/client", "version": "1.0.0",
  "resources": [{"method": "GET", "path": "/users"}],
  "endpoints": {"production": {"urls": ["http://localhost:8001"]}},
  "subscriptionTiers": ["Gold", "Unlimited"]}}"#;

const ORDER_API: &str = r#"{"definition": {"name": "OrderServiceAPI", "context": "/orders", "version": "1.0.0",
  "resources": [{"method": "GET", "path": "/items"}, {"method": "GET", "path": "/orders"}],
  "endpoints": {"production": {"urls": ["http://localhost:8002"]}},
  "subscriptionTiers": ["Gold", "Unlimited"]}}"#;

fn call(control: &ControlProcess, method: &str, body: &str) -> Value {
    control
        .grpcurl(method, body)
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// What the three listings say, for comparison across a restart.
fn listings(control: &ControlProcess) -> (Value, Value, Value) {
    (
        call(control, "ListApis", "{}"),
        call(control, "ListApplications", "{}"),
        call(control, "ListSubscriptions", "{}"),
    )
}

/// The seed's publisher + devportal steps with grpcurl, then a restart.
async fn seed_flow_survives_restart(control: &mut ControlProcess) {
    let services = grpcurl_list(&control.target());
    assert!(
        services.contains("gatehouse.admin.v1.ControlPlane"),
        "{services}"
    );
    assert!(services.contains("grpc.health.v1.Health"), "{services}");

    let client_api = call(control, "CreateApi", CLIENT_API);
    let order_api = call(control, "CreateApi", ORDER_API);
    assert_eq!(client_api["lifecycle"], "CREATED");
    for api in [&client_api, &order_api] {
        let published = call(
            control,
            "ChangeLifecycle",
            &json!({"apiId": id(api), "target": "PUBLISHED"}).to_string(),
        );
        assert_eq!(published["lifecycle"], "PUBLISHED");
    }
    let app = call(control, "CreateApplication", r#"{"name": "MyPythonApp"}"#);
    assert_eq!(app["name"], "MyPythonApp");
    assert_eq!(app["throttlingTier"], "Unlimited");
    for api in [&client_api, &order_api] {
        let sub = call(
            control,
            "Subscribe",
            &json!({"applicationId": id(&app), "apiId": id(api), "tier": "Gold"}).to_string(),
        );
        assert_eq!(sub["state"], "ACTIVE");
        assert_eq!(sub["tier"], "Gold");
    }

    let before = listings(control);
    let apis = before.0["apis"].as_array().unwrap();
    let mut names: Vec<&str> = apis
        .iter()
        .map(|a| a["definition"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ClientServiceAPI", "OrderServiceAPI"]);
    assert!(apis.iter().all(|a| a["lifecycle"] == "PUBLISHED"));
    let order = apis
        .iter()
        .find(|a| a["definition"]["context"] == "/orders")
        .unwrap();
    assert_eq!(
        order["definition"]["resources"].as_array().unwrap().len(),
        2
    );
    assert_eq!(before.1["applications"].as_array().unwrap().len(), 1);
    let subs = before.2["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert!(
        subs.iter()
            .all(|s| s["applicationId"] == app["id"] && s["tier"] == "Gold")
    );

    control.restart().await;
    assert_eq!(
        listings(control),
        before,
        "state rebuilt from the log after a restart"
    );
}

#[tokio::test]
async fn seed_flow_with_grpcurl_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), None).await;
    seed_flow_survives_restart(&mut control).await;
}

#[tokio::test]
async fn seed_flow_with_grpcurl_on_nats() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut control = ControlProcess::start(dir.path(), Some(&nats.url())).await;
    seed_flow_survives_restart(&mut control).await;
}

#[tokio::test]
async fn bad_requests_get_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), None).await;

    let empty_name = control
        .grpcurl(
            "CreateApi",
            r#"{"definition": {"name": "", "context": "/x", "version": "1.0.0"}}"#,
        )
        .unwrap_err();
    assert!(empty_name.contains("InvalidArgument"), "{empty_name}");
    assert!(
        empty_name.contains("definition.name: must not be empty"),
        "{empty_name}"
    );

    let api = call(&control, "CreateApi", CLIENT_API);
    let duplicate = control.grpcurl("CreateApi", CLIENT_API).unwrap_err();
    assert!(duplicate.contains("AlreadyExists"), "{duplicate}");

    let illegal = control
        .grpcurl(
            "ChangeLifecycle",
            &json!({"apiId": id(&api), "target": "DEPRECATED"}).to_string(),
        )
        .unwrap_err();
    assert!(illegal.contains("FailedPrecondition"), "{illegal}");
    assert!(
        illegal.contains("allowed from CREATED: PUBLISHED, PROTOTYPED"),
        "{illegal}"
    );

    let mut client = control.client().await;
    let cases: Vec<(ApiDefinition, &str)> = vec![
        (
            definition("X", "x", "1.0.0"),
            "definition.context: must start with '/'",
        ),
        (
            definition("X", "/a/../b", "1.0.0"),
            "definition.context: must not contain '..'",
        ),
        (definition("X", "/x", "1 .0"), "definition.version"),
        (
            with_resource(definition("X", "/x", "1.0.0"), "GET", "/users/{id"),
            "definition.resources[0].path",
        ),
        (
            with_resource(definition("X", "/x", "1.0.0"), "FETCH", "/users"),
            "definition.resources[0].method: unknown HTTP method",
        ),
        (
            ApiDefinition {
                subscription_tiers: vec!["Platinum".into()],
                ..definition("X", "/x", "1.0.0")
            },
            "definition.subscription_tiers: unknown SUBSCRIPTION tier \"Platinum\"",
        ),
        (
            ApiDefinition {
                endpoints: Some(Endpoints {
                    production: Some(EndpointGroup {
                        urls: vec!["ftp://files".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..definition("X", "/x", "1.0.0")
            },
            "definition.endpoints.production.urls",
        ),
    ];
    for (definition, message) in cases {
        let status = client
            .create_api(CreateApiRequest {
                definition: Some(definition),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(message),
            "{:?} should contain {message:?}",
            status.message()
        );
    }

    let missing = client
        .change_lifecycle(ChangeLifecycleRequest {
            api_id: "no-such-api".into(),
            target: lifecycle::State::Published as i32,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let unknown_target = client
        .change_lifecycle(ChangeLifecycleRequest {
            api_id: id(&api),
            target: 42,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_target.code(), Code::InvalidArgument);
    let no_app = client
        .create_application(CreateApplicationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(no_app.code(), Code::InvalidArgument);
    assert!(
        no_app.message().starts_with("name:"),
        "{}",
        no_app.message()
    );
    let no_file = client
        .apply_config(ApplyConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(no_file.code(), Code::InvalidArgument);
    assert_eq!(no_file.message(), "file: is required");
}

fn definition(name: &str, context: &str, version: &str) -> ApiDefinition {
    ApiDefinition {
        name: name.into(),
        context: context.into(),
        version: version.into(),
        ..Default::default()
    }
}

fn with_resource(mut d: ApiDefinition, method: &str, path: &str) -> ApiDefinition {
    d.resources.push(Resource {
        method: method.into(),
        path: path.into(),
        ..Default::default()
    });
    d
}

#[tokio::test]
async fn watch_events_streams_history_in_order_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), None).await;
    let api = call(&control, "CreateApi", CLIENT_API);
    call(
        &control,
        "ChangeLifecycle",
        &json!({"apiId": id(&api), "target": "PUBLISHED"}).to_string(),
    );
    call(&control, "CreateApplication", r#"{"name": "MyPythonApp"}"#);

    let mut client = control.client().await;
    let mut events = client
        .watch_events(WatchEventsRequest { from_sequence: 1 })
        .await
        .unwrap()
        .into_inner();
    // Sequence 1 is the admin signing key the test published before control started.
    let key = next(&mut events).await;
    assert_eq!(key.sequence, 1);
    assert!(
        key.subject.starts_with("gatehouse.events.signingkey."),
        "{}",
        key.subject
    );
    let first = next(&mut events).await;
    assert_eq!(first.sequence, 2);
    assert!(
        first.subject.starts_with("gatehouse.events.api."),
        "{}",
        first.subject
    );
    let e = first.event.unwrap();
    assert!(matches!(e.event, Some(Event::ApiCreated(_))));
    assert_eq!(e.aggregate_version, 1);
    assert_eq!(
        e.actor, "test-admin",
        "events record the admin client that caused them"
    );
    assert!(!e.event_id.is_empty());
    assert!(e.time.is_some());
    let second = next(&mut events).await;
    assert_eq!(second.sequence, 3);
    assert!(matches!(
        second.event.unwrap().event,
        Some(Event::ApiLifecycleChanged(_))
    ));
    let third = next(&mut events).await;
    assert_eq!(third.sequence, 4);
    assert!(third.subject.starts_with("gatehouse.events.application."));

    // Live: a change made after the watch started arrives next.
    call(&control, "CreateApi", ORDER_API);
    let live = next(&mut events).await;
    assert_eq!(live.sequence, 5);
    match live.event.unwrap().event {
        Some(Event::ApiCreated(c)) => assert_eq!(c.definition.unwrap().name, "OrderServiceAPI"),
        other => panic!("expected ApiCreated, got {other:?}"),
    }

    // From the middle.
    let mut from_three = client
        .watch_events(WatchEventsRequest { from_sequence: 3 })
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(Duration::from_secs(10), from_three.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.sequence, 3);
}

/// Two control instances on one stream: each follows the log, so both read every
/// change; and their concurrent writes to one API cannot both succeed on stale state.
#[tokio::test]
async fn two_controls_on_one_nats_stream() {
    let nats = NatsServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ControlProcess::start(dir_a.path(), Some(&nats.url())).await;
    let b = ControlProcess::start(dir_b.path(), Some(&nats.url())).await;

    let api = call(&a, "CreateApi", CLIENT_API);
    let api_id = id(&api);
    // b sees a's write (it follows the log; allow it a moment).
    let apis = eventually_async("the second control to see the API", || async {
        Some(call(&b, "ListApis", "{}"))
            .filter(|apis| apis["apis"].as_array().is_some_and(|l| l.len() == 1))
    })
    .await;
    assert_eq!(apis["apis"][0]["id"], api["id"]);

    // Both decide an update of version 1 at once: exactly one may win.
    let update = |description: &str| UpdateApiRequest {
        api_id: api_id.clone(),
        definition: Some(ApiDefinition {
            description: description.into(),
            ..api_definition(&api)
        }),
        expected_version: 1,
    };
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut wins = 0;
    let mut aborted = 0;
    for round in 0..5 {
        let (ra, rb) = tokio::join!(
            ca.update_api(update(&format!("from a {round}"))),
            cb.update_api(update(&format!("from b {round}")))
        );
        for r in [ra, rb] {
            match r {
                Ok(_) => wins += 1,
                Err(s) if s.code() == Code::Aborted => aborted += 1,
                Err(s) => panic!("unexpected status {s:?}"),
            }
        }
        if round == 0 {
            assert_eq!(
                wins, 1,
                "exactly one of two concurrent writers at version 1 wins"
            );
        }
    }
    assert_eq!(
        wins, 1,
        "later rounds still expect version 1 and must all fail"
    );
    assert_eq!(aborted, 9);

    let final_a = ca
        .list_apis(ListApisRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(final_a.apis[0].aggregate_version, 2);
    // b agrees with a.
    eventually_async("the two controls to agree", || {
        let mut cb = cb.clone();
        let final_a = &final_a;
        async move {
            let final_b = cb
                .list_apis(ListApisRequest::default())
                .await
                .unwrap()
                .into_inner();
            if &final_b == final_a {
                Ok(())
            } else {
                Err(format!("b lists {final_b:?}, a {final_a:?}"))
            }
        }
    })
    .await;
}

async fn next(
    events: &mut tonic::Streaming<gatehouse_proto::admin::WatchEventsResponse>,
) -> gatehouse_proto::admin::WatchEventsResponse {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("event")
}

fn api_definition(api: &Value) -> ApiDefinition {
    let d = &api["definition"];
    ApiDefinition {
        name: d["name"].as_str().unwrap().into(),
        context: d["context"].as_str().unwrap().into(),
        version: d["version"].as_str().unwrap().into(),
        ..Default::default()
    }
}

/// No token, a malformed one, an expired one, one signed by a key not on the log, one
/// for the APIs' audience, and one lacking the scope: each is refused with the right
/// status; reflection and health need no token.
#[tokio::test]
async fn admin_calls_need_a_valid_token_with_the_scope() {
    use gatehouse_tokens::{API_AUDIENCE, SigningKeyPair, scopes};

    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), None).await;
    assert!(grpcurl_list(&control.target()).contains("gatehouse.admin.v1.ControlPlane"));

    let list = |token: String| {
        let control = &control;
        async move {
            control
                .client_with(&token)
                .await
                .list_apis(ListApisRequest::default())
                .await
        }
    };
    refused(
        list(String::new()).await,
        Code::Unauthenticated,
        "missing credentials",
    );
    let expired = control.keys.token_at(
        "test-admin",
        &[scopes::ADMIN],
        gatehouse_tokens::ADMIN_AUDIENCE,
        support::now() - 7200,
    );
    refused(list(expired).await, Code::Unauthenticated, "expired");
    let stranger = SigningKeyPair::generate("ES256").unwrap();
    let foreign =
        support::AdminKeys { key: stranger }.token("intruder", gatehouse_tokens::ADMIN_SCOPES);
    refused(
        list(foreign).await,
        Code::Unauthenticated,
        "invalid admin token",
    );
    let app_token = control
        .keys
        .token_at("app", &[scopes::ADMIN], API_AUDIENCE, support::now());
    refused(list(app_token).await, Code::Unauthenticated, "audience");
    refused(
        list("not.a.jwt".into()).await,
        Code::Unauthenticated,
        "invalid admin token",
    );

    // A viewer may list but not create.
    let viewer = control.keys.token("viewer", &[scopes::API_VIEW]);
    assert!(list(viewer.clone()).await.is_ok());
    let mut as_viewer = control.client_with(&viewer).await;
    let denied = as_viewer
        .create_api(CreateApiRequest {
            definition: Some(definition("X", "/x", "1.0.0")),
        })
        .await;
    refused(denied, Code::PermissionDenied, "apim:api_create");

    // A publisher may create, and the event records who did.
    let publisher = control.keys.token("publisher-1", &[scopes::API_CREATE]);
    let api = control
        .client_with(&publisher)
        .await
        .create_api(CreateApiRequest {
            definition: Some(definition("X", "/x", "1.0.0")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(api.created_by, "publisher-1");
}

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    let status = r.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "{:?} should mention {text:?}",
        status.message()
    );
}

/// `/metrics` follows the fold and counts commands by outcome.
#[tokio::test]
async fn metrics_count_the_fold_and_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), None).await;
    call(&control, "CreateApi", CLIENT_API);
    let _ = control.grpcurl("CreateApi", CLIENT_API); // refused: duplicate
    let reply = HttpClient::default()
        .get(&format!("http://{}/metrics", control.metrics_addr), None)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let metrics = reply.text();
    let value = |line_start: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("{line_start} missing:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // The published admin key (1) and the API (2).
    assert_eq!(value("gatehouse_applied_sequence{"), 2, "{metrics}");
    assert_eq!(
        value("gatehouse_commands_total{node=\"control\",outcome=\"applied\"}"),
        1
    );
    assert_eq!(
        value("gatehouse_commands_total{node=\"control\",outcome=\"refused\"}"),
        1
    );
}
