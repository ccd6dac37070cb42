//! Gatehouse token-service: the key manager.
//!
//! It issues OAuth2 access tokens (client credentials, RFC 6749 §4.4) as JWTs signed
//! with its own keys, revokes (RFC 7009) and introspects (RFC 7662) them, serves the
//! public keys (`/oauth2/jwks`), and provisions application keys for control over
//! gRPC. Its parts:
//!
//! - the read model (`gatehouse_node::read_model`): the domain state folded from the
//!   log — clients, applications, subscriptions, APIs, signing keys, revoked tokens.
//!   token-service never asks control for any of it.
//! - the write path (`gatehouse_node::commands`): registering clients, regenerating
//!   secrets, revoking clients and tokens, publishing signing keys, all as domain
//!   commands appended to the log.
//! - [`keystore`]: the private signing keys, in files of mode 0600 in the data
//!   directory — never on the log.
//! - [`secrets`]: consumer secrets, shown once and stored as argon2id hashes.
//! - [`authority`]: what the HTTPS and gRPC sides share: authenticating clients,
//!   granting scopes, signing, verifying, rotating keys, the first admin client.
//! - [`http`] + [`tls`]: the HTTPS endpoints (axum over hyper and rustls), behind the
//!   [`guard`]: what one anonymous caller may cost ([`limits`]: body and parameter caps
//!   with one linear [`form`] parser, read timeouts, a connection cap, the bounded
//!   argon2 [`pool`], failure [`budget`]s with backoff).
//! - [`grpc`]: the `KeyManager` service (served by `gatehouse_node::grpc::GrpcServer`,
//!   with reflection, `grpc.health.v1` and a span per call).
//!
//! [`serve`] wires them; [`main`] is the process around it.

pub mod authority;
pub mod budget;
pub mod form;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod keystore;
pub mod limits;
pub mod pool;
pub mod secrets;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatehouse_node::auth::AdminAuth;
use gatehouse_node::commands::CommandExecutor;
use gatehouse_node::grpc::GrpcServer;
use gatehouse_node::read_model::Follower;
use gatehouse_node::tls::ClusterTlsArgs;
use gatehouse_node::{LogArgs, RuntimeArgs, Shutdown};
use gatehouse_proto::keymanager::key_manager_server::KeyManagerServer;

use crate::authority::{Authority, AuthorityConfig};
use crate::grpc::KeyManagerService;
use crate::keystore::KeyStore;

