//! compose.yml checked against the code: every environment variable it sets is one the
//! binary of that service reads (and parses), every published port, health check and
//! data volume matches what that binary listens on, serves and writes, and every
//! `depends_on: service_healthy` points at a service with a health check. The parse
//! resolves YAML anchors and merge keys as Docker Compose does.

use std::collections::BTreeMap;

use clap::{Args, FromArgMatches};
use gatehouse::reference::env_vars;
use serde_yaml::Value;

fn compose() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).expect("compose.yml is valid YAML");
    value.apply_merge().expect("merge keys resolve");
    // Merge keys nested in services (environment: <<: *gatehouse-env).
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().unwrap();
            if let Some(env) = service.get_mut("environment") {
                env.apply_merge().unwrap();
            }
        }
    }
    value
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| s.iter().map(scalar).collect())
        .unwrap_or_default()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service
        .get("environment")
        .and_then(Value::as_mapping)
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

/// Resolves `${VAR:-default}` the way compose does when VAR is unset.
fn interpolate(value: &str) -> String {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
        None => value.to_string(),
    }
}

/// What a service's process listens on and keeps, from its own config parser.
#[derive(Debug, Default)]
struct Facts {
    /// Ports it listens on, and which of them are gRPC (health-checked over gRPC).
    ports: Vec<u16>,
    grpc_ports: Vec<u16>,
    http_health: Option<(u16, &'static str)>,
    data_dir: Option<String>,
}

/// Parses `env` the way the binary would (clap reads the same variables), by turning
/// each variable into its flag.
fn parse<T: Args + FromArgMatches>(role: &str, env: &BTreeMap<String, String>) -> T {
    let command = T::augment_args(clap::Command::new("role")).no_binary_name(true);
    let mut args: Vec<String> = Vec::new();
    for arg in command.get_arguments() {
        if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long())
            && let Some(value) = env.get(&*var.to_string_lossy())
        {
            args.push(format!("--{long}"));
            args.push(interpolate(value));
        }
    }
    let matches = command
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| panic!("{role}: compose's environment does not parse: {e}"));
    T::from_arg_matches(&matches).unwrap()
}

fn facts(role: &str, env: &BTreeMap<String, String>) -> (clap::Command, Facts) {
    match role {
        "control" => {
            let c: gatehouse_control::ControlConfig = parse(role, env);
            let port = c.listen.port();
            (
                gatehouse_control::ControlConfig::augment_args(clap::Command::new("role")),
                Facts {
                    ports: vec![port],
                    grpc_ports: vec![port],
                    data_dir: Some(c.data_dir.display().to_string()),
                    ..Default::default()
                },
            )
        }
        "token-service" => {
            let c: gatehouse_token_service::TokenServiceConfig = parse(role, env);
            (
                gatehouse_token_service::TokenServiceConfig::augment_args(clap::Command::new(
                    "role",
                )),
                Facts {
                    ports: vec![c.listen_https.port(), c.listen_grpc.port()],
                    grpc_ports: vec![c.listen_grpc.port()],
                    data_dir: Some(c.data_dir.display().to_string()),
                    ..Default::default()
                },
            )
        }
        "gateway" => {
            let c: gatehouse_gateway::GatewayConfig = parse(role, env);
            (
                gatehouse_gateway::GatewayConfig::augment_args(clap::Command::new("role")),
                Facts {
                    ports: vec![c.https_listen.port(), c.http_listen.port()],
                    http_health: Some((c.http_listen.port(), "/healthz")),
                    data_dir: Some(c.data_dir.display().to_string()),
                    ..Default::default()
                },
            )
        }
        "bootstrap" => {
            let _: gatehouse::bootstrap::BootstrapConfig = parse(role, env);
            (
                gatehouse::bootstrap::BootstrapConfig::augment_args(clap::Command::new("role")),
                Facts::default(),
            )
        }
        "client-service" | "order-service" => {
            let port: u16 = env.get("PORT").map_or(8000, |p| p.parse().unwrap());
            (
                <service_kit::server::Cli as clap::CommandFactory>::command(),
                Facts {
                    ports: vec![port],
                    http_health: Some((port, "/health")),
                    ..Default::default()
                },
            )
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn compose_matches_what_the_binaries_read_serve_and_keep() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let volumes: Vec<String> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(scalar).collect())
        .unwrap_or_default();
    let names: Vec<String> = services.keys().map(scalar).collect();
    for expected in [
        "nats",
        "jaeger",
        "control",
        "token-service",
        "gateway-1",
        "gateway-2",
        "client-service",
        "order-service",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "service {expected} missing"
        );
    }

    let mut checked = 0;
    for (name, service) in services {
        let name = scalar(name);
        let command = strings(service.get("command"));
        let image = service.get("image").map(scalar).unwrap_or_default();
        let healthcheck = strings(service.get("healthcheck").and_then(|h| h.get("test")));

        // depends_on: service_healthy only on services that have a health check.
        if let Some(deps) = service.get("depends_on").and_then(Value::as_mapping) {
            for (dep, how) in deps {
                let dep = scalar(dep);
                let target = &services[dep.as_str()];
                if how.get("condition").map(scalar).as_deref() == Some("service_healthy") {
                    assert!(
                        target.get("healthcheck").is_some(),
                        "{name} waits for {dep} to be healthy, but {dep} has no health check"
                    );
                }
            }
        }
        if name != "bootstrap" {
            assert!(!healthcheck.is_empty(), "{name} has no health check");
        }
        if image != "gatehouse:local" {
            continue;
        }
        assert!(service.get("build").is_some(), "{name} builds the image");

        let role = match command.first().map(String::as_str) {
            Some("gatehouse") => command[1].clone(),
            Some(binary) => binary.to_string(),
            None => panic!("{name} has no command"),
        };
        let env = environment(service);
        let (clap_command, facts) = facts(&role, &env);
        let known = env_vars(&clap_command);
        for var in env.keys() {
            assert!(
                known.contains(var),
                "{name} ({role}) sets {var}, which {role} does not read; it reads {known:?}"
            );
        }

        for mapping in strings(service.get("ports")) {
            let container: u16 = mapping.rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                facts.ports.contains(&container),
                "{name} publishes {container}, but {role} listens on {:?}",
                facts.ports
            );
        }

        if !healthcheck.is_empty() {
            assert_eq!(
                healthcheck[0], "CMD",
                "{name}: exec-form health check (no shell in the image)"
            );
            match healthcheck[1..]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["gatehouse", "healthcheck", "grpc", addr] => {
                    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                    assert!(
                        facts.grpc_ports.contains(&port),
                        "{name}: gRPC health check on {port}, but {role}'s gRPC is on {:?}",
                        facts.grpc_ports
                    );
                }
                ["gatehouse", "healthcheck", "http", url] => {
                    let (port, path) = facts
                        .http_health
                        .unwrap_or_else(|| panic!("{name}: {role} serves no HTTP health"));
                    assert_eq!(*url, format!("http://127.0.0.1:{port}{path}"), "{name}");
                }
                [binary, "healthcheck"] => {
                    assert_eq!(*binary, role, "{name}: the service's own probe");
                    assert!(facts.http_health.is_some());
                }
                other => panic!("{name}: unexpected health check {other:?}"),
            }
        }

        for mount in strings(service.get("volumes")) {
            let (volume, path) = mount.split_once(':').unwrap();
            if volume.starts_with('.') {
                continue;
            }
            assert!(
                volumes.contains(&volume.to_string()),
                "{name}: volume {volume} is not declared"
            );
            assert_eq!(
                Some(path.to_string()),
                facts.data_dir,
                "{name}: {volume} must hold {role}'s data directory"
            );
        }
        if matches!(role.as_str(), "control" | "token-service") {
            assert!(
                !strings(service.get("volumes")).is_empty(),
                "{name} keeps its data on a named volume"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "control, token-service, two gateways, two backends and bootstrap checked"
    );
}

