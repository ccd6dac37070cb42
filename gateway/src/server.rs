//! Listeners: HTTPS (rustls, HTTP/2 and HTTP/1.1 by ALPN) and plain HTTP, each an accept
//! loop that hands every connection to hyper's auto (h1/h2) connection builder with
//! [`Gateway::handle`] as the service.
//!
//! Each listener holds at most `--max-connections` connections: past it, a new one is
//! accepted and closed at once, before any TLS handshake or read, and counted in
//! `gatehouse_gateway_connections_refused_total` (accepting and closing, rather than
//! no longer accepting, answers at once instead of leaving clients in the kernel's
//! backlog; `gatehouse_gateway_connections_open` counts the others). hyper enforces the
//! header limits (`--max-header-bytes`, `--max-headers`: 431) and HTTP/2's streams and
//! PINGs; each connection's idle and header timeouts are [`crate::conn`]'s.
//!
//! Graceful shutdown: when the shutdown signal fires, each loop stops accepting, asks
//! every open connection to finish (HTTP/1.1: close after the in-flight response;
//! HTTP/2: GOAWAY) and waits for them, at most [`DRAIN_TIMEOUT`], so in-flight requests
//! complete.
//!
//! The certificate is `--tls-cert`/`--tls-key` (PEM) when given; otherwise a
//! self-signed one for `localhost`, `127.0.0.1` and the host name is generated once
//! (rcgen) and kept in `<data dir>/tls/`, so clients that pin it keep working across
//! restarts.
//!
//! # Shared state
//!
//! Each loop owns its listener, a `JoinSet` of its connection tasks (reaped as they
//! finish) and its count of open connections (an atomic each task decrements when it
//! ends); connections share only the `Arc<Gateway>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use gatehouse_node::Shutdown;
use gatehouse_node::pki::write_private;

use crate::conn::{Activity, Expired, Timeouts, Tracked, Watched, watchdog};
use crate::limits::GatewayLimits;
use crate::proxy::{ConnInfo, Gateway};

/// Longest wait for in-flight requests at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of the HTTPS listener.
pub fn tls_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => self_signed(data_dir, hostname)?,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM certificate in {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read a private key from {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `<data dir>/tls/gateway.{crt,key}`, generated on first use.
fn self_signed(data_dir: &Path, hostname: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert = dir.join("gateway.crt");
    let key = dir.join("gateway.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !hostname.is_empty() && !names.iter().any(|n| n == hostname) {
        names.push(hostname.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("cannot generate a self-signed certificate")?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key.display()))?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

/// hyper's connection builder, with the limits it enforces itself.
fn builder(limits: &GatewayLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 header timer runs from the moment the connection is idle: a
    // backstop behind the watchdog's separate idle and head timeouts.
    let backstop = match (limits.header_read_timeout(), limits.http1_keep_alive_idle()) {
        (Some(head), Some(idle)) => Some(head + idle),
        _ => None,
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(backstop)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_timeout(Duration::from_secs(limits.http2_keep_alive_timeout_seconds));
    if limits.http2_keep_alive_interval_seconds > 0 {
        http2.keep_alive_interval(Duration::from_secs(
            limits.http2_keep_alive_interval_seconds,
        ));
    }
    builder
}

/// One open connection of a listener; dropping it closes the count.
struct Open {
    listener: Arc<AtomicU32>,
    gateway: Arc<Gateway>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.listener.fetch_sub(1, Ordering::AcqRel);
        self.gateway
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections on `listener` until `shutdown`, then drains.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
) {
    let proto = if tls.is_some() { "https" } else { "http" };
    let limits = &gateway.limits;
    let builder = Arc::new(builder(limits));
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout(),
        http1_idle: limits.http1_keep_alive_idle(),
        http2_idle: limits.http2_idle(),
    };
    let max_connections = limits.max_connections;
    let open = Arc::new(AtomicU32::new(0));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, remote) = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, proto, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Acquire) >= max_connections {
            gateway
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, proto, max_connections, "connection refused: listener full");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        gateway
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        let guard = Open {
            listener: open.clone(),
            gateway: gateway.clone(),
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo { remote, proto };
        let gateway = gateway.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _guard = guard;
            match tls {
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %remote, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let activity = Activity::new(h2);
                    let io = TokioIo::new(Watched::new(stream, activity.clone()));
                    serve(&builder, io, &gateway, conn, activity, timeouts, shutdown).await;
                }
                None => {
                    let activity = Activity::new(false);
                    let io = TokioIo::new(Watched::new(stream, activity.clone()));
                    serve(&builder, io, &gateway, conn, activity, timeouts, shutdown).await;
                }
            }
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, proto, "draining connections");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            proto,
            "connections still open after {DRAIN_TIMEOUT:?}; closing them"
        );
        connections.abort_all();
    }
}

/// Serves one connection until it ends, its [`watchdog`] ends it, or `shutdown`
/// (then it drains: see the module docs).
async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    gateway: &Arc<Gateway>,
    conn: ConnInfo,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    shutdown: Shutdown,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = {
        let gateway = gateway.clone();
        let activity = activity.clone();
        service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let in_flight = activity.begin(request.version());
            let gateway = gateway.clone();
            async move {
                let response = gateway.handle(conn, request).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Tracked::new(body, in_flight)),
                )
            }
        })
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            return;
        }
        expired = watchdog(&activity, timeouts) => {
            match expired {
                Expired::SlowHead => {
                    gateway.metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(remote = %conn.remote, "closing a connection: its request head is too slow");
                    return;
                }
                Expired::Idle => {
                    gateway.metrics.idle_closes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        () = shutdown.wait() => {}
    }
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(DRAIN_TIMEOUT, connection).await {
        Ok(Err(error)) => {
            tracing::debug!(error = %error, "connection ended with an error while draining")
        }
        Ok(Ok(())) => {}
        Err(_) => tracing::debug!("connection still busy after {DRAIN_TIMEOUT:?}; closed"),
    }
}
