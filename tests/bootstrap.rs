//! The demo bootstrap against an empty control plane, twice: the second run changes
//! nothing.

mod support;

use gatehouse_testkit::grpc::grpcurl_ok;
use gatehouse_testkit::nats::NatsServer;
use support::ControlPlane;

#[test]
fn bootstrap_seeds_the_demo_once_and_a_second_run_changes_nothing() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), &nats.url(), &[], &[]);

    let first = plane.bootstrap("http://client-service:8000", "http://order-service:8000");
    assert!(first.contains("demo seeded"), "{first}");
    let secret_line = first
        .lines()
        .find(|l| l.contains("consumer secret:"))
        .unwrap()
        .to_string();
    assert!(
        !secret_line.contains("shown only once"),
        "the first run shows the secret: {secret_line}"
    );

    let token = plane.admin_token();
    let snapshot = |token: &str| grpcurl_ok(&plane.admin_target(), token, "GetSnapshot", "{}");
    let before = snapshot(&token);
    let apis = before["apis"].as_array().unwrap();
    assert_eq!(apis.len(), 2);
    assert!(apis.iter().all(|a| a["lifecycle"] == "PUBLISHED"));
    assert_eq!(before["applications"].as_array().unwrap().len(), 1);
    assert_eq!(before["subscriptions"].as_array().unwrap().len(), 2);
    assert_eq!(
        before["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["applicationId"].is_string())
            .count(),
        1,
        "one set of production keys"
    );

    let second = plane.bootstrap("http://client-service:8000", "http://order-service:8000");
    assert!(
        second.contains("demo already seeded: nothing changed"),
        "{second}"
    );
    let key = |out: &str| {
        out.lines()
            .find(|l| l.contains("consumer key:"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(key(&first), key(&second), "the same keys");
    let after = snapshot(&token);
    assert_eq!(
        after["sequence"], before["sequence"],
        "no event appended by the second run"
    );
}