#[test]
fn nats_keeps_its_store_on_a_named_volume() {
    let compose = compose();
    let nats = &compose["services"]["nats"];
    let command = strings(nats.get("command"));
    let store = command
        .iter()
        .position(|a| a == "--store_dir")
        .map(|i| command[i + 1].clone())
        .expect("--store_dir");
    assert!(command.contains(&"--jetstream".to_string()));
    let mounts = strings(nats.get("volumes"));
    assert!(mounts.contains(&format!("nats-data:{store}")), "{mounts:?}");
}

/// Every metric the dashboard queries is one a node exposes (its `# TYPE` line, or a
/// histogram's `_bucket` series), and Prometheus scrapes every Gatehouse node of compose
/// on the port that node serves `/metrics` on.
#[test]
fn observability_matches_the_metrics_the_nodes_expose() {
    let root = env!("CARGO_MANIFEST_DIR");
    let exposed = format!(
        "{}{}",
        gatehouse_gateway::metrics::Metrics::default().render(),
        gatehouse_node::metrics::render("control", &gatehouse_node::read_model::ReadModel::new())
    );
    let types: Vec<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{root}/observability/grafana/dashboards/gatehouse-gateway.json"
        ))
        .unwrap(),
    )
    .expect("dashboard JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("gatehouse_") {
                    let base = word.strip_suffix("_bucket").unwrap_or(word);
                    assert!(
                        types.contains(&base),
                        "dashboard queries {word}, which no node exposes ({types:?})"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 6, "the dashboard queries the nodes' metrics");

    let prometheus: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/observability/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let targets: Vec<String> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| strings(job["static_configs"][0].get("targets")))
        .collect();
    let compose = compose();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = scalar(name);
        let env = environment(service);
        let command = strings(service.get("command"));
        let port = match command.first().map(String::as_str) {
            Some("gateway") => {
                let c: gatehouse_gateway::GatewayConfig = parse("gateway", &env);
                c.http_listen.port()
            }
            Some("control") | Some("token-service") => {
                let listen = env
                    .get("GATEHOUSE_METRICS_LISTEN")
                    .unwrap_or_else(|| panic!("{name} serves no metrics"));
                listen.rsplit(':').next().unwrap().parse().unwrap()
            }
            _ => continue,
        };
        assert!(
            targets.contains(&format!("{name}:{port}")),
            "Prometheus does not scrape {name}:{port}: {targets:?}"
        );
    }
}
