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
        "ca" => (clap::Command::new("ca"), Facts::default()),
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
        if !matches!(name.as_str(), "bootstrap" | "pki") {
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
                ["gatehouse", "healthcheck", "grpc", addr, "--cluster-ca", ca] => {
                    assert_eq!(
                        Some(&ca.to_string()),
                        env.get("GATEHOUSE_CLUSTER_CA"),
                        "{name}: the probe trusts the node's own cluster CA"
                    );
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
            let mut parts = mount.split(':');
            let (volume, path) = (parts.next().unwrap(), parts.next().unwrap());
            let read_only = parts.next() == Some("ro");
            if volume.starts_with('.') {
                continue;
            }
            assert!(
                volumes.contains(&volume.to_string()),
                "{name}: volume {volume} is not declared"
            );
            match volume {
                // The certificates: every file a node reads from /pki is under it.
                "pki" => {
                    assert_eq!(path, "/pki", "{name}");
                    assert!(read_only || role == "ca", "{name}: only the CA writes /pki");
                }
                // The admin secret, generated by token-service, read by bootstrap.
                "secrets" => assert_eq!(path, "/secrets", "{name}"),
                _ => assert_eq!(
                    Some(path.to_string()),
                    facts.data_dir,
                    "{name}: {volume} must hold {role}'s data directory"
                ),
            }
        }
        for (var, value) in &env {
            if value.starts_with("/pki/") || value.starts_with("/secrets/") {
                let volume = value.split('/').nth(1).unwrap();
                assert!(
                    strings(service.get("volumes"))
                        .iter()
                        .any(|m| m.starts_with(&format!("{volume}:/{volume}"))),
                    "{name}: {var} points into /{volume}, which it does not mount"
                );
            }
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
        checked, 8,
        "pki, control, token-service, two gateways, two backends and bootstrap checked"
    );
}

