//! Least privilege on the log, with real processes: nats-server started from
//! `nats/users.conf` (each node a NATS user known by its node certificate, with subject
//! permissions), control, token-service and a gateway on it over TLS.
//!
//! - Someone holding a gateway's NATS credentials cannot append any event: NATS refuses
//!   the publish, and no node's state moves.
//! - control may append only its own kinds (a signing key is refused), token-service
//!   only its own (an API is refused).
//! - A record control is allowed to publish but whose kind does not match its subject (a
//!   signing key on an API subject) is stored, then refused by every folding node and
//!   counted: its key signs nothing that is accepted.
//! - Snapshots: control and token-service each read and write their own bucket
//!   (`gatehouse-snapshots-<role>`), neither reads the other's, a gateway reads none.

mod support;

use std::time::Duration;

use gatehouse_eventlog::{
    AppendRequest, EventLog, Expectation, NatsLog, NatsLogConfig, NatsSnapshotStore, NatsTls,
    SnapshotHeader, SnapshotStore, StoredSnapshot, subject,
};
use gatehouse_node::pki::NodeRole;
use gatehouse_proto::events::{EventEnvelope, SigningKeyPublished, event_envelope::Event};
use gatehouse_testkit::nats::with_node_users;
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::poll::Poll;
use gatehouse_testkit::tls::HttpClient;
use gatehouse_tokens::SigningKeyPair;
use http::StatusCode;
use prost::Message;
use support::{ControlPlane, Gateway};

/// The log as the node `role` `name` sees it: its own certificate, its own NATS user.
async fn log_as(pki: &TestPki, url: &str, role: NodeRole, name: &str) -> NatsLog {
    let node = pki.node(role, name);
    NatsLog::connect(NatsLogConfig {
        tls: NatsTls {
            ca: node.cluster_ca,
            cert: node.node_cert,
            key: node.node_key,
        },
        ..NatsLogConfig::new(url)
    })
    .await
    .unwrap_or_else(|e| panic!("{role} {name} connects to NATS: {e}"))
}

