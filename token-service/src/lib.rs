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

use anyhow::Context;
use gatehouse_node::auth::AdminAuth;
use gatehouse_node::commands::CommandExecutor;
use gatehouse_node::grpc::GrpcServer;
use gatehouse_node::metrics::MetricsArgs;
use gatehouse_node::{NodeArgs, NodeContext};
use gatehouse_proto::keymanager::key_manager_server::KeyManagerServer;
use gatehouse_tokens::DEFAULT_ISSUER;

use crate::authority::{Authority, AuthorityConfig};
use crate::grpc::KeyManagerService;
use crate::keystore::KeyStore;

/// token-service's configuration: flags, or the environment variables named beside them.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenServiceConfig {
    /// Address of the HTTPS token endpoint.
    #[arg(long, env = "GATEHOUSE_TOKEN_HTTPS_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen_https: SocketAddr,
    /// Address of the gRPC KeyManager API (internal: for control only, mutual TLS).
    #[arg(long, env = "GATEHOUSE_TOKEN_GRPC_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen_grpc: SocketAddr,
    /// Directory for token-service's own files: the key store (`keys/`), the
    /// self-signed certificate (`tls/`), the embedded event log (`eventlog/`).
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "./data/token-service")]
    pub data_dir: PathBuf,
    /// `iss` of the tokens (the token endpoint's public URL).
    #[arg(long, env = "GATEHOUSE_TOKEN_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// Algorithm of new signing keys.
    #[arg(
        long,
        env = "GATEHOUSE_SIGNING_ALG",
        default_value = "RS256",
        value_parser = ["RS256", "ES256"]
    )]
    pub signing_alg: String,
    /// PEM certificate chain of the HTTPS endpoint (default: a self-signed one,
    /// generated into `<data-dir>/tls/`).
    #[arg(long, env = "GATEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "GATEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub admin: FirstAdminArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    /// What one anonymous caller may cost: body and form sizes, timeouts, connections,
    /// the argon2 pool, failure budgets.
    #[command(flatten)]
    pub limits: limits::EdgeLimits,
}

/// The first admin client, registered on the first start: the one given (its id with a
/// secret or a secret file), or else a generated one, printed once.
#[derive(clap::Args, Clone, Default)]
pub struct FirstAdminArgs {
    /// Client id of the first admin client (with `--admin-client-secret`). Without
    /// both, one is generated on first start and printed once.
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_ID", requires = "admin_client_secret")]
    pub admin_client_id: Option<String>,
    /// Secret of the first admin client; only its hash is stored.
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_CLIENT_SECRET",
        hide_env_values = true,
        requires = "admin_client_id",
        conflicts_with = "admin_client_secret_file"
    )]
    pub admin_client_secret: Option<String>,
    /// A file with the first admin client's secret. If it does not exist, a random
    /// secret is generated into it (mode 0600) on first start: compose keeps it in a
    /// volume, so no secret is ever written in a configuration file.
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_SECRET_FILE", requires = "admin_client_id")]
    pub admin_client_secret_file: Option<PathBuf>,
}

/// Shows everything but the secret.
impl std::fmt::Debug for FirstAdminArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = self.admin_client_secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("FirstAdminArgs")
            .field("admin_client_id", &self.admin_client_id)
            .field("admin_client_secret", &redacted)
            .field("admin_client_secret_file", &self.admin_client_secret_file)
            .finish()
    }
}

impl FirstAdminArgs {
    /// The given secret: read from `--admin-client-secret-file` (generated into it if
    /// it is not there), or `--admin-client-secret`.
    fn secret(&self) -> anyhow::Result<Option<String>> {
        match &self.admin_client_secret_file {
            Some(path) => secret_file(path).map(Some),
            None => Ok(self.admin_client_secret.clone()),
        }
    }
}

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
            gatehouse_node::pki::write_private(path, secret.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
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
    let runtime = config.node.runtime.clone();
    gatehouse_node::run_node("token-service", "info", &runtime, |node| {
        serve(config, node)
    })
}

/// Runs token-service until `node.shutdown`: rebuilds the state from the log
/// (`node.log`, or else `config.node.log`), makes sure it has an active signing key and
/// a first admin client, then serves the HTTPS endpoints and the gRPC API.
pub async fn serve(config: TokenServiceConfig, node: NodeContext) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let folding = config
        .node
        .start_folding("token-service", &config.data_dir, node.log)
        .await?;
    let model = folding.follower.model.clone();
    let described_log = folding.log.describe();

    let keys = KeyStore::open(config.data_dir.join("keys"))?;
    let authority = Arc::new(Authority::new(
        AuthorityConfig {
            issuer: config.issuer.clone(),
            signing_alg: config.signing_alg.clone(),
        },
        model.clone(),
        CommandExecutor::new(folding.log, model.clone()),
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
    let admin_secret = config.admin.secret()?;
    let created = authority
        .bootstrap_admin(
            config.admin.admin_client_id.as_deref(),
            admin_secret.as_deref(),
        )
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
            .tls(folding.tls.server_config()?)
            .add_service(KeyManagerServer::new(key_manager))
            .serve(grpc, node.shutdown.clone()),
    );
    let https_task = tokio::spawn(tls::serve(
        https,
        acceptor,
        http::router(authority, Arc::new(guard::Guard::new(&config.limits))),
        tls::ConnectionLimits::from(&config.limits),
        node.shutdown.wait_owned(),
    ));
    let metrics_task = config
        .metrics
        .spawn("token-service", &model, &node.shutdown);
    let (grpc_result, https_result) = tokio::join!(grpc_task, https_task);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    drop(folding.follower);
    https_result.context("HTTPS server task failed")?;
    grpc_result.context("gRPC server task failed")??;
    Ok(())
}
