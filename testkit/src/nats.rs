//! A real `nats-server` for tests: one server, or a cluster of three.
//!
//! Tests of the NATS backend, and integration tests of everything built on the event log,
//! run against the real broker rather than a fake: the behaviours that matter
//! (expected-sequence checks, de-duplication, consumers surviving a broker restart,
//! replicated streams surviving the loss of a node) are the server's, so only the server
//! can tell whether we rely on them correctly.
//!
//! [`NatsServer::start`] starts the `nats-server` found on `PATH` (or in `/usr/sbin`,
//! where Debian puts it) with JetStream, on a free loopback port and a store directory
//! of its own, from a configuration file the test writes. [`NatsServer::builder`] adds
//! to that file: any extra configuration text (users, passwords, subject permissions),
//! a server name, the HTTP monitoring port.
//!
//! ```no_run
//! use gatehouse_testkit::nats::{NatsCluster, NatsServer};
//!
//! let mut server = NatsServer::start();
//! let url = server.url(); // nats://127.0.0.1:<port>
//! server.restart(); // same port, same store: the data is still there
//!
//! let mut cluster = NatsCluster::start(3); // JetStream meta leader elected
//! let seeds = cluster.urls(); // nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c
//! cluster.kill(0); // kill -9 one node
//! cluster.restart(0); // back, same ports and store, cluster formed again
//! ```
//!
//! The API is synchronous (it spawns processes and polls ports for a few hundred
//! milliseconds), so it works inside and outside a Tokio runtime, and in `Drop`.
//!
//! # Shared state
//!
//! None: each server owns one child process, its ports and one temporary directory
//! (store, configuration, log), so tests running in parallel never see each other's
//! streams. A cluster's nodes share only their cluster name, unique to the cluster.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::poll::Poll;
use crate::ports::free_port;
use crate::process::Process;

/// How long a start may take before it panics.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a [`NatsServer`]: what goes into its configuration file.
#[must_use = "a NatsBuilder starts nothing until `start`"]
#[derive(Debug, Clone, Default)]
pub struct NatsBuilder {
    server_name: Option<String>,
    monitoring: bool,
    extra: String,
    cluster: Option<ClusterRoutes>,
}

/// A node's place in a cluster.
#[derive(Debug, Clone)]
struct ClusterRoutes {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

impl NatsBuilder {
    /// The server's `server_name` (default `nats-<port>`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Enables the HTTP monitoring endpoint (`/varz`, `/jsz`, ...) on a free port.
    pub fn monitoring(mut self) -> Self {
        self.monitoring = true;
        self
    }

    /// Appends `text` to the configuration file, as written (users and passwords,
    /// subject permissions, limits...).
    pub fn config(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push('\n');
        self
    }

    /// Writes the configuration, starts the server and waits until it accepts clients.
    ///
    /// # Panics
    ///
    /// If `nats-server` is not installed (run `scripts/test.sh`, or
    /// `apt-get install nats-server`), refuses its configuration, or is not ready within
    /// 30 seconds (the panic message includes its log).
    pub fn start(self) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-nats-")
            .tempdir()
            .expect("cannot create a temporary directory for nats-server");
        let port = free_port();
        let http_port = self.monitoring.then(free_port);
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| format!("nats-{port}"));
        let config = dir.path().join("nats-server.conf");
        std::fs::write(&config, self.config_text(&name, port, http_port, &dir))
            .expect("cannot write the nats-server configuration");
        let process = Process::builder(name.clone(), program())
            .arg("-c")
            .arg(&config)
            .log_dir(dir.path())
            .timeout(START_TIMEOUT)
            .spawn();
        let mut server = NatsServer {
            name,
            process,
            port,
            http_port,
            dir,
        };
        server.wait_ready();
        server
    }

    fn config_text(&self, name: &str, port: u16, http_port: Option<u16>, dir: &TempDir) -> String {
        let quoted = |path: PathBuf| serde_json::to_string(&path.to_string_lossy()).unwrap();
        let mut text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: {}\n}}\n",
            quoted(dir.path().join("store"))
        );
        if let Some(http) = http_port {
            writeln!(text, "http: 127.0.0.1:{http}").unwrap();
        }
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|p| format!("    nats-route://127.0.0.1:{p}"))
                .collect();
            write!(
                text,
                "cluster {{\n  name: {}\n  listen: 127.0.0.1:{}\n  no_advertise: true\n  routes: [\n{}\n  ]\n}}\n",
                cluster.name,
                cluster.port,
                routes.join("\n")
            )
            .unwrap();
        }
        text.push_str(&self.extra);
        text
    }
}

