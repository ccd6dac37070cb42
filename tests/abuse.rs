//! The all-in-one under the measured wrong-secret flood (issue 11): 400 concurrent
//! attackers sending wrong secrets for one client id took `gatehouse up` from 116 MB
//! to 4.5 GB of RSS in 6 s (7.6 GB afterwards), every attempt running argon2 (19 MiB)
//! without bound. Replayed here against `gatehouse up` with the failure budgets set
//! out of reach, so that every attempt asks for argon2 — the case the bounded pool
//! alone must hold: the process's RSS stays within 300 MiB of its baseline during and
//! after the flood (memory is asserted, not time), while the gateway in the same
//! process answers a valid call and the valid client still gets its token.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_testkit::tls::HttpClient;
use http::StatusCode;
use support::{UpPorts, gatehouse};

/// Concurrent attackers, as measured.
const ATTACKERS: usize = 400;

/// How long the flood lasts (the measurement reached 4.5 GB in 6 s).
const FLOOD: Duration = Duration::from_secs(8);

/// The growth allowed over the baseline.
const HEADROOM_KIB: u64 = 300 * 1024;

/// The process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The value after `label` on a line of the banner.
fn banner_value(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("{label:?} not printed:\n{output}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_400_concurrent_wrong_secrets_keeps_rss_bounded_and_the_gateway_answering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = UpPorts::free();
    let args = ports.up_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = gatehouse(
        "gatehouse-up",
        dir.path(),
        &args,
        &[
            ("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_CLIENT", "1000000000"),
            ("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_ADDRESS", "1000000000"),
        ],
    );
    tokio::task::block_in_place(|| up.wait_for_output("Gatehouse is up."));
    let output = up.output();
    let key = banner_value(&output, "consumer key:");
    let secret = banner_value(&output, "consumer secret:");
    let pid = up.id().expect("gatehouse up runs");
    let token_url = format!("https://127.0.0.1:{}/oauth2/token", ports.token_https);
    let users = format!(
        "https://127.0.0.1:{}/client/1.0.0/users",
        ports.gateway_https
    );

    let http = HttpClient::default();
    let reply = http
        .post_form(
            &token_url,
            Some((&key, &secret)),
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let token = reply.json()["access_token"].as_str().unwrap().to_string();
    let reply = http.get(&users, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let baseline = rss_kib(pid);

    // The flood: each attacker its own connection, a wrong secret after another.
    let stop = Arc::new(AtomicBool::new(false));
    let (checked, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let (stop, checked, busy) = (stop.clone(), checked.clone(), busy.clone());
        let (url, key) = (token_url.clone(), key.clone());
        attackers.spawn(async move {
            let http = HttpClient::default();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let wrong = format!("wrong-{i}-{n}");
                let reply = http
                    .post_form(&url, Some((&key, &wrong)), "grant_type=client_credentials")
                    .await;
                match reply.status {
                    StatusCode::UNAUTHORIZED => checked.fetch_add(1, Ordering::Relaxed),
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert_eq!(reply.header("retry-after"), Some("1"));
                        busy.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("a wrong secret answered {other}: {}", reply.text()),
                };
            }
        });
    }

    // During it: the peak RSS, the gateway's answers, the valid client's tokens.
    let started = Instant::now();
    let mut peak = baseline;
    let (mut gateway_ok, mut tokens_ok) = (0, 0);
    while started.elapsed() < FLOOD {
        peak = peak.max(rss_kib(pid));
        let reply = http.get(&users, Some(&token)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "the gateway during the flood: {}",
            reply.text()
        );
        gateway_ok += 1;
        let reply = http
            .post_form(
                &token_url,
                Some((&key, &secret)),
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "the valid client during the flood: {}",
            reply.text()
        );
        tokens_ok += 1;
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(attacker) = attackers.join_next().await {
        attacker.unwrap();
    }
    let after = rss_kib(pid);
    let (checked, busy) = (
        checked.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
    );
    println!(
        "RSS: baseline {} MiB, peak {} MiB, after {} MiB; {checked} wrong secrets checked (401), {busy} refused busy (503); the gateway answered {gateway_ok} calls, the valid client got {tokens_ok} tokens",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(checked > 0, "the flood reached argon2");
    assert!(busy > 0, "the flood filled the pool and its queue");
    assert!(
        peak.saturating_sub(baseline) < HEADROOM_KIB,
        "RSS grew by {} MiB during the flood (baseline {} MiB, peak {} MiB)",
        (peak - baseline) / 1024,
        baseline / 1024,
        peak / 1024
    );
    assert!(
        after.saturating_sub(baseline) < HEADROOM_KIB,
        "RSS stayed {} MiB above the baseline after the flood",
        (after - baseline) / 1024
    );
    // And it still serves.
    let reply = http.get(&users, Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
}
