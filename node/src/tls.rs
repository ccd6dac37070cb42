//! Mutual TLS between nodes: a node's certificate files, the rustls configurations
//! built from them, and the accept side that tells each gRPC call who its caller is.
//!
//! - [`ClusterTlsArgs`]: the flags every node takes (`--cluster-ca`, `--node-cert`,
//!   `--node-key`, `--cluster-crl`), loaded into a [`NodeTls`].
//! - [`NodeTls::server_config`]: TLS 1.2/1.3 with ALPN `h2`; a client certificate is
//!   verified against the cluster CA and the revocation list when one is offered, and
//!   not required (admins call the admin API with bearer tokens, not certificates). Each
//!   service decides what an unauthenticated peer may do.
//! - [`TlsIncoming`]: turns a listener into TLS connections, handshaking each off the
//!   accept loop with a deadline and a cap on handshakes in progress, so slow or many
//!   anonymous clients cannot stall it. Each connection carries a [`Peer`] — the
//!   remote address and, for a valid client certificate, its [`NodeIdentity`] — which
//!   every call on it finds in its request extensions ([`caller_node`]).
//! - [`NodeTls::channel`]: a gRPC channel to another node, presenting this node's
//!   certificate and trusting only the cluster CA.
//! - [`accept_any_certificate`]: the opposite, like `curl -k`, for the self-signed
//!   HTTPS endpoints of token-service and the gateways when a local client (the
//!   bootstrap, a health check, a test) is not about their certificate.
//!
//! # Shared state
//!
//! The rustls configurations are immutable and shared behind `Arc`s. [`TlsIncoming`]'s
//! accept task owns the listener and a semaphore bounding the handshakes in flight; it
//! hands finished connections to the server over a bounded channel and stops when the
//! server drops the stream.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::pki::{NodeIdentity, NodeRole};

/// Longest TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once on one listener.
pub const MAX_HANDSHAKES: usize = 256;

/// Why a node's TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Where a node finds its identity and the cluster's trust: flags, or the environment
/// variables beside them. `gatehouse ca init` / `gatehouse ca issue` create the files.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTlsArgs {
    /// The cluster CA certificate (PEM) that every node's certificate is issued by
    /// (`gatehouse ca init`)
    #[arg(long, env = "GATEHOUSE_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), issued by the cluster CA (`gatehouse ca issue`)
    #[arg(long, env = "GATEHOUSE_NODE_CERT", requires = "node_key")]
    pub node_cert: Option<PathBuf>,
    /// This node's private key (PEM)
    #[arg(long, env = "GATEHOUSE_NODE_KEY", requires = "node_cert")]
    pub node_key: Option<PathBuf>,
    /// The cluster CA's revocation list (PEM, `gatehouse ca revoke`): certificates it
    /// lists are refused
    #[arg(long, env = "GATEHOUSE_CLUSTER_CRL")]
    pub cluster_crl: Option<PathBuf>,
}

impl ClusterTlsArgs {
    /// The files of a CA directory for `identity` (as `gatehouse ca issue` names them).
    pub fn in_ca_dir(dir: &Path, identity: &NodeIdentity) -> ClusterTlsArgs {
        let stem = identity.file_stem();
        ClusterTlsArgs {
            cluster_ca: Some(dir.join("ca.crt")),
            node_cert: Some(dir.join(format!("{stem}.crt"))),
            node_key: Some(dir.join(format!("{stem}.key"))),
            cluster_crl: Some(dir.join("revoked.crl")),
        }
    }

    /// Loads the files; `node` names the node in the error when they are missing.
    pub fn load(&self, node: &str) -> Result<NodeTls, TlsError> {
        let (Some(ca), Some(cert), Some(key)) = (&self.cluster_ca, &self.node_cert, &self.node_key)
        else {
            return Err(TlsError::Config(format!(
                "{node} needs its node identity: --cluster-ca, --node-cert and --node-key \
                 (GATEHOUSE_CLUSTER_CA, GATEHOUSE_NODE_CERT, GATEHOUSE_NODE_KEY); create them \
                 with `gatehouse ca init` and `gatehouse ca issue` (README, \"Security\")"
            )));
        };
        NodeTls::load(ca, cert, key, self.cluster_crl.as_deref())
    }
}