/// Gatehouse's NATS users (`nats/users.conf`, the very file compose mounts) behind TLS
/// with client certificates from `pki`: each node's certificate maps to its user.
pub fn with_node_users(pki: &crate::pki::TestPki) -> NatsBuilder {
    let (cert, key) = pki.server("nats");
    // nats-server resolves `include` against the configuration's own directory (a
    // temporary one): the file's text goes in instead, unchanged.
    let users = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../nats/users.conf"))
        .expect("nats/users.conf");
    let quoted = |path: &std::path::Path| serde_json::to_string(&path.to_string_lossy()).unwrap();
    NatsServer::builder().config(&format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify_and_map: true\n  timeout: 5\n}}\n{users}\n",
        quoted(&cert),
        quoted(&key),
        quoted(&pki.ca_cert()),
    ))
}

/// A `nats-server` child process with JetStream, listening on `127.0.0.1:<port>`.
///
/// Killed when dropped; its store directory (a temporary directory) is deleted with it.
pub struct NatsServer {
    name: String,
    process: Process,
    port: u16,
    http_port: Option<u16>,
    /// Holds `store/`, `nats-server.conf` and the log.
    dir: TempDir,
}

impl NatsServer {
    /// A server with JetStream on a free loopback port, its store in a new temporary
    /// directory, ready to accept clients.
    ///
    /// # Panics
    ///
    /// As [`NatsBuilder::start`].
    pub fn start() -> NatsServer {
        NatsServer::builder().start()
    }

