//! `gatehouse healthcheck`: probes for Docker health checks, so slim images need no curl.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// What to probe.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Probe {
    /// grpc.health.v1 Check on `host:port` (overall status): control, token-service. Over
    /// TLS verified against `--cluster-ca` when given (their gRPC ports are TLS).
    Grpc {
        /// e.g. 127.0.0.1:50051
        addr: String,
        /// The cluster CA certificate (PEM): probe over TLS.
        #[arg(long, env = "GATEHOUSE_CLUSTER_CA")]
        cluster_ca: Option<std::path::PathBuf>,
    },
    /// GET an `http://` URL and expect 200: gateway `/healthz`, backends `/health`.
    Http {
        /// e.g. http://127.0.0.1:8280/healthz
        url: String,
    },
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// Ok when the probed service is healthy.
pub async fn run(probe: &Probe) -> anyhow::Result<()> {
    match probe {
        Probe::Grpc { addr, cluster_ca } => {
            let check = async {
                let url = match cluster_ca {
                    Some(_) => format!("https://{addr}"),
                    None => format!("http://{addr}"),
                };
                let channel =
                    gatehouse_node::tls::server_verified_endpoint(&url, cluster_ca.as_deref())?
                        .connect()
                        .await
                        .with_context(|| format!("cannot connect to {addr}"))?;
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .with_context(|| format!("{addr}: health check failed"))?
                    .into_inner()
                    .status();
                if status != ServingStatus::Serving {
                    bail!("{addr}: {}", status.as_str_name());
                }
                anyhow::Ok(())
            };
            tokio::time::timeout(TIMEOUT, check)
                .await
                .with_context(|| format!("{addr}: no answer within {TIMEOUT:?}"))?
        }
        Probe::Http { url } => {
            let rest = url
                .strip_prefix("http://")
                .with_context(|| format!("{url}: only http:// URLs can be probed"))?;
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let path = if path.is_empty() { "/" } else { path };
            let addr: SocketAddr = tokio::net::lookup_host(authority)
                .await
                .with_context(|| format!("cannot resolve {authority}"))?
                .next()
                .with_context(|| format!("{authority} has no address"))?;
            match service_kit::healthcheck::status(addr, path, TIMEOUT).await? {
                200 => Ok(()),
                status => bail!("{url} answered {status}"),
            }
        }
    }
}
