//! The README tells the truth: its configuration reference is the code's, its quick
//! start is what CI runs, and its walkthrough runs as written against `gatehouse up`.

mod support;

use support::gatehouse;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn the_configuration_reference_is_generated_from_the_code() {
    let readme = readme();
    let start = "<!-- config-reference:start -->\n";
    let from = readme.find(start).expect("start marker") + start.len();
    let to = readme
        .find("<!-- config-reference:end -->")
        .expect("end marker");
    assert_eq!(
        &readme[from..to],
        gatehouse::reference::markdown(),
        "README's configuration reference is stale: regenerate it with `cargo run -- config-reference`"
    );
}

#[test]
fn the_quick_start_is_two_commands_and_ci_runs_the_second() {
    let readme = readme();
    assert!(readme.contains("cargo run --release -- up "), "run command");
    assert!(readme.contains("scripts/test.sh "), "test command");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test.sh"),
        ".ci/run runs the README's test command:\n{ci}"
    );
}

/// The ```sh blocks of the walkthrough, in order, as one script.
fn walkthrough(admin_secret: &str) -> String {
    let readme = readme();
    let mut script = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.trim_start() == "```sh" {
            inside = true;
        } else if inside && line.trim_start() == "```" {
            inside = false;
        } else if inside {
            if line.starts_with("ADMIN_SECRET=") {
                script.push_str(&format!("ADMIN_SECRET={admin_secret}\n"));
            } else {
                script.push_str(line);
                script.push('\n');
            }
        }
    }
    script
}

/// Runs on the standard ports, as the README says: nothing else may hold them.
#[test]
fn the_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("walkthrough");
    let mut up = gatehouse(
        "gatehouse-up",
        dir.path(),
        &[
            "up",
            "--no-demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--client-service-port",
            "8001",
            "--order-service-port",
            "8002",
        ],
        &[],
    );
    up.wait_for_output("Gatehouse is up, empty");
    let output = up.output();
    let secret = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("client secret:"))
        .expect("admin secret printed")
        .trim()
        .to_string();
    let script = walkthrough(&secret);
    assert!(script.contains("GenerateKeys") && script.contains("/orders/1.0.0/items"));
    // Run where `./walkthrough` is the data directory, as the README says.
    let result = std::process::Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(dir.path())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "the walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("\"access_token\""),
        "the seed's token command: {stdout}"
    );
    assert!(
        stdout.contains("\"name\":\"Ada Lovelace\""),
        "users through the gateway: {stdout}"
    );
    assert!(
        stdout.contains("\"sku\":\"BOOK-001\""),
        "items through the gateway: {stdout}"
    );
    assert!(
        stdout.contains("\"code\":900902"),
        "no token: WSO2's error: {stdout}"
    );
    assert!(
        stdout.contains("\"grantedScopes\": [\n    \"read:users\"\n  ]"),
        "the scope granted to the subscription: {stdout}"
    );
    assert!(
        stdout.contains("\"scope\":\"read:users\""),
        "a token asked for the granted scope carries it: {stdout}"
    );
}