    /// A server with more configuration.
    pub fn builder() -> NatsBuilder {
        NatsBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `server_name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoint, if enabled.
    pub fn monitoring_url(&self) -> Option<String> {
        self.http_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The JetStream store directory (kept across restarts, deleted on drop).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The configuration file the server runs with.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    /// What the server has logged, across restarts.
    pub fn output(&self) -> String {
        self.process.output()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the server (SIGKILL: no graceful shutdown, like a crash) and waits for it to
    /// exit. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Stops the server and starts it again on the same port with the same store, then
    /// waits until it accepts clients. Clients connected before reconnect on their own.
    pub fn restart(&mut self) {
        self.stop();
        self.process.start();
        self.wait_ready();
    }

    /// `GET <monitoring>/<path>` as JSON (`jsz`, `varz`, `routez`...); `None` if the
    /// endpoint does not answer.
    ///
    /// # Panics
    ///
    /// If monitoring is not enabled.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        let port = self
            .http_port
            .unwrap_or_else(|| panic!("{}: monitoring is not enabled", self.name));
        http_get_json(port, path)
    }

    /// Waits until the port answers with the NATS `INFO` greeting and this run has
    /// logged that it is ready (JetStream included).
    fn wait_ready(&mut self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let port = self.port;
        self.process
            .wait_until(&format!("accepting clients on port {port}"), || {
                greets(address)
            });
        self.process.wait_for_output("Server is ready");
    }
}

/// `nats-server` on `PATH`, or where Debian installs it.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file()))
        .unwrap_or(false);
    if on_path {
        return PathBuf::from("nats-server");
    }
    for dir in ["/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let candidate = PathBuf::from(dir).join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "nats-server is not installed (not on PATH nor in /usr/sbin): run scripts/test.sh, \
         or `apt-get install nats-server`"
    )
}

/// Whether a NATS server answers on `address` (it sends `INFO {...}` first).
fn greets(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}

/// A plain HTTP/1.0 `GET` on loopback, its body as JSON.
fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let path = path.trim_start_matches('/');
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// nats-servers with JetStream clustered on loopback: each with its own ports (client,
/// cluster routes, monitoring), `server_name` (`n1`, `n2`, ...) and store, all with one
/// cluster name. The servers do not advertise each other to clients (`no_advertise`):
/// a client knows the servers of the seed list it was given and no others, so a test
/// that puts a [`crate::proxy::TcpProxy`] in front of each can cut a client off.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    name: String,
}

impl NatsCluster {
    /// `size` nodes (3 for a JetStream cluster that survives the loss of one), started
    /// and clustered: returns once every node knows the JetStream meta leader.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`], or if the cluster does not form within 30 seconds.
    pub fn start(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, "")
    }

    /// [`start`](Self::start), with `config` appended to every node's configuration.
    pub fn start_with(size: usize, config: &str) -> NatsCluster {
        assert!(size > 0, "a cluster has at least one node");
        let name = format!("gatehouse-{}", uuid::Uuid::new_v4().simple());
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        // Every node but the last is started without waiting for the others: JetStream
        // waits for its peers before it says the meta group is ready.
        let nodes = (0..size)
            .map(|i| {
                NatsServer::builder()
                    .server_name(format!("n{}", i + 1))
                    .monitoring()
                    .config(config)
                    .clustered(ClusterRoutes {
                        name: name.clone(),
                        port: route_ports[i],
                        routes: route_ports
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .map(|(_, p)| *p)
                            .collect(),
                    })
                    .start()
            })
            .collect();
        let mut cluster = NatsCluster { nodes, name };
        cluster.wait_formed();
        cluster
    }

    /// The cluster name the nodes share.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many nodes it has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// Node `index`'s client URL.
    pub fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    /// The seed list: every node's client URL, comma-separated
    /// (`nats://127.0.0.1:a,nats://127.0.0.1:b,...`), as NATS clients take it.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node named `server_name` (`n1` is 0).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == server_name)
    }

    /// Kills node `index` (SIGKILL, like a crash); its store stays.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// Starts node `index` again (killing it first if it runs) on the same ports and
    /// store, and waits until every running node knows the meta leader again.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_formed();
    }

    /// Kills every node (SIGKILL), then starts them all again on the same ports and
    /// stores, and waits until the cluster has formed.
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        for node in &mut self.nodes {
            node.restart();
        }
        self.wait_formed();
    }

    /// The index of the node that leads stream `stream` now, as a running node's
    /// monitoring endpoint reports it.
    pub fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        for i in running {
            let Some(jsz) = self.nodes[i].monitor("jsz?streams=true") else {
                continue;
            };
            let accounts = jsz["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for account in accounts {
                for detail in account["stream_detail"].as_array().into_iter().flatten() {
                    if detail["name"] == stream
                        && let Some(leader) = detail["cluster"]["leader"].as_str()
                    {
                        return self.index_of(leader);
                    }
                }
            }
        }
        None
    }

    /// The index of the running node that a client named `client_name` is connected to
    /// (its `connz`), if one is.
    pub fn connected_to(&mut self, client_name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].is_running()
                && self.nodes[i]
                    .monitor("connz?limit=1024")
                    .and_then(|connz| connz["connections"].as_array().cloned())
                    .is_some_and(|connections| connections.iter().any(|c| c["name"] == client_name))
        })
    }

    /// Waits until every running node reports a JetStream meta leader (the cluster has
    /// formed: routes are up and the meta group has elected its leader).
    pub fn wait_formed(&mut self) {
        let size = self.nodes.len();
        let running: Vec<usize> = (0..size).filter(|&i| self.nodes[i].is_running()).collect();
        let nodes = &self.nodes;
        Poll::new(format!(
            "cluster {} to elect a JetStream meta leader",
            self.name
        ))
        .timeout(START_TIMEOUT)
        .every(Duration::from_millis(100))
        .context(|| {
            nodes
                .iter()
                .map(|n| format!("--- {} ---\n{}", n.name(), n.output()))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .until(|| {
            for &i in &running {
                let jsz = nodes[i].monitor("jsz");
                let meta = jsz.as_ref().map(|j| &j["meta_cluster"]);
                let leader = meta.and_then(|m| m["leader"].as_str()).unwrap_or("");
                let cluster_size = meta.and_then(|m| m["cluster_size"].as_u64());
                if leader.is_empty() || cluster_size != Some(size as u64) {
                    return Err(format!(
                        "{} sees leader {leader:?}, cluster size {cluster_size:?}",
                        nodes[i].name()
                    ));
                }
            }
            Ok(())
        })
    }
}

impl NatsBuilder {
    fn clustered(mut self, routes: ClusterRoutes) -> Self {
        self.cluster = Some(routes);
        self
    }
}
