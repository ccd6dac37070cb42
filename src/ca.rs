//! `gatehouse ca`: the cluster CA and node certificates (see `gatehouse_node::pki`).
//!
//! ```text
//! gatehouse ca init   --dir pki                                  a new CA (ca.crt, ca.key)
//! gatehouse ca issue  --dir pki --role gateway --name gateway-3  a node certificate (again: rotation)
//! gatehouse ca revoke --dir pki --role gateway --name gateway-3  into revoked.crl
//! gatehouse ca ensure --dir pki --node control/control:control --node gateway/gateway-1 ...
//!                                                                 idempotent: what is missing
//! ```
//!
//! `ensure` is compose's one provisioning step: it creates the CA if there is none and
//! issues every listed certificate that does not exist yet, so running it at every `up`
//! changes nothing once done. `--server nats:nats` issues a TLS server certificate that
//! names no node (for NATS).

use std::path::PathBuf;

use anyhow::Context;
use gatehouse_node::pki::{ClusterCa, NodeIdentity, NodeRole};

/// What to do with the CA.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CaCommand {
    /// Create a new cluster CA in `--dir`.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue (or re-issue, to rotate) a node's certificate and key.
    Issue {
        #[command(flatten)]
        node: CaNode,
        /// A DNS name or IP address the node serves TLS under (repeatable; default: the
        /// name, localhost, 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Revoke every certificate issued to a node, into `revoked.crl`.
    Revoke {
        #[command(flatten)]
        node: CaNode,
    },
    /// Create the CA if missing and issue every listed certificate that is missing.
    Ensure {
        #[arg(long)]
        dir: PathBuf,
        /// `role/name[:host,host...]` (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// `name[:host,host...]`: a TLS server certificate naming no node (repeatable).
        #[arg(long = "server")]
        servers: Vec<String>,
    },
}

/// The CA and the node that `issue` and `revoke` act on.
#[derive(clap::Args, Debug, Clone)]
pub struct CaNode {
    #[arg(long)]
    dir: PathBuf,
    /// control, token-service or gateway.
    #[arg(long)]
    role: NodeRole,
    /// The node's name (a gateway's id).
    #[arg(long)]
    name: String,
}

impl CaNode {
    /// The CA in `--dir`, and the node's identity.
    fn open(self) -> anyhow::Result<(ClusterCa, NodeIdentity)> {
        let ca = ClusterCa::open(&self.dir)?;
        Ok((ca, NodeIdentity::new(self.role, self.name)?))
    }
}

fn default_hosts(name: &str, hosts: Vec<String>) -> Vec<String> {
    if hosts.is_empty() {
        vec![name.to_string(), "localhost".into(), "127.0.0.1".into()]
    } else {
        hosts
    }
}

/// `name[:host,host...]`.
fn name_and_hosts(spec: &str) -> (String, Vec<String>) {
    match spec.split_once(':') {
        Some((name, hosts)) => (
            name.to_string(),
            hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(String::from)
                .collect(),
        ),
        None => (spec.to_string(), Vec::new()),
    }
}

/// Runs a `gatehouse ca` command, printing what it wrote.
pub fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { dir } => {
            let ca = ClusterCa::create(&dir)?;
            println!(
                "cluster CA created: {} (give it to every node and client); keep {} offline",
                ca.cert_path().display(),
                dir.join("ca.key").display()
            );
        }
        CaCommand::Issue { node, hosts } => {
            let (ca, identity) = node.open()?;
            let hosts = default_hosts(&identity.name, hosts);
            let issued = ca.issue(&identity, &hosts)?;
            println!(
                "{} {}: {} and {}",
                identity,
                identity.uri(),
                issued.cert_path.display(),
                issued.key_path.display()
            );
        }
        CaCommand::Revoke { node } => {
            let (ca, identity) = node.open()?;
            let revoked = ca.revoke(&identity)?;
            println!(
                "{identity}: {revoked} certificate(s) revoked; give nodes the new {} (--cluster-crl) and restart them",
                ca.crl_path().display()
            );
        }
        CaCommand::Ensure {
            dir,
            nodes,
            servers,
        } => {
            let ca = ClusterCa::open_or_create(&dir)?;
            for spec in nodes {
                let (node, hosts) = name_and_hosts(&spec);
                let (role, name) = node
                    .split_once('/')
                    .with_context(|| format!("--node {spec:?}: expected role/name[:hosts]"))?;
                let identity = NodeIdentity::new(role.parse()?, name)?;
                if dir.join(format!("{}.crt", identity.file_stem())).exists() {
                    continue;
                }
                let issued = ca.issue(&identity, &default_hosts(name, hosts))?;
                println!("issued {identity}: {}", issued.cert_path.display());
            }
            for spec in servers {
                let (name, hosts) = name_and_hosts(&spec);
                if dir.join(format!("server-{name}.crt")).exists() {
                    continue;
                }
                let issued = ca.issue_server(&name, &default_hosts(&name, hosts))?;
                println!("issued server {name}: {}", issued.display());
            }
        }
    }
    Ok(())
}
