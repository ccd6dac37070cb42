//! The NATS log on a cluster of three (stream replicas 3) while nodes die: writers keep
//! appending (a [`Burst`]), the test kills a node mid-burst, and every acknowledged
//! append must be in the log exactly once, and appends must resume.
//!
//! Times (the longest pause between two acks) are printed, never asserted: the figures
//! are `examples/failover.rs`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_eventlog::{EventLog, NatsLog, NatsLogConfig};
use gatehouse_testkit::chaos::Burst;
use gatehouse_testkit::nats::NatsCluster;

/// A generous bound for writes to resume on a loaded machine (a leader election takes
/// 4 to 9 s in nats-server 2.9).
const RESUME: Duration = Duration::from_secs(45);

async fn connect(cluster: &NatsCluster, name: &str) -> NatsLog {
    tokio::time::timeout(
        Duration::from_secs(30),
        NatsLog::connect(NatsLogConfig {
            replicas: 3,
            client_name: name.to_string(),
            ..NatsLogConfig::new(cluster.urls())
        }),
    )
    .await
    .expect("connect hung")
    .expect("connect to the cluster")
}

/// Runs a burst, applies `chaos` once some appends are in, waits for appends to resume,
/// and checks the log; returns the longest pause after the chaos.
async fn burst_through(
    cluster: &mut NatsCluster,
    name: &str,
    chaos: impl FnOnce(&mut NatsCluster, &NatsLog) -> String,
) -> Duration {
    let log = connect(cluster, name).await;
    let burst = Burst::start(Arc::new(log.clone()), 3, Duration::from_millis(5));
    burst.wait_for_more(30, RESUME).await;
    let at = Instant::now();
    let what = chaos(cluster, &log);
    burst.wait_for_more(30, RESUME).await;
    let report = burst.stop().await;
    let pause = report.longest_pause_after(at);
    let stored = report.assert_stored_once(&log).await;
    println!(
        "{name} ({what}): {} acks, {stored} records, {} failed attempts retried, longest pause {:.0} ms",
        report.acks.len(),
        report.unavailable,
        pause.as_secs_f64() * 1000.0
    );
    pause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_a_writer_is_connected_to_loses_no_acknowledged_append() {
    let mut cluster = NatsCluster::start(3);
    burst_through(&mut cluster, "writer-a", |cluster, log| {
        let node = cluster
            .connected_to("writer-a")
            .expect("the writer's connection is listed by a node");
        assert_eq!(
            cluster.node(node).name(),
            log.client().server_info().server_name
        );
        let leader = cluster.stream_leader("GATEHOUSE");
        cluster.kill(node);
        format!(
            "killed n{}, the stream leader: {}",
            node + 1,
            leader == Some(node)
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_acknowledged_append() {
    let mut cluster = NatsCluster::start(3);
    burst_through(&mut cluster, "writer-b", |cluster, _| {
        let leader = cluster.stream_leader("GATEHOUSE").expect("a stream leader");
        cluster.kill(leader);
        format!("killed the stream leader n{}", leader + 1)
    })
    .await;
    assert!(
        cluster.stream_leader("GATEHOUSE").is_some(),
        "another node leads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_the_whole_cluster_loses_no_acknowledged_append() {
    let mut cluster = NatsCluster::start(3);
    burst_through(&mut cluster, "writer-c", |cluster, _| {
        cluster.restart_all();
        "restarted all three".to_string()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_on_one_subject_never_both_win() {
    use gatehouse_eventlog::{AppendRequest, Expectation, LogError, subject};
    let cluster = NatsCluster::start(3);
    let (a, b) = (
        connect(&cluster, "racer-a").await,
        connect(&cluster, "racer-b").await,
    );
    let subject = subject("api", "raced");
    let request = |who: &str, round: u64, expect: u64| AppendRequest {
        subject: subject.clone(),
        msg_id: format!("{who}-{round}"),
        headers: vec![],
        payload: bytes::Bytes::from_static(b"x"),
        expect: Expectation::LastSubjectSequence(expect),
    };
    let mut last = 0;
    let mut both = 0;
    for round in 0..30 {
        let (ra, rb) = tokio::join!(
            a.append(request("a", round, last)),
            b.append(request("b", round, last))
        );
        let won: Vec<u64> = [ra, rb]
            .into_iter()
            .filter_map(|r| match r {
                Ok(appended) => Some(appended.sequence),
                Err(LogError::Conflict { .. }) => None,
                Err(other) => panic!("round {round}: {other}"),
            })
            .collect();
        if won.len() > 1 {
            both += 1;
        }
        assert!(!won.is_empty(), "round {round}: neither won");
        last = *won.iter().max().unwrap();
    }
    assert_eq!(both, 0, "rounds where both writers' appends were accepted");
}
