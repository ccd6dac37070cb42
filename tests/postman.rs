//! The Postman collection of the walkthrough, run with newman against the all-in-one.

mod support;

use gatehouse_testkit::process::run;
use support::spawn_up;

#[test]
fn the_postman_collection_passes_against_the_all_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut up, ports) = spawn_up(dir.path(), &data);
    up.wait_for_output("Gatehouse is up.");
    let output = up.output();
    let value = |label: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} not printed:\n{output}"))
            .trim()
            .to_string()
    };
    let (key, secret) = (value("consumer key:"), value("consumer secret:"));

    let collection = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/postman/gatehouse.postman_collection.json"
    );
    let environment = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/postman/local.postman_environment.json"
    );
    let result = run(
        "newman",
        &[
            "run",
            collection,
            "-e",
            environment,
            "--insecure",
            "--color",
            "off",
            "--env-var",
            &format!("token_url=https://localhost:{}", ports.token_https),
            "--env-var",
            &format!("gateway_url=https://localhost:{}", ports.gateway_https),
            "--env-var",
            &format!("consumer_key={key}"),
            "--env-var",
            &format!("consumer_secret={secret}"),
        ],
    );
    let report = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "newman failed:\n{report}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // Four requests, four passing test scripts.
    assert!(report.contains("requests"), "{report}");
    for name in [
        "token issued",
        "users from client-service",
        "items from order-service",
        "missing credentials",
    ] {
        assert!(report.contains(name), "{name} ran:\n{report}");
    }
}