fn nats_conf(file: &str) -> String {
    std::fs::read_to_string(format!("{}/nats/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A line of nats.conf: `key: value`.
fn conf_value(conf: &str, key: &str) -> String {
    conf.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} in nats.conf"))
        .trim()
        .to_string()
}

#[test]
fn nats_keeps_its_store_on_a_named_volume_and_is_not_published() {
    let compose = compose();
    let nats = &compose["services"]["nats"];
    assert_eq!(
        strings(nats.get("command")),
        ["-c", "/etc/nats/nats.conf"],
        "nats-server runs nats/nats.conf"
    );
    let mounts = strings(nats.get("volumes"));
    assert!(
        mounts.contains(&"./nats:/etc/nats:ro".to_string()),
        "{mounts:?}"
    );
    let conf = nats_conf("nats.conf");
    assert!(conf.contains("jetstream {"), "JetStream on");
    let store = conf_value(&conf, "store_dir");
    assert!(mounts.contains(&format!("nats-data:{store}")), "{mounts:?}");
    assert!(
        nats.get("ports").is_none(),
        "NATS is reached by the nodes on the compose network only"
    );
}

/// Every plane that crosses the compose network is TLS, each node proves itself with a
/// certificate the `pki` one-shot issued to exactly that node, each node has its own
/// NATS user, and no secret is written in compose.yml.
#[test]
fn compose_nodes_trust_each_other_only_through_the_cluster_ca() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    // What the one-shot issues: role/name per node, and the NATS server's certificate.
    let pki = strings(compose["services"]["pki"].get("command"));
    assert_eq!(&pki[..5], ["gatehouse", "ca", "ensure", "--dir", "/pki"]);
    let issued: Vec<String> = pki
        .windows(2)
        .filter(|w| w[0] == "--node")
        .map(|w| w[1].split(':').next().unwrap().replace('/', "-"))
        .collect();
    assert!(
        pki.windows(2)
            .any(|w| w[0] == "--server" && w[1].starts_with("nats:"))
    );

    let conf = nats_conf("nats.conf");
    assert!(
        conf.contains("verify_and_map: true"),
        "NATS maps certificates to users"
    );
    assert_eq!(conf_value(&conf, "cert_file"), "/pki/server-nats.crt");
    assert_eq!(conf_value(&conf, "ca_file"), "/pki/ca.crt");
    assert!(conf.contains("include users.conf"));
    let users = nats_conf("users.conf");

    let mut nodes = 0;
    for (name, service) in services {
        let name = scalar(name);
        let env = environment(service);
        for (var, value) in &env {
            assert!(
                var != "GATEHOUSE_ADMIN_CLIENT_SECRET" && !value.contains("change-me"),
                "{name} sets a secret in compose.yml: {var}"
            );
            if var.ends_with("_URL") && value.contains("control:") {
                assert!(value.starts_with("https://"), "{name}: {var}={value}");
            }
        }
        let command = strings(service.get("command"));
        let role = match command.first().map(String::as_str) {
            Some(r @ ("control" | "token-service" | "gateway")) => r.to_string(),
            _ => continue,
        };
        nodes += 1;
        let cert = env
            .get("GATEHOUSE_NODE_CERT")
            .unwrap_or_else(|| panic!("{name} has no node certificate"));
        let stem = cert
            .strip_prefix("/pki/")
            .and_then(|c| c.strip_suffix(".crt"))
            .unwrap_or_else(|| panic!("{name}: {cert} is not a /pki certificate"));
        assert!(
            issued.iter().any(|i| i == stem),
            "{name}: {stem} is not issued by pki"
        );
        let node_name = stem
            .strip_prefix(&format!("{role}-"))
            .unwrap_or_else(|| panic!("{name} runs {role} with the certificate of {stem}"));
        assert_eq!(
            env.get("GATEHOUSE_NODE_KEY"),
            Some(&format!("/pki/{stem}.key"))
        );
        assert_eq!(
            env.get("GATEHOUSE_CLUSTER_CA").map(String::as_str),
            Some("/pki/ca.crt")
        );
        // Its NATS user is its certificate.
        assert_eq!(env.get("GATEHOUSE_NATS_CERT"), Some(cert), "{name}");
        assert_eq!(
            env.get("GATEHOUSE_NATS_CA").map(String::as_str),
            Some("/pki/ca.crt")
        );
        assert!(
            users.contains(&format!("\"CN={node_name},OU={role},O=Gatehouse\"")),
            "nats/users.conf has no user for {name}'s certificate"
        );
        // Its snapshots: the bucket it uses is the one its NATS user may use, and no
        // other user may.
        let user = format!("\"CN={node_name},OU={role},O=Gatehouse\"");
        let block = {
            let from = users.find(&user).unwrap();
            let rest = &users[from + user.len()..];
            &rest[..rest.find("user:").unwrap_or(rest.len())]
        };
        if role == "control" || role == "token-service" {
            let bucket = env
                .get("GATEHOUSE_SNAPSHOT_BUCKET")
                .cloned()
                .unwrap_or_else(|| format!("gatehouse-snapshots-{role}"));
            for subject in [format!("$O.{bucket}.>"), format!("OBJ_{bucket}")] {
                assert!(
                    block.contains(&subject),
                    "nats/users.conf lets {name} use its snapshot bucket ({subject})"
                );
                assert_eq!(
                    users.matches(&format!("\"{subject}")).count()
                        + users.matches(&format!(".{subject}")).count(),
                    block.matches(&format!("\"{subject}")).count()
                        + block.matches(&format!(".{subject}")).count(),
                    "only {name} may use {bucket}"
                );
            }
        } else {
            assert!(!block.contains("$O."), "{name} may use no snapshot bucket");
        }
        if role == "gateway" {
            // A gateway's id is its certificate's name.
            if let Some(id) = env.get("GATEHOUSE_GATEWAY_ID") {
                assert_eq!(id, node_name, "{name}");
            }
        }
        if role == "token-service" {
            let file = env
                .get("GATEHOUSE_ADMIN_CLIENT_SECRET_FILE")
                .expect("the admin secret is generated into a file");
            assert!(file.starts_with("/secrets/"));
            let bootstrap = environment(&compose["services"]["bootstrap"]);
            assert_eq!(
                bootstrap.get("GATEHOUSE_ADMIN_CLIENT_SECRET_FILE"),
                Some(file)
            );
        }
    }
    assert_eq!(nodes, 4, "control, token-service and two gateways");
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
