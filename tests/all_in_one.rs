//! The newcomer's first minute: `gatehouse up` (what `cargo run --release -- up` runs),
//! its printed lines run as they are, a restart, SIGINT during a burst of admin calls,
//! and the one-line errors.

mod support;

use std::path::Path;

use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use gatehouse_proto::admin::{CreateApplicationRequest, ListApplicationsRequest};
use gatehouse_testkit::free_port;
use gatehouse_testkit::process::{Process, run};
use support::{UpPorts, spawn_up};

/// `gatehouse up` on free ports.
struct Up {
    node: Process,
    ports: UpPorts,
}

fn up(dir: &Path, data: &Path) -> Up {
    let (node, ports) = spawn_up(dir, data);
    Up { node, ports }
}

/// The lines of the banner between `start` and the next blank line, trimmed.
fn block<'a>(output: &'a str, start: &str) -> Vec<&'a str> {
    let from = output
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not printed:\n{output}"));
    output[from..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect()
}

fn bash(script: &str) -> String {
    let output = run("bash", &["-c", &format!("set -euo pipefail\n{script}")]);
    assert!(
        output.status.success(),
        "script failed:\n{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn printed_lines_work_and_a_restart_reuses_the_data_without_reseeding() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = up(dir.path(), &data);
    up.node.wait_for_output("Gatehouse is up.");
    let first = up.node.output();
    assert!(
        first.contains("First start: the demo is seeded."),
        "{first}"
    );
    for node in [
        "control ready on",
        "token-service ready on",
        "gateway gateway-1 ready on",
        "client-service ready on",
        "order-service ready on",
    ] {
        assert_eq!(first.matches(node).count(), 1, "{node:?} once:\n{first}");
    }

    // The probes compose's health checks use answer for every node, and fail on a
    // port where nothing listens.
    let probe = |args: &[&str]| run(env!("CARGO_BIN_EXE_gatehouse"), args).status.success();
    let local = |p: u16| format!("127.0.0.1:{p}");
    let ca = data.join("pki/ca.crt").display().to_string();
    assert!(
        probe(&[
            "healthcheck",
            "grpc",
            &local(up.ports.control),
            "--cluster-ca",
            &ca
        ]),
        "control's gRPC health"
    );
    assert!(
        !probe(&["healthcheck", "grpc", &local(up.ports.control)]),
        "control's port speaks TLS only"
    );
    assert!(
        probe(&[
            "healthcheck",
            "grpc",
            &local(up.ports.token_grpc),
            "--cluster-ca",
            &ca
        ]),
        "token-service's gRPC health"
    );
    assert!(
        probe(&[
            "healthcheck",
            "http",
            &format!("http://{}/healthz", local(up.ports.gateway_http))
        ]),
        "gateway /healthz"
    );
    assert!(
        !probe(&["healthcheck", "grpc", &local(free_port())]),
        "nothing listening: unhealthy"
    );

    // The seed's commands, exactly as printed.
    let calls = block(&first, "Call the APIs through the gateway").join("\n");
    let out = bash(&calls);
    assert!(
        out.contains("\"name\":\"Ada Lovelace\""),
        "users from client-service: {out}"
    );
    assert!(
        out.contains("\"sku\":\"BOOK-001\""),
        "items from order-service: {out}"
    );

    // The grpcurl lines, then the new version answers through the gateway.
    let admin = block(&first, "Administer with grpcurl").join("\n");
    let token_line = block(&first, "Call the APIs through the gateway")[0];
    let out = bash(&format!("{token_line}\n{admin}"));
    assert!(out.contains("gatehouse.admin.v1.ControlPlane"), "{out}");
    assert!(out.contains("\"lifecycle\": \"PUBLISHED\""), "{out}");
    assert!(out.contains("\"version\": \"2.0.0\""), "{out}");
    assert!(
        out.contains("\"name\":\"Ada Lovelace\""),
        "v2 answers through the gateway: {out}"
    );

    let key_line = first
        .lines()
        .find(|l| l.contains("consumer key:"))
        .unwrap()
        .trim()
        .to_string();
    let secret_line = first
        .lines()
        .find(|l| l.contains("consumer secret:"))
        .unwrap()
        .trim()
        .to_string();

    // Ctrl-C stops everything cleanly.
    let status = up.node.interrupt();
    assert!(
        status.success(),
        "exit on SIGINT: {status}\n{}",
        up.node.output()
    );
    assert!(up.node.output().contains("stopped"));

    // A second start: same key, no secret, no re-seeding; the old secret still works.
    up.node.restart();
    up.node.wait_for_output_count("Gatehouse is up.", 2);
    let second = up.node.output();
    let second = &second[second.rfind("Gatehouse all-in-one").unwrap()..];
    assert!(
        second.contains("The demo was seeded at first start."),
        "{second}"
    );
    assert!(
        second.contains(&key_line),
        "same consumer key printed:\n{second}"
    );
    assert!(
        !second.contains(&secret_line),
        "the secret is not shown again:\n{second}"
    );
    let out = bash(&calls);
    assert!(
        out.contains("Ada Lovelace") && out.contains("BOOK-001"),
        "{out}"
    );
}

/// SIGINT during a burst of admin calls, then a restart: every acknowledged change is
/// still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_burst_of_admin_calls_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = up(dir.path(), &data);
    let node = &mut up.node;
    tokio::task::block_in_place(|| node.wait_for_output("Gatehouse is up."));
    let output = up.node.output();
    let admin_line = output
        .lines()
        .find(|l| l.trim_start().starts_with("ADMIN_TOKEN="))
        .unwrap();
    let token = bash(&format!("{}\necho -n \"$ADMIN_TOKEN\"", admin_line.trim()));
    let control = gatehouse_testkit::grpc::Target::new(
        format!("127.0.0.1:{}", up.ports.control),
        data.join("pki/ca.crt"),
    );

    let burst = {
        let (control, token) = (control.clone(), token.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let channel = gatehouse_testkit::grpc::channel(&control).await;
            let mut client = ControlPlaneClient::new(channel);
            for i in 0..100_000 {
                let name = format!("burst-app-{i}");
                let mut request = tonic::Request::new(CreateApplicationRequest {
                    name: name.clone(),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                match client.create_application(request).await {
                    Ok(_) => acknowledged.push(name),
                    Err(_) => break,
                }
            }
            acknowledged
        })
    };
    // Let the burst run, then interrupt.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = tokio::task::block_in_place(|| up.node.interrupt());
    assert!(status.success(), "{status}");
    let acknowledged = burst.await.unwrap();
    assert!(
        acknowledged.len() > 5,
        "the burst got going: {}",
        acknowledged.len()
    );

    up.node.restart();
    let node = &mut up.node;
    tokio::task::block_in_place(|| node.wait_for_output_count("Gatehouse is up.", 2));
    let channel = gatehouse_testkit::grpc::channel(&control).await;
    let mut client = ControlPlaneClient::new(channel);
    let mut request = tonic::Request::new(ListApplicationsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let names: std::collections::HashSet<String> = client
        .list_applications(request)
        .await
        .unwrap()
        .into_inner()
        .applications
        .into_iter()
        .map(|a| a.name)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged changes lost: {lost:?}",
        lost.len()
    );
}

#[test]
fn a_port_in_use_an_unwritable_data_dir_and_a_corrupt_log_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();

    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let out = run(
        env!("CARGO_BIN_EXE_gatehouse"),
        &[
            "up",
            "--data-dir",
            dir.path().join("a").to_str().unwrap(),
            "--control-listen",
            &format!("127.0.0.1:{busy_port}"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{busy_port} for control's gRPC admin API"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A data directory that cannot be created (a file is in the way).
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_gatehouse"),
        &["up", "--data-dir", file.join("data").to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot create the data directory"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A corrupt event log: garbage before valid-looking data.
    let data = dir.path().join("corrupt");
    std::fs::create_dir_all(data.join("eventlog")).unwrap();
    std::fs::write(data.join("eventlog").join("events.log"), vec![0xAB; 4096]).unwrap();
    let args = UpPorts::free().up_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(env!("CARGO_BIN_EXE_gatehouse"), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot open the event log"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
