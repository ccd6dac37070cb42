//! HTTPS for the token endpoint: rustls (ring provider) over hyper, HTTP/1.1.
//!
//! The certificate is the configured one (`--tls-cert` / `--tls-key`), or else a
//! self-signed one for `localhost`, `127.0.0.1` and `::1` that is generated into
//! `<data-dir>/tls/` on first start and reused afterwards (clients use `curl -k`, or
//! trust `<data-dir>/tls/cert.pem`).
//!
//! [`serve`] bounds what connections cost ([`ConnectionLimits`]): at most
//! `--max-connections` at once (one past it is closed as soon as it is accepted), the
//! TLS handshake within 10 s, each request's headers within
//! `--header-read-timeout-seconds` (also on a kept-alive connection waiting for its next
//! request: an idle connection does not hold its place for ever). Each request carries
//! its peer's address (axum's `ConnectInfo`), for the failure budgets.
//!
//! # Shared state
//!
//! The `rustls::ServerConfig` is immutable and shared by every connection through an
//! `Arc` (inside the `TlsAcceptor`). Each accepted connection is its own task, holding
//! one permit of a `tokio::sync::Semaphore` of `--max-connections` (taken with
//! `try_acquire` on accept, released when the task ends); a `GracefulShutdown` watcher
//! lets the shutdown wait for in-flight requests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use gatehouse_node::pki::write_private;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
}

impl From<&crate::limits::EdgeLimits> for ConnectionLimits {
    fn from(limits: &crate::limits::EdgeLimits) -> Self {
        ConnectionLimits {
            max_connections: limits.max_connections(),
            header_read_timeout: limits.header_read_timeout(),
        }
    }
}

/// What can go wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("set both --tls-cert and --tls-key, or neither (for a self-signed certificate)")]
    HalfConfigured,
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Where the certificate and key come from, and whether they were just generated.
pub struct CertificateSource {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

/// The configured certificate, or the self-signed one in `data_dir/tls/` (generated
/// if it is not there yet).
pub fn certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<CertificateSource, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(CertificateSource {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            generated: false,
        }),
        (None, None) => {
            let dir = data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if cert.exists() && key.exists() {
                return Ok(CertificateSource {
                    cert,
                    key,
                    generated: false,
                });
            }
            std::fs::create_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
            let mut params = rcgen::CertificateParams::new(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                "Gatehouse token-service (self-signed)",
            );
            let signing_key =
                rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
            let certificate = params
                .self_signed(&signing_key)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            // The key first: a certificate without its key would be reused half-made.
            let _ = std::fs::remove_file(&key);
            write_private(&key, signing_key.serialize_pem().as_bytes())
                .map_err(|e| file_error(&key, e))?;
            std::fs::write(&cert, certificate.pem()).map_err(|e| file_error(&cert, e))?;
            Ok(CertificateSource {
                cert,
                key,
                generated: true,
            })
        }
        _ => Err(TlsError::HalfConfigured),
    }
}

/// A TLS acceptor for the certificate chain and key in these PEM files, offering
/// HTTP/1.1 over ALPN.
pub fn acceptor(source: &CertificateSource) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| file_error(&source.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&source.cert, e))?;
    if certs.is_empty() {
        return Err(file_error(&source.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&source.key).map_err(|e| file_error(&source.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` within `limits` until `shutdown` completes, then
/// lets in-flight requests finish (for a while).
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "too many connections: closing this one");
            drop(stream);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready: no need to poll it first.
            app.clone().call(request)
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight HTTPS requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}
