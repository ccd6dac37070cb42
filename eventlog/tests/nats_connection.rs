//! How a node reaches NATS, against real nats-servers: a cluster's seed list, user and
//! password, a token, and TLS with a client certificate; wrong or missing credentials
//! are refused with an error naming NATS, never by hanging.

use std::time::Duration;

use bytes::Bytes;
use gatehouse_eventlog::{
    AppendRequest, EventLog, Expectation, NatsCredentials, NatsLog, NatsLogConfig, NatsTls, subject,
};
use gatehouse_node::pki::NodeRole;
use gatehouse_testkit::nats::{NatsCluster, NatsServer};
use gatehouse_testkit::pki::TestPki;

fn request(id: &str) -> AppendRequest {
    AppendRequest {
        subject: subject("api", id),
        msg_id: id.to_string(),
        headers: vec![],
        payload: Bytes::from_static(b"payload"),
        expect: Expectation::Any,
    }
}

async fn connect(config: NatsLogConfig) -> Result<NatsLog, String> {
    tokio::time::timeout(Duration::from_secs(20), NatsLog::connect(config))
        .await
        .map_err(|_| "connect hung".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_list_reaches_the_cluster_and_survives_the_loss_of_a_node() {
    let mut cluster = NatsCluster::start(3);
    let seeds = cluster.urls();
    assert_eq!(seeds.matches("nats://").count(), 3, "{seeds}");
    let log = connect(NatsLogConfig {
        replicas: 3,
        ..NatsLogConfig::new(seeds.clone())
    })
    .await
    .expect("a comma-separated seed list is accepted");
    assert_eq!(log.append(request("one")).await.unwrap().sequence, 1);
    // With the first seed down, a new connection finds another (once the stream has a
    // leader again, if the killed node led it: nats-server 2.9 elects in 4 to 9 s).
    cluster.kill(0);
    let again = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match connect(NatsLogConfig::new(seeds.clone())).await {
                Ok(log) => break log,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("another seed answers");
    let appended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match again.append(request("two")).await {
                Ok(appended) => break appended,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("appends resume on the remaining nodes");
    assert_eq!(appended.sequence, 2);
    assert!(
        connect(NatsLogConfig::new("nats://127.0.0.1:4222,not a url"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn user_and_password_or_token_and_nothing_else() {
    let nats = NatsServer::builder()
        .config(
            r#"authorization {
  users = [
    { user: "control", password: "s3cret-control-password" }
  ]
}
"#,
        )
        .start();
    let with = |user: &str, password: &str| NatsLogConfig {
        credentials: NatsCredentials {
            user: Some(user.into()),
            password: Some(password.into()),
            ..Default::default()
        },
        ..NatsLogConfig::new(nats.url())
    };
    let log = connect(with("control", "s3cret-control-password"))
        .await
        .expect("the right password");
    log.append(request("by-control")).await.unwrap();
    let wrong = connect(with("control", "guess")).await.unwrap_err();
    assert!(wrong.contains("NATS"), "{wrong}");
    assert!(
        connect(NatsLogConfig::new(nats.url())).await.is_err(),
        "anonymous refused"
    );
    // A user without a password is a configuration error, not a connection attempt.
    let half = NatsLogConfig {
        credentials: NatsCredentials {
            user: Some("control".into()),
            ..Default::default()
        },
        ..NatsLogConfig::new(nats.url())
    };
    assert!(connect(half).await.unwrap_err().contains("password"));

    let nats = NatsServer::builder()
        .config("authorization {\n  token: \"a-long-random-nats-token\"\n}\n")
        .start();
    let token = |token: &str| NatsLogConfig {
        credentials: NatsCredentials {
            token: Some(token.into()),
            ..Default::default()
        },
        ..NatsLogConfig::new(nats.url())
    };
    connect(token("a-long-random-nats-token"))
        .await
        .expect("the right token");
    assert!(connect(token("wrong")).await.is_err());
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let (cert, key) = pki.server("nats");
    let quoted = |p: &std::path::Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    let nats = NatsServer::builder()
        .config(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n}}\n",
            quoted(&cert),
            quoted(&key),
            quoted(&pki.ca_cert())
        ))
        .start();
    let node = pki.node(NodeRole::Control, "control");
    let log = connect(NatsLogConfig {
        tls: NatsTls {
            ca: node.cluster_ca.clone(),
            cert: node.node_cert.clone(),
            key: node.node_key.clone(),
        },
        ..NatsLogConfig::new(nats.url())
    })
    .await
    .expect("TLS with the node's certificate");
    log.append(request("over-tls")).await.unwrap();
    // Without a client certificate the server refuses the session.
    let no_cert = connect(NatsLogConfig {
        tls: NatsTls {
            ca: node.cluster_ca,
            ..Default::default()
        },
        ..NatsLogConfig::new(nats.url())
    })
    .await;
    assert!(no_cert.is_err());
}
