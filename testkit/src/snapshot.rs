//! A node's snapshot as a test reaches it past the node, to read, damage or remove it
//! (its file in the data directory, or its object in the role's NATS bucket), and the
//! metrics a folding node reports about it.
//!
//! # Shared state
//!
//! None: each call connects anew.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;

use crate::poll::Poll;
use crate::tls::HttpClient;

/// Where a node keeps its snapshot (see `gatehouse_node::snapshot`).
#[derive(Debug, Clone)]
pub enum NodeSnapshot {
    /// `<data-dir>/state.snapshot`, beside the embedded log.
    File(PathBuf),
    /// The one object of a JetStream object-store bucket.
    Nats { url: String, bucket: String },
}

impl NodeSnapshot {
    /// The snapshot of a node on the embedded log in `data_dir`.
    pub fn file(data_dir: &Path) -> NodeSnapshot {
        NodeSnapshot::File(gatehouse_node::snapshot::SnapshotArgs::file(data_dir))
    }

    /// The snapshot of the node of `role` on the NATS server at `url` (its default
    /// bucket, `gatehouse-snapshots-<role>`).
    pub fn nats(url: &str, role: &str) -> NodeSnapshot {
        NodeSnapshot::Nats {
            url: url.to_string(),
            bucket: format!("gatehouse-snapshots-{role}"),
        }
    }

    async fn bucket(url: &str, bucket: &str) -> ObjectStore {
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        async_nats::jetstream::new(client)
            .get_object_store(bucket)
            .await
            .unwrap_or_else(|e| panic!("no snapshot bucket {bucket}: {e}"))
    }

    /// The snapshot's bytes.
    pub async fn read(&self) -> Vec<u8> {
        match self {
            NodeSnapshot::File(path) => std::fs::read(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
            NodeSnapshot::Nats { url, bucket } => {
                let mut bytes = Vec::new();
                let mut object = Self::bucket(url, bucket)
                    .await
                    .get("state")
                    .await
                    .unwrap_or_else(|e| panic!("no snapshot in {bucket}: {e}"));
                object.read_to_end(&mut bytes).await.unwrap();
                bytes
            }
        }
    }

    /// Replaces the snapshot's bytes with `bytes`.
    pub async fn overwrite(&self, bytes: &[u8]) {
        match self {
            NodeSnapshot::File(path) => std::fs::write(path, bytes)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display())),
            NodeSnapshot::Nats { url, bucket } => {
                Self::bucket(url, bucket)
                    .await
                    .put("state", &mut std::io::Cursor::new(bytes.to_vec()))
                    .await
                    .unwrap_or_else(|e| panic!("cannot write to {bucket}: {e}"));
            }
        }
    }

    /// Flips bits of the byte in the middle of the snapshot, as a damaged disk would.
    pub async fn damage(&self) {
        let mut bytes = self.read().await;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        self.overwrite(&bytes).await;
    }

    /// Removes the snapshot.
    pub async fn remove(&self) {
        match self {
            NodeSnapshot::File(path) => std::fs::remove_file(path)
                .unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display())),
            NodeSnapshot::Nats { url, bucket } => Self::bucket(url, bucket)
                .await
                .delete("state")
                .await
                .unwrap_or_else(|e| panic!("cannot remove the snapshot in {bucket}: {e}")),
        }
    }
}

/// The value of metric `name` of `node` (`name{node="<node>"} <value>`) at
/// `http://<addr>/metrics`, once the listener answers (it may come up just after the
/// node's API).
pub async fn node_metric(addr: SocketAddr, node: &str, name: &str) -> u64 {
    Poll::new(format!("{node}'s metrics to answer on {addr}"))
        .until_async(|| async { tokio::net::TcpStream::connect(addr).await.is_ok() })
        .await;
    let answer = HttpClient::default()
        .get(&format!("http://{addr}/metrics"), None)
        .await;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} of {node} in:\n{text}"))
}