/// A node's identity and trust, loaded: its certificate and key, the cluster CA, the
/// revocation list.
#[derive(Clone)]
pub struct NodeTls {
    /// What this node's own certificate says it is.
    pub identity: NodeIdentity,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<rustls::RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl NodeTls {
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        crl: Option<&Path>,
    ) -> Result<NodeTls, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| file_error(path, e));
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&ca_pem) {
            let der = der.map_err(|e| file_error(ca, format!("bad PEM certificate: {e}")))?;
            roots
                .add(der)
                .map_err(|e| file_error(ca, format!("not a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(file_error(ca, "holds no certificate"));
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(cert, format!("bad PEM certificate: {e}")))?;
        let first = certs
            .first()
            .ok_or_else(|| file_error(cert, "holds no certificate"))?;
        let identity = NodeIdentity::from_certificate(first).ok_or_else(|| {
            file_error(
                cert,
                "is not a Gatehouse node certificate (no spiffe://gatehouse/<role>/<name> name)",
            )
        })?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| file_error(key, format!("bad PEM private key: {e}")))?;
        let crls = match crl {
            Some(path) => CertificateRevocationListDer::pem_slice_iter(&read(path)?)
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(path, format!("bad PEM revocation list: {e}")))?,
            None => Vec::new(),
        };
        let tls = NodeTls {
            identity,
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            certs,
            crls,
        };
        // Fail at start, not at the first handshake.
        tls.server_config()?;
        Ok(tls)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).expect("checked when loaded")
    }

    /// The server side (see the module docs).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .with_crls(self.crls.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key())
            .map_err(|e| TlsError::Config(format!("the node certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side of a call to another node: this node's certificate, trusting
    /// only the cluster CA (for HTTP clients that are not tonic channels).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.certs.clone(), self.key())
            .map_err(|e| TlsError::Config(format!("the node certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A lazily connecting gRPC channel to `url` (`https://host:port`) presenting this
    /// node's certificate.
    pub fn channel(&self, url: &str) -> Result<tonic::transport::Channel, TlsError> {
        Ok(self.endpoint(url)?.connect_lazy())
    }

    /// The endpoint behind [`channel`](Self::channel), to tune before connecting.
    pub fn endpoint(&self, url: &str) -> Result<tonic::transport::Endpoint, TlsError> {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ));
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| TlsError::Config(format!("invalid URL {url:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| TlsError::Config(format!("TLS for {url}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        Ok(endpoint)
    }

    /// The cluster CA, PEM (what clients such as grpcurl's `-cacert` trust).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }
}

/// A node's URL flag, which must be `https://` (every internal plane is mutual TLS).
pub fn https_url(flag: &str, url: &str) -> Result<String, TlsError> {
    if url.starts_with("https://") {
        Ok(url.to_string())
    } else {
        Err(TlsError::Config(format!(
            "{flag} {url:?}: internal planes speak mutual TLS: use an https:// URL"
        )))
    }
}

/// An endpoint for a client that is not a node (bootstrap, tools): `https://` verified
/// against `ca` (the cluster CA), or plain `http://`.
pub fn server_verified_endpoint(
    url: &str,
    ca: Option<&Path>,
) -> Result<tonic::transport::Endpoint, TlsError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| TlsError::Config(format!("invalid URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca = ca.ok_or_else(|| {
        TlsError::Config(format!(
            "{url} speaks TLS: give the cluster CA certificate (--cluster-ca, GATEHOUSE_CLUSTER_CA) to verify it"
        ))
    })?;
    let pem = std::fs::read(ca).map_err(|e| file_error(ca, e))?;
    endpoint
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )
        .map_err(|e| TlsError::Config(format!("TLS for {url}: {e}")))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    /// The node its client certificate proves, if it offered a valid one.
    pub node: Option<NodeIdentity>,
}

/// The node that makes this gRPC call, proven by its client certificate.
pub fn caller_node<T>(request: &tonic::Request<T>) -> Option<&NodeIdentity> {
    request
        .extensions()
        .get::<Peer>()
        .and_then(|peer| peer.node.as_ref())
}

/// A certificate verifier that accepts any certificate for any name, but still checks
/// the handshake's signatures with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // The handshake's own signatures are still checked (with the provider's
    // algorithms): only the certificate's chain and name are not.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let verify = rustls::crypto::verify_tls12_signature;
        verify(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let verify = rustls::crypto::verify_tls13_signature;
        verify(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client configuration (ring) that accepts any server certificate, like
/// `curl -k`: only for Gatehouse's own self-signed HTTPS endpoints, never between nodes
/// (those verify the cluster CA, see [`NodeTls::client_config`]).
pub fn accept_any_certificate() -> rustls::ClientConfig {
    let provider = provider();
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth()
}

/// An internal gRPC service that answers nodes of one role only, proven by their node
/// certificate (GatewaySync: gateways; KeyManager: control). It says why it refuses a
/// call in the same words whatever the service.
#[derive(Debug, Clone, Copy)]
pub struct AnswersOnly {
    /// The service, as the refusal names it (`GatewaySync`).
    pub service: &'static str,
    /// The role its callers must have.
    pub role: NodeRole,
    /// Those callers, as the refusal names them (`gateways`).
    pub callers: &'static str,
    /// Whose certificate a caller must present (`a gateway's`).
    pub certificate: &'static str,
}

impl AnswersOnly {
    /// The node calling `request`, if it has the role: UNAUTHENTICATED without a node
    /// certificate, PERMISSION_DENIED from a node of another role.
    pub fn caller<T>(&self, request: &tonic::Request<T>) -> Result<NodeIdentity, tonic::Status> {
        let AnswersOnly {
            service,
            callers,
            certificate,
            ..
        } = self;
        match caller_node(request) {
            None => Err(tonic::Status::unauthenticated(format!(
                "{service} answers {callers} only: present {certificate} node certificate \
                 (mutual TLS under the cluster CA)"
            ))),
            Some(node) if node.role != self.role => Err(tonic::Status::permission_denied(format!(
                "{service} answers {callers} only, not {node}"
            ))),
            Some(node) => Ok(node.clone()),
        }
    }
}

/// A connection with its [`Peer`], what [`TlsIncoming`] yields.
pub struct PeerStream<S> {
    stream: S,
    peer: Peer,
}

impl<S> tonic::transport::server::Connected for PeerStream<S> {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// TLS connections accepted on a listener (see the module docs).
pub type TlsIncoming =
    ReceiverStream<io::Result<PeerStream<tokio_rustls::server::TlsStream<TcpStream>>>>;

/// Accepts on `listener` and handshakes each connection with `config`, at most
/// `max_handshakes` at once, each within `timeout`.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    max_handshakes: usize,
    timeout: Duration,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(max_handshakes.max(1)));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let node = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|cert| NodeIdentity::from_certificate(cert));
                        let peer = Peer {
                            remote: Some(remote),
                            node,
                        };
                        let _ = tx.send(Ok(PeerStream { stream, peer })).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %remote, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Plain TCP connections on a listener, each with a [`Peer`] that proves no node (for
/// ports that serve without TLS).
pub fn plain_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<PeerStream<TcpStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            remote: stream.peer_addr().ok(),
            node: None,
        };
        Ok(PeerStream { stream, peer })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{ClusterCa, NodeRole};
    use rustls_pki_types::ServerName;
    use tokio_stream::StreamExt;

    fn node(ca: &ClusterCa, role: NodeRole, name: &str) -> NodeTls {
        let id = NodeIdentity::new(role, name).unwrap();
        ca.issue(&id, &["localhost".into()]).unwrap();
        let args = ClusterTlsArgs::in_ca_dir(ca.dir(), &id);
        args.load(name).unwrap()
    }

    /// Connects to `addr` as `client` (None: without a client certificate).
    async fn connect(
        addr: SocketAddr,
        roots: &NodeTls,
        client: Option<&NodeTls>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = match client {
            Some(client) => client.client_config().unwrap(),
            None => Arc::new(
                rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots.roots.clone())
                    .with_no_client_auth(),
            ),
        };
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate on the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
            Ok(Err(e)) => Err(e),
            _ => Ok(stream),
        }
    }

    /// A loopback listener on a free port, accepting TLS as `server`.
    async fn serve(server: &NodeTls) -> (SocketAddr, TlsIncoming) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server.server_config().unwrap();
        (
            addr,
            tls_incoming(listener, config, 8, Duration::from_secs(5)),
        )
    }

    #[tokio::test]
    async fn a_client_certificate_names_the_node_and_a_revoked_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let control = node(&ca, NodeRole::Control, "control");
        let gateway = node(&ca, NodeRole::Gateway, "gateway-7");
        let other_dir = tempfile::tempdir().unwrap();
        let stranger = node(
            &ClusterCa::create(other_dir.path()).unwrap(),
            NodeRole::Gateway,
            "gateway-7",
        );

        let (addr, mut incoming) = serve(&control).await;
        let _client = connect(addr, &control, Some(&gateway)).await.unwrap();
        let peer = incoming.next().await.unwrap().unwrap().peer;
        assert_eq!(peer.node, gateway.identity.clone().into());

        let _anonymous = connect(addr, &control, None).await.unwrap();
        let peer = incoming.next().await.unwrap().unwrap().peer;
        assert_eq!(peer.node, None, "no certificate: no node");

        assert!(
            connect(addr, &control, Some(&stranger)).await.is_err(),
            "a certificate of another CA is refused"
        );

        // Revoked: the server loads the new revocation list.
        ca.revoke(&gateway.identity).unwrap();
        let control = ClusterTlsArgs::in_ca_dir(ca.dir(), &control.identity)
            .load("control")
            .unwrap();
        let (addr, mut incoming) = serve(&control).await;
        assert!(
            connect(addr, &control, Some(&gateway)).await.is_err(),
            "a revoked certificate is refused"
        );
        let _anonymous = connect(addr, &control, None).await.unwrap();
        let peer = incoming.next().await.unwrap().unwrap().peer;
        assert_eq!(peer.node, None, "only the anonymous connection got through");
    }
}
