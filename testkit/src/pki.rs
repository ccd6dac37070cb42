//! Node identities for tests: a cluster CA in a temporary directory and the node
//! certificates the nodes under test present (the product's own `gatehouse_node::pki`,
//! so tests run the real mutual TLS, never a bypass).
//!
//! ```no_run
//! use gatehouse_node::pki::NodeRole;
//! use gatehouse_testkit::pki::TestPki;
//!
//! let pki = TestPki::new();
//! let flags = pki.args(NodeRole::Control, "control"); // --cluster-ca ... --node-key ...
//! let ca = pki.ca_cert(); // what clients (grpcurl -cacert) trust
//! ```
//!
//! # Shared state
//!
//! None: each `TestPki` owns its directory (deleted on drop unless it was given one).

use std::fmt::Display;
use std::path::{Path, PathBuf};

use gatehouse_node::pki::{ClusterCa, NodeIdentity, NodeRole};
use gatehouse_node::tls::{ClusterTlsArgs, NodeTls};

use crate::grpc::Target;

/// A cluster CA for one test, and the certificates it issued.
pub struct TestPki {
    ca: ClusterCa,
    _dir: Option<tempfile::TempDir>,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A new CA in a temporary directory.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pki-")
            .tempdir()
            .expect("cannot create a temporary directory for the test CA");
        let ca = ClusterCa::create(dir.path()).expect("cannot create the test CA");
        TestPki {
            ca,
            _dir: Some(dir),
        }
    }

    /// The CA in `dir` (created if missing), kept after the test.
    pub fn in_dir(dir: &Path) -> TestPki {
        TestPki {
            ca: ClusterCa::open_or_create(dir).expect("cannot open or create the test CA"),
            _dir: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.ca.dir()
    }

    /// `ca.crt`: what clients trust (grpcurl's `-cacert`).
    pub fn ca_cert(&self) -> PathBuf {
        self.ca.cert_path()
    }

    fn identity(role: NodeRole, name: &str) -> NodeIdentity {
        NodeIdentity::new(role, name).unwrap_or_else(|e| panic!("{role} {name}: {e}"))
    }

    /// The node's files, issuing its certificate (for `localhost` and `127.0.0.1`) the
    /// first time.
    pub fn node(&self, role: NodeRole, name: &str) -> ClusterTlsArgs {
        let identity = Self::identity(role, name);
        let args = ClusterTlsArgs::in_ca_dir(self.dir(), &identity);
        if !args.node_cert.as_ref().is_some_and(|c| c.exists()) {
            self.ca
                .issue(&identity, &["localhost".into(), "127.0.0.1".into()])
                .unwrap_or_else(|e| panic!("cannot issue a certificate for {identity}: {e}"));
        }
        args
    }

    /// The node's files as command-line flags.
    pub fn args(&self, role: NodeRole, name: &str) -> Vec<String> {
        let args = self.node(role, name);
        let path = |p: Option<PathBuf>| p.expect("set").to_string_lossy().into_owned();
        vec![
            "--cluster-ca".into(),
            path(args.cluster_ca),
            "--node-cert".into(),
            path(args.node_cert),
            "--node-key".into(),
            path(args.node_key),
            "--cluster-crl".into(),
            path(args.cluster_crl),
        ]
    }

    /// The node's identity loaded, for a client that acts as that node.
    pub fn node_tls(&self, role: NodeRole, name: &str) -> NodeTls {
        self.node(role, name)
            .load(name)
            .unwrap_or_else(|e| panic!("cannot load {role} {name}: {e}"))
    }

    /// A TLS server certificate naming no node (e.g. for nats-server), for `localhost`
    /// and `127.0.0.1`: its certificate and key files.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        let cert = self.dir().join(format!("server-{name}.crt"));
        if !cert.exists() {
            self.ca
                .issue_server(name, &["localhost".into(), "127.0.0.1".into()])
                .unwrap_or_else(|e| panic!("cannot issue a server certificate for {name}: {e}"));
        }
        (cert, self.dir().join(format!("server-{name}.key")))
    }

    /// The environment that makes a node connect to NATS with TLS and its node
    /// certificate (the user `nats/users.conf` maps it to).
    pub fn nats_env(&self, role: NodeRole, name: &str) -> Vec<(String, String)> {
        let args = self.node(role, name);
        let path = |p: Option<PathBuf>| p.expect("set").to_string_lossy().into_owned();
        vec![
            ("GATEHOUSE_NATS_CA".into(), path(args.cluster_ca)),
            ("GATEHOUSE_NATS_CERT".into(), path(args.node_cert)),
            ("GATEHOUSE_NATS_KEY".into(), path(args.node_key)),
        ]
    }

    /// Revokes every certificate of the node (nodes started afterwards refuse it).
    pub fn revoke(&self, role: NodeRole, name: &str) {
        self.ca
            .revoke(&Self::identity(role, name))
            .unwrap_or_else(|e| panic!("cannot revoke {role} {name}: {e}"));
    }

    /// A TLS server at `addr` whose certificate this CA issued.
    pub fn target(&self, addr: impl Display) -> Target {
        Target::new(addr, self.ca_cert())
    }
}
