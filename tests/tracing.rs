//! Traces across every hop, received the way Jaeger receives them: a real OTLP/gRPC
//! trace service (tonic, decoding the real export) that the nodes export to.
//!
//! - client → gateway → client-service: the gateway's spans and the backend's carry the
//!   caller's trace id, with proper parent links.
//! - admin call → control → event on NATS → each gateway replica's "apply event" span,
//!   all in the admin call's trace.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_testkit::grpc::grpcurl_ok;
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::poll::{Poll, eventually};
use gatehouse_testkit::ports::{free_port, is_listening};
use gatehouse_testkit::process::run_ok;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use support::{ControlPlane, Gateway, curl_json, gatehouse};

/// A span as received, with the resource it came from.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource: HashMap<String, String> = resource_spans
                .resource
                .map(|r| {
                    r.attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(&kv.value)))
                        .collect()
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: resource.get("service.name").cloned().unwrap_or_default(),
                        instance: resource
                            .get("service.instance.id")
                            .cloned()
                            .unwrap_or_default(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, text(&kv.value)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    fn snapshot(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done(spans)` holds (spans are exported in batches).
    fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        Poll::new(what)
            .every(Duration::from_millis(100))
            .context(|| {
                let summary: Vec<String> = self
                    .snapshot()
                    .iter()
                    .map(|s| {
                        format!(
                            "{}[{}] {} trace={} parent={}",
                            s.service, s.instance, s.name, s.trace_id, s.parent
                        )
                    })
                    .collect();
                format!("received:\n{}", summary.join("\n"))
            })
            .until(|| Some(self.snapshot()).filter(|spans| done(spans)))
    }
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Starts the OTLP receiver on a free port of its own runtime thread.
fn start_collector() -> (Collector, u16) {
    let collector = Collector::default();
    let port = free_port();
    let server = collector.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(server))
                    .serve(SocketAddr::from(([127, 0, 0, 1], port)))
                    .await
                    .unwrap();
            });
    });
    eventually("the OTLP receiver to listen", || is_listening(port));
    (collector, port)
}

#[test]
fn one_trace_per_call_across_gateway_and_backend_and_per_change_across_replicas() {
    let (collector, otlp) = start_collector();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{otlp}");
    let otel = |service: &'static str, instance: &str| -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
            ("OTEL_SERVICE_NAME".into(), service.into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES".into(),
                format!("service.instance.id={instance}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]
    };
    let spawn = |name: &str, args: Vec<String>, envs: Vec<(String, String)>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        gatehouse(name, dir.path(), &args, &envs)
    };
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let ports: HashMap<&str, u16> = [("client", free_port())].into_iter().collect();

    let (c, t) = (
        otel("control", "control"),
        otel("token-service", "token-service"),
    );
    let plane = ControlPlane::start(dir.path(), &nats.url(), &as_refs(&c), &as_refs(&t));
    let mut client = spawn(
        "client-service",
        vec![
            "client-service".into(),
            "--port".into(),
            ports["client"].to_string(),
        ],
        otel("client-service", "client-service"),
    );
    client.wait_until("listening", || is_listening(ports["client"]));
    let gateways: Vec<Gateway> = ["gw1", "gw2"]
        .iter()
        .map(|g| {
            let envs = otel("gateway", g);
            Gateway::start(
                dir.path(),
                &plane.pki,
                g,
                plane.admin,
                Some(&nats.url()),
                &[],
                &as_refs(&envs),
            )
        })
        .collect();

    // Seed through the admin API (bootstrap), pointing ClientServiceAPI at client-service.
    let out = plane.bootstrap(
        &format!("http://{}", addr(ports["client"])),
        "http://127.0.0.1:9",
    );
    let value = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap()
            .trim()
            .to_string()
    };
    let (key, secret) = (value("consumer key:"), value("consumer secret:"));
    let token = curl_json(&[
        "-d",
        "grant_type=client_credentials",
        "-u",
        &format!("{key}:{secret}"),
        &plane.token_url(),
    ])["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // 1. A call with the caller's trace context, through each replica once it serves.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let url = format!("{}/client/1.0.0/users", gateways[0].https());
    let serves = || {
        let status = run_ok(
            "curl",
            &[
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-H",
                &format!("traceparent: {traceparent}"),
                &url,
            ],
        );
        if status == "200" {
            Ok(())
        } else {
            Err(format!("it answers {status}"))
        }
    };
    Poll::new("the gateway to serve the API")
        .every(Duration::from_millis(200))
        .until(serves);
    let spans = collector.wait(
        "gateway and client-service spans in the caller's trace",
        |spans| {
            let in_trace = |service: &str| {
                spans
                    .iter()
                    .filter(|s| s.trace_id == trace_id && s.service == service)
                    .count()
            };
            // The request span, six phases, and the backend's span.
            in_trace("gateway") >= 7 && in_trace("client-service") >= 1
        },
    );
    let in_trace: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let by_id: HashMap<&str, &Received> =
        in_trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    // The gateway's request span is the caller's child.
    let root = in_trace
        .iter()
        .find(|s| s.service == "gateway" && s.parent == caller_span)
        .unwrap_or_else(|| {
            panic!("no gateway span whose parent is the caller's span: {in_trace:#?}")
        });
    // The backend's span hangs under a gateway span of the same trace.
    let backend = in_trace
        .iter()
        .find(|s| s.service == "client-service")
        .unwrap();
    let parent = by_id.get(backend.parent.as_str()).unwrap_or_else(|| {
        panic!(
            "client-service's parent {} is not a span of the trace: {in_trace:#?}",
            backend.parent
        )
    });
    assert_eq!(
        (parent.service.as_str(), parent.name.as_str()),
        ("gateway", "upstream"),
        "the backend's parent is the gateway's upstream span"
    );
    // Each phase is a child of the request span.
    for phase in [
        "authenticate",
        "subscription",
        "scopes",
        "throttle",
        "upstream",
    ] {
        let span = in_trace
            .iter()
            .find(|s| s.service == "gateway" && s.name == phase)
            .unwrap_or_else(|| panic!("no {phase} span: {in_trace:#?}"));
        assert_eq!(
            span.parent, root.span_id,
            "{phase} is a child of the request span"
        );
    }
    // The request span carries what an operator filters by.
    let attribute = |key: &str| root.attributes.get(key).cloned().unwrap_or_default();
    assert_eq!(
        attribute("gatehouse.api"),
        "ClientServiceAPI",
        "{:?}",
        root.attributes
    );
    assert_eq!(attribute("gatehouse.api_version"), "1.0.0");
    assert_eq!(attribute("gatehouse.application"), "MyPythonApp");
    assert_eq!(attribute("http.response.status_code"), "200");
    assert_eq!(attribute("gatehouse.cache_hit"), "false");

    // 2. An admin change (publish a new version) reaches every replica in one trace.
    let admin_token = plane.admin_token();
    let apis = grpcurl_ok(
        &plane.admin_target(),
        &admin_token,
        "ListApis",
        r#"{"context": "/client"}"#,
    );
    let source = apis["apis"][0]["id"].as_str().unwrap().to_string();
    let v2 = grpcurl_ok(
        &plane.admin_target(),
        &admin_token,
        "CreateApiVersion",
        &format!(r#"{{"sourceApiId": "{source}", "newVersion": "2.0.0"}}"#),
    );
    let publish_trace = "0af7651916cd43dd8448eb211c80319c";
    let auth = format!("authorization: Bearer {admin_token}");
    let tp = format!("traceparent: 00-{publish_trace}-b7ad6b7169203331-01");
    let body = format!(
        r#"{{"apiId": "{}", "target": "PUBLISHED"}}"#,
        v2["id"].as_str().unwrap()
    );
    let control = plane.admin_target();
    let ca = control.ca.display().to_string();
    run_ok(
        "grpcurl",
        &[
            "-cacert",
            &ca,
            "-H",
            &auth,
            "-H",
            &tp,
            "-d",
            &body,
            &control.addr,
            "gatehouse.admin.v1.ControlPlane/ChangeLifecycle",
        ],
    );
    let spans = collector.wait(
        "control's span, token-service's and both replicas' apply spans in the publish trace",
        |spans| {
            let t: Vec<&Received> = spans
                .iter()
                .filter(|s| s.trace_id == publish_trace)
                .collect();
            let replicas: std::collections::HashSet<&str> = t
                .iter()
                .filter(|s| s.service == "gateway")
                .map(|s| s.instance.as_str())
                .collect();
            t.iter().any(|s| s.service == "control")
                && t.iter().any(|s| s.service == "token-service")
                && replicas.contains("gw1")
                && replicas.contains("gw2")
        },
    );
    let t: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == publish_trace)
        .collect();
    let control_ids: Vec<&str> = t
        .iter()
        .filter(|s| s.service == "control")
        .map(|s| s.span_id.as_str())
        .collect();
    for replica in ["gw1", "gw2"] {
        let apply = t
            .iter()
            .find(|s| s.service == "gateway" && s.instance == replica)
            .unwrap();
        assert!(
            control_ids.contains(&apply.parent.as_str())
                || t.iter().any(|s| s.span_id == apply.parent),
            "{replica}'s apply span hangs in the trace: {t:#?}"
        );
    }
    assert!(
        t.iter().any(|s| s.service == "token-service"),
        "token-service applies it too: {t:#?}"
    );
}

/// With `GATEHOUSE_LOG_FORMAT=json`, a log line inside a traced request carries the
/// request's trace id.
#[test]
fn json_log_lines_carry_the_trace_id() {
    let (_collector, otlp) = start_collector();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{otlp}");
    let mut backend = gatehouse(
        "client-service",
        dir.path(),
        &["client-service", "--port", &port.to_string()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("GATEHOUSE_LOG_FORMAT", "json"),
        ],
    );
    backend.wait_until("listening", || is_listening(port));
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    run_ok(
        "curl",
        &[
            "-s",
            "-H",
            &format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-01"),
            &format!("http://127.0.0.1:{port}/users"),
        ],
    );
    backend.wait_for_output(&format!("\"trace_id\":\"{trace_id}\""));
    let output = backend.output();
    let handled = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["fields"]["message"] == "handled")
        .unwrap_or_else(|| panic!("no JSON 'handled' line:\n{output}"));
    assert_eq!(handled["span"]["trace_id"], trace_id, "{handled}");
}
