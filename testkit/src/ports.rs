//! Free loopback ports, for the servers a test starts.
//!
//! A test that starts a server as a process must tell it which port to use before it
//! starts: [`free_port`] asks the operating system for one (binds port 0 on
//! `127.0.0.1`, reads the port, releases it). Another process may take the port between
//! the release and the server's bind; that race is rare and shows as a start-up
//! failure, never as a wrong result. Servers started in-process bind `127.0.0.1:0`
//! themselves and need no help.
//!
//! # Shared state
//!
//! One process-wide set of the ports already handed out: a port is never handed out
//! twice in one test binary, so tests running in parallel threads cannot be given the
//! same port by an operating system that reuses a just-released one.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Mutex::default);

/// A loopback port that was free a moment ago and that no other caller in this process
/// has been given.
///
/// # Panics
///
/// If the operating system has no free port to give.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("cannot find a free loopback port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// `http://127.0.0.1:<a free port>`: a URL where nothing listens (an unreachable
/// control plane, a dead backend).
pub fn dead_url() -> String {
    format!("http://{}", free_addr())
}

/// Whether something accepts TCP connections on `127.0.0.1:port` (within 200 ms).
pub fn is_listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_is_handed_out_once() {
        let ports: std::collections::HashSet<u16> = (0..50).map(|_| super::free_port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(!super::is_listening(super::free_port()));
    }
}