/// token-service's configuration: flags, or the environment variables named beside them.
#[derive(clap::Args, Clone)]
pub struct TokenServiceConfig {
    /// Address of the HTTPS token endpoint.
    #[arg(
        long = "listen-https",
        env = "GATEHOUSE_TOKEN_HTTPS_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub listen_https: SocketAddr,
    /// Address of the gRPC KeyManager API (internal: for control only, mutual TLS).
    #[arg(
        long = "listen-grpc",
        env = "GATEHOUSE_TOKEN_GRPC_LISTEN",
        default_value = "0.0.0.0:50052"
    )]
    pub listen_grpc: SocketAddr,
    /// Directory for token-service's own files: the key store (`keys/`), the
    /// self-signed certificate (`tls/`), the embedded event log (`eventlog/`).
    #[arg(
        long = "data-dir",
        env = "GATEHOUSE_DATA_DIR",
        default_value = "./data/token-service"
    )]
    pub data_dir: PathBuf,
    /// `iss` of the tokens (the token endpoint's public URL).
    #[arg(long, env = "GATEHOUSE_TOKEN_ISSUER", default_value = gatehouse_tokens::DEFAULT_ISSUER)]
    pub issuer: String,
    /// Algorithm of new signing keys.
    #[arg(long = "signing-alg", env = "GATEHOUSE_SIGNING_ALG", default_value = "RS256", value_parser = ["RS256", "ES256"])]
    pub signing_alg: String,
    /// PEM certificate chain of the HTTPS endpoint (default: a self-signed one,
    /// generated into `<data-dir>/tls/`).
    #[arg(long = "tls-cert", env = "GATEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long = "tls-key", env = "GATEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Client id of the first admin client (with `--admin-client-secret`). Without
    /// both, one is generated on first start and printed once.
    #[arg(
        long = "admin-client-id",
        env = "GATEHOUSE_ADMIN_CLIENT_ID",
        requires = "admin_client_secret"
    )]
    pub admin_client_id: Option<String>,
    /// Secret of the first admin client; only its hash is stored.
    #[arg(
        long = "admin-client-secret",
        env = "GATEHOUSE_ADMIN_CLIENT_SECRET",
        hide_env_values = true,
        requires = "admin_client_id",
        conflicts_with = "admin_client_secret_file"
    )]
    pub admin_client_secret: Option<String>,
    /// A file with the first admin client's secret. If it does not exist, a random
    /// secret is generated into it (mode 0600) on first start: compose keeps it in a
    /// volume, so no secret is ever written in a configuration file.
    #[arg(
        long = "admin-client-secret-file",
        env = "GATEHOUSE_ADMIN_CLIENT_SECRET_FILE",
        requires = "admin_client_id"
    )]
    pub admin_client_secret_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://<this>/metrics (off when unset).
    #[arg(long = "metrics-listen", env = "GATEHOUSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub limits: limits::EdgeLimits,
    #[command(flatten)]
    pub cluster: ClusterTlsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl std::fmt::Debug for TokenServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServiceConfig")
            .field("listen_https", &self.listen_https)
            .field("listen_grpc", &self.listen_grpc)
            .field("data_dir", &self.data_dir)
            .field("issuer", &self.issuer)
            .field("signing_alg", &self.signing_alg)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("admin_client_id", &self.admin_client_id)
            .field(
                "admin_client_secret",
                &self.admin_client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("metrics_listen", &self.metrics_listen)
            .field("limits", &self.limits)
            .field("cluster", &self.cluster)
            .field("log", &self.log)
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// How long start-up waits for the state to be rebuilt from the log.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The admin secret kept in `path`, generated into it (mode 0600) if it is not there.
fn secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let secret = secrets::generate_secret();
            gatehouse_node::pki::write_private(path, secret.as_bytes())?;
            println!(
                "admin client secret generated into {} (read it there; it is shown nowhere else)",
                path.display()
            );
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `token-service`'s and `gatehouse token-service`'s main.
pub fn main(config: TokenServiceConfig) -> std::process::ExitCode {
    let runtime = config.runtime.clone();
    gatehouse_node::run_node("token-service", "info", &runtime, |node| {
        serve(config, node.shutdown)
    })
}

/// Runs token-service until `shutdown`: rebuilds the state from the log, makes sure it
/// has an active signing key and a first admin client, then serves the HTTPS endpoints
/// and the gRPC API.
pub async fn serve(config: TokenServiceConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let log = config.log.open(&config.data_dir).await?;
    serve_on_log(config, log, shutdown).await
}

/// [`serve`] on a log the caller has opened (`config.log` is then unused): lets one
/// process (the all-in-one) share its embedded log, which only one opener may hold,
/// between control and token-service.
pub async fn serve_on_log(
    config: TokenServiceConfig,
    log: Arc<dyn gatehouse_eventlog::EventLog>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let node_tls = config.cluster.load("token-service")?;
    let follower = Follower::rebuild(log.clone(), REBUILD_TIMEOUT).await?;
    let model = follower.model.clone();
    let described_log = log.describe();

    let keys = KeyStore::open(config.data_dir.join("keys"))?;
    let authority = Arc::new(Authority::new(
        AuthorityConfig {
            issuer: config.issuer.clone(),
            signing_alg: config.signing_alg.clone(),
        },
        model.clone(),
        CommandExecutor::new(log, model.clone()),
        keys,
        secrets::SecretChecker::new(pool::Argon2Pool::new(
            config.limits.argon2_workers(),
            config.limits.argon2_queue(),
        )),
    ));
    let kid = authority
        .ensure_signing_key()
        .await
        .context("cannot set up a signing key")?;
    tracing::info!(kid, "signing with the active key");
    let admin_secret = match &config.admin_client_secret_file {
        Some(path) => Some(secret_file(path)?),
        None => config.admin_client_secret.clone(),
    };
    let created = authority
        .bootstrap_admin(config.admin_client_id.as_deref(), admin_secret.as_deref())
        .await
        .context("cannot set up the first admin client")?;
    if let Some(admin) = created {
        println!(
            "admin client created: client_id={} client_secret={} (shown once)",
            admin.client_id, admin.client_secret
        );
    }
    authority.secrets().warm_up().await;

    let certificate = tls::certificate(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        &config.data_dir,
    )?;
    if certificate.generated {
        tracing::info!(cert = %certificate.cert.display(), "generated a self-signed certificate");
    }
    let acceptor = tls::acceptor(&certificate)?;
    let https = tokio::net::TcpListener::bind(config.listen_https)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_https))?;
    let https_addr = https.local_addr()?;
    let grpc = tokio::net::TcpListener::bind(config.listen_grpc)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_grpc))?;
    let grpc_addr = grpc.local_addr()?;

    println!(
        "token-service ready on https://{https_addr} (token endpoint) and grpc {grpc_addr} (KeyManager; {described_log})"
    );
    let key_manager = KeyManagerService::new(
        authority.clone(),
        AdminAuth::new(config.issuer.clone(), model.clone()),
    );
    let grpc_task = tokio::spawn(
        GrpcServer::new()
            .tls(node_tls.server_config()?)
            .add_service(KeyManagerServer::new(key_manager))
            .serve(grpc, shutdown.clone()),
    );
    let https_task = tokio::spawn(tls::serve(
        https,
        acceptor,
        http::router(authority, Arc::new(guard::Guard::new(&config.limits))),
        tls::ConnectionLimits::from(&config.limits),
        shutdown.wait_owned(),
    ));
    let metrics_task = config.metrics_listen.map(|addr| {
        tokio::spawn(gatehouse_node::metrics::serve(
            addr,
            "token-service",
            model.clone(),
            shutdown.wait_owned(),
        ))
    });
    let (grpc_result, https_result) = tokio::join!(grpc_task, https_task);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    drop(follower);
    https_result.context("HTTPS server task failed")?;
    grpc_result.context("gRPC server task failed")??;
    Ok(())
}