/// How long an append refused by NATS may wait for the acknowledgement that never comes.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A `SigningKeyPublished` of a key someone else holds.
fn forged_key_event(key: &SigningKeyPair) -> Vec<u8> {
    EventEnvelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        aggregate_id: key.kid().to_string(),
        aggregate_version: 1,
        event: Some(Event::SigningKeyPublished(SigningKeyPublished {
            key: Some(key.to_signing_key_record()),
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

fn append(subject: String, payload: Vec<u8>) -> AppendRequest {
    AppendRequest {
        subject,
        msg_id: uuid::Uuid::new_v4().to_string(),
        headers: vec![],
        payload: payload.into(),
        expect: Expectation::Any,
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_appends_only_its_own_subjects_and_gateways_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::in_dir(&dir.path().join("pki"));
    let nats = with_node_users(&pki).start();
    let env = |role, name| -> Vec<(String, String)> { pki.nats_env(role, name) };
    let token_env = env(NodeRole::TokenService, "token-service");
    let metrics_port = gatehouse_testkit::free_port();
    let mut control_env = env(NodeRole::Control, "control");
    control_env.push((
        "GATEHOUSE_METRICS_LISTEN".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    let plane = ControlPlane::start(
        dir.path(),
        &nats.url(),
        &refs(&control_env),
        &refs(&token_env),
    );
    let gateway_env = env(NodeRole::Gateway, "gateway-1");
    let gateway = Gateway::start(
        dir.path(),
        &pki,
        "gateway-1",
        plane.admin,
        Some(&nats.url()),
        &[],
        &refs(&gateway_env),
    );
    // Every node folded the log to its end (token-service's key, the admin client).
    let control_log = log_as(&pki, &nats.url(), NodeRole::Control, "control").await;
    let http = HttpClient::default();
    let applied = || async {
        http.get(&format!("{}/readyz", gateway.http()), None)
            .await
            .json()["applied_sequence"]
            .as_u64()
            .unwrap()
    };
    let end = control_log.last_sequence().await.unwrap();
    Poll::new("the gateway to reach the log's end")
        .until_async(|| async { applied().await == end })
        .await;

    // A gateway's credentials: no event subject at all.
    let gateway_log = log_as(&pki, &nats.url(), NodeRole::Gateway, "gateway-1").await;
    let forged = SigningKeyPair::generate("ES256").unwrap();
    for kind in ["api", "signingkey", "client", "application", "token"] {
        let refused = tokio::time::timeout(
            REFUSAL_WAIT,
            gateway_log.append(append(
                subject(kind, forged.kid()),
                forged_key_event(&forged),
            )),
        )
        .await
        .map(|r| r.is_err())
        .unwrap_or(true);
        assert!(refused, "a gateway appended a {kind} event");
    }
    // Core NATS publishing (no JetStream ack) is refused as well: nothing reaches the log.
    gateway_log
        .client()
        .publish(
            subject("signingkey", forged.kid()),
            forged_key_event(&forged).into(),
        )
        .await
        .ok();
    gateway_log.client().flush().await.ok();

    // control may not publish a signing key, token-service may not publish an API.
    let refused = tokio::time::timeout(
        REFUSAL_WAIT,
        control_log.append(append(
            subject("signingkey", forged.kid()),
            forged_key_event(&forged),
        )),
    )
    .await
    .map(|r| r.is_err())
    .unwrap_or(true);
    assert!(refused, "control appended a signing key");
    let token_log = log_as(&pki, &nats.url(), NodeRole::TokenService, "token-service").await;
    let api = EventEnvelope {
        aggregate_id: "evil-api".into(),
        event: Some(Event::ApiDeleted(Default::default())),
        ..Default::default()
    };
    let refused = tokio::time::timeout(
        REFUSAL_WAIT,
        token_log.append(append(subject("api", "evil-api"), api.encode_to_vec())),
    )
    .await
    .map(|r| r.is_err())
    .unwrap_or(true);
    assert!(refused, "token-service appended an API event");

    // The gateway shares its throttle counts on gatehouse.throttle: it hears its own
    // reports back (publish and subscribe allowed), so its limits are shared.
    Poll::new("the gateway's throttle exchange to be live under its permissions")
        .until_async(|| async {
            let reply = http.get(&format!("{}/metrics", gateway.http()), None).await;
            metric(
                &String::from_utf8_lossy(&reply.body),
                "gatehouse_gateway_throttle_shared ",
            ) == 1
        })
        .await;
    // But nothing else: not another subject, and control and token-service not at all.
    gateway_log
        .client()
        .publish("gatehouse.throttled", "x".into())
        .await
        .ok();
    gateway_log.client().flush().await.ok();
    control_log
        .client()
        .publish("gatehouse.throttle", "x".into())
        .await
        .ok();
    control_log.client().flush().await.ok();

    // NATS says why.
    let log = nats.output();
    assert!(
        !log.lines().any(|l| l.contains("Violation")
            && l.contains("Subject \"gatehouse.throttle\"")
            && l.contains("gateway-")),
        "a gateway was refused the throttle subject:\n{log}"
    );
    for (user, subject) in [
        ("gateway-1", "gatehouse.events.signingkey."),
        ("gateway-1", "gatehouse.events.api."),
        ("gateway-1", "gatehouse.throttled"),
        ("control", "gatehouse.events.signingkey."),
        ("control", "gatehouse.throttle"),
        ("token-service", "gatehouse.events.api."),
    ] {
        Poll::new(format!(
            "nats-server to refuse {user} publishing on {subject}*"
        ))
        .context(|| nats.output())
        .until(|| {
            nats.output().lines().any(|l| {
                l.contains("Publish Violation")
                    && l.contains(&format!("User \"CN={user},"))
                    && l.contains(&format!("Subject \"{subject}"))
            })
        });
    }

    // Nothing was stored; no node moved.
    assert_eq!(control_log.last_sequence().await.unwrap(), end);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(applied().await, end);

    // What control may publish but is not what its subject says: stored, then refused
    // by every folding node and counted; the forged key's tokens are not accepted.
    let stored = control_log
        .append(append(
            subject("api", forged.kid()),
            forged_key_event(&forged),
        ))
        .await
        .expect("control may publish on API subjects");
    assert_eq!(stored.sequence, end + 1);
    Poll::new("the gateway to move past the forged record")
        .until_async(|| async { applied().await == end + 1 })
        .await;
    let gateway_metrics = http.get(&format!("{}/metrics", gateway.http()), None).await;
    let text = String::from_utf8_lossy(&gateway_metrics.body).into_owned();
    assert!(metric(&text, "gatehouse_gateway_events_quarantined_total") >= 1);
    let control_metrics = http
        .get(&format!("http://127.0.0.1:{metrics_port}/metrics"), None)
        .await;
    let text = String::from_utf8_lossy(&control_metrics.body).into_owned();
    assert!(
        metric(
            &text,
            "gatehouse_events_quarantined_total{node=\"control\"}"
        ) >= 1
    );
    let token = forged
        .sign(&gatehouse_testkit::world::claims("app", false, ""))
        .unwrap();
    let refused = http
        .get(
            &format!("{}/any/1.0.0/thing", gateway.https()),
            Some(&token),
        )
        .await;
    assert_ne!(refused.status, StatusCode::OK);
    let admin = plane.admin_token();
    assert!(
        !admin.is_empty(),
        "token-service still serves: it moved past it too"
    );
}

/// A snapshot's bucket opened by `log`'s user, or why not.
async fn snapshots_as(log: &NatsLog, bucket: &str) -> Result<NatsSnapshotStore, String> {
    match tokio::time::timeout(
        Duration::from_secs(20),
        NatsSnapshotStore::open(log.client(), bucket, 1, 1 << 20),
    )
    .await
    {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reads_and_writes_only_its_own_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::in_dir(&dir.path().join("pki"));
    let nats = with_node_users(&pki).start();
    let url = nats.url();
    let control = log_as(&pki, &url, NodeRole::Control, "control").await;
    let token = log_as(&pki, &url, NodeRole::TokenService, "token-service").await;
    let gateway = log_as(&pki, &url, NodeRole::Gateway, "gateway-1").await;
    let (control_bucket, token_bucket) = (
        "gatehouse-snapshots-control",
        "gatehouse-snapshots-token-service",
    );
    let snapshot = |sequence: u64| StoredSnapshot {
        header: SnapshotHeader {
            sequence,
            anchor: format!("event-{sequence}"),
            state_hash: 7,
        },
        // Several chunks, so reading takes the object store's whole path.
        state: vec![b'h'; 300_000].into(),
    };
    for (log, bucket, sequence) in [(&control, control_bucket, 1), (&token, token_bucket, 2)] {
        let store = snapshots_as(log, bucket)
            .await
            .unwrap_or_else(|e| panic!("its own bucket {bucket}: {e}"));
        store.save(&snapshot(sequence)).await.unwrap();
        store.save(&snapshot(sequence + 10)).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(snapshot(sequence + 10)));
    }
    let refusals = [
        (&token, "token-service", control_bucket),
        (&control, "control", token_bucket),
        (&gateway, "gateway-1", control_bucket),
        (&gateway, "gateway-1", token_bucket),
    ];
    let tasks: Vec<_> = refusals
        .iter()
        .map(|(log, who, bucket)| {
            let (log, who, bucket) = ((*log).clone(), *who, *bucket);
            tokio::spawn(async move {
                let opened = snapshots_as(&log, bucket).await;
                assert!(opened.is_err(), "{who} opened {bucket}");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let output = nats.output();
    for (_, who, bucket) in refusals {
        assert!(
            output.lines().any(|l| l.contains("Publish Violation")
                && l.contains(&format!("User \"CN={who},"))
                && l.contains(&format!("Subject \"$JS.API.STREAM.INFO.OBJ_{bucket}\""))),
            "nats-server refused {who} looking {bucket} up:\n{output}"
        );
    }
    // Nor can a gateway listen to a bucket's subjects.
    let _listening = gateway
        .client()
        .subscribe(format!("$O.{control_bucket}.>"))
        .await;
    gateway.client().flush().await.ok();
    Poll::new("nats-server to refuse the gateway's subscription").until(|| {
        nats.output()
            .lines()
            .any(|l| l.contains("Subscription Violation") && l.contains("User \"CN=gateway-1,"))
    });
    // What the owners saved is still theirs.
    for (log, bucket, sequence) in [(&control, control_bucket, 11), (&token, token_bucket, 12)] {
        let store = snapshots_as(log, bucket).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(snapshot(sequence)));
    }
}
