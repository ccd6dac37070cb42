//! A real `nats-server` for tests (feature `testing`).
//!
//! Tests of the NATS backend, and integration tests of the crates built on the event log
//! (control, gateway, ...), run against the real broker rather than a fake: the behaviours
//! that matter (expected-sequence checks, de-duplication, consumers surviving a broker
//! restart) are the server's, so only the server can tell whether we rely on them
//! correctly.
//!
//! [`NatsServer`] starts the `nats-server` binary found on `PATH`, with JetStream enabled,
//! on a free loopback port and a store directory of its own:
//!
//! ```no_run
//! # async fn example() {
//! use gatehouse_eventlog::testing::NatsServer;
//! use gatehouse_eventlog::{NatsLog, NatsLogConfig};
//!
//! let mut server = NatsServer::start();
//! let log = NatsLog::connect(NatsLogConfig::new(server.url())).await.unwrap();
//! // ... append, follow ...
//! server.restart(); // same port, same store: the data is still there
//! # }
//! ```
//!
//! The API is synchronous (it only spawns a process and polls a TCP port for a few
//! hundred milliseconds), so it works both inside and outside a Tokio runtime, and in
//! `Drop`.
//!
//! # Shared state
//!
//! None: each `NatsServer` owns one child process, one port and one temporary directory,
//! so tests running in parallel never see each other's streams.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a start may take before [`NatsServer::start`] panics.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `nats-server` child process with JetStream, listening on `127.0.0.1:<port>`.
///
/// The server is killed when this value is dropped; its store directory (a temporary
/// directory) is deleted at the same time.
#[derive(Debug)]
pub struct NatsServer {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    /// Holds `store/` (the JetStream store) and `nats-server.log`.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a free loopback port, with JetStream storing in a new temporary
    /// directory, and waits until it accepts clients.
    ///
    /// # Panics
    ///
    /// If `nats-server` is not on `PATH` (run `scripts/test.sh`, or
    /// `apt-get install nats-server`), or if it does not come up within 20 seconds (the
    /// panic message includes its log).
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-nats-")
            .tempdir()
            .expect("cannot create a temporary directory for nats-server");
        std::fs::create_dir_all(dir.path().join("store"))
            .expect("cannot create the nats-server store directory");
        let port = free_port();
        let mut server = NatsServer {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`restart`](Self::restart), deleted on
    /// drop).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log file (appended to across restarts), handy in assertion messages.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL: no graceful shutdown, like a crash) and waits for it to
    /// exit. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only if the process has already exited: fine either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same store, then
    /// waits until it accepts clients. Clients connected before reconnect on their own.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the process and waits until it is ready.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("cannot create the nats-server log file");
        // Readiness is judged on what this run logs, not on earlier runs' lines.
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let log_err = log
            .try_clone()
            .expect("cannot duplicate the log file handle");
        let child = Command::new("nats-server")
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == ErrorKind::NotFound => panic!(
                "nats-server is not installed (not found on PATH): run scripts/test.sh, \
                 or `apt-get install nats-server`"
            ),
            Err(err) => panic!("cannot start nats-server: {err}"),
        };
        self.child = Some(child);
        self.wait_ready(log_start);
    }

    /// Waits until the port answers with the NATS `INFO` greeting and the server has
    /// logged that it is ready (JetStream included).
    fn wait_ready(&mut self, log_start: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "nats-server exited during start-up ({status}); its log:\n{}",
                    read_log(&self.log_file())
                );
            }
            if greets(address)
                && read_log(&self.log_file())
                    .get(log_start..)
                    .is_some_and(|run| run.contains("Server is ready"))
            {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "nats-server did not come up on port {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    read_log(&self.log_file())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago (the OS picks it; we release it for the server).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("cannot find a free loopback port")
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

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}
