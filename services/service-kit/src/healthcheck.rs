//! A minimal HTTP/1.1 health probe over a plain `TcpStream`.
//!
//! Used by the `healthcheck` subcommand so Docker Compose can health-check a
//! service from inside a slim image that has no `curl` or `wget`. It sends one
//! `GET` with `Connection: close` and only reads the status line: we need "is
//! it 200?", not an HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest status line we are willing to read.
const MAX_STATUS_LINE: u64 = 1024;

/// Why a probe did not find a healthy service.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: not an HTTP/1.x status line: {line:?}")]
    Malformed { addr: SocketAddr, line: String },
    #[error("{addr}: answered {status}, expected 200")]
    Unhealthy { addr: SocketAddr, status: u16 },
}

/// GETs `path` on `addr` and returns the response status code.
pub async fn status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: gatehouse-healthcheck\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_STATUS_LINE))
            .read_line(&mut line)
            .await
            .map_err(io)?;
        parse_status_line(&line).ok_or(ProbeError::Malformed {
            addr,
            line: line.trim_end().to_owned(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
}

/// Probes `GET /health` on `127.0.0.1:{port}`; `Ok` only for a 200.
pub async fn check(port: u16, timeout: Duration) -> Result<(), ProbeError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match status(addr, "/health", timeout).await? {
        200 => Ok(()),
        status => Err(ProbeError::Unhealthy { addr, status }),
    }
}

/// `HTTP/1.1 200 OK\r\n` → `Some(200)`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status_line(""), None);
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("HTTP/1.1 999 What"), None);
    }

    /// Serves one canned response on an ephemeral port.
    async fn one_shot_server(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn ok_on_200() {
        let port = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        check(port, Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn unhealthy_on_503() {
        let port = one_shot_server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = check(port, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Unhealthy { status: 503, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn times_out_on_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts (via the backlog) but never answers.
        let err = check(port, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        drop(listener);
    }
}
