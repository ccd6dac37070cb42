//! The shared `main`: command line, logging, serving and shutdown.
//!
//! ```text
//! client-service [--port PORT]               serve on 0.0.0.0:PORT
//! client-service healthcheck [--port PORT]   probe 127.0.0.1:PORT/health, exit 0/1
//! ```
//!
//! `PORT` comes from `--port`, else the `PORT` environment variable, else
//! [`DEFAULT_PORT`]. Port 0 picks a free port; the `ready on ADDR` log line
//! tells which (tests rely on this). Logs go to stdout, filtered by `RUST_LOG`
//! (default `info`), as JSON lines when `GATEHOUSE_LOG_FORMAT=json`; traces go over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::{ServiceInfo, healthcheck};

/// Port used when neither `--port` nor `PORT` is given.
pub const DEFAULT_PORT: u16 = 8000;

/// Command line of a service binary. The binary's name, version and about
/// text come from its [`ServiceInfo`] at run time.
#[derive(Debug, Parser)]
pub struct Cli {
    /// TCP port to listen on, on all interfaces (0 = any free port). For
    /// `healthcheck`, the local port to probe.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT, global = true)]
    pub port: u16,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// GET http://127.0.0.1:PORT/health and exit 0 if it answers 200, else 1
    /// (for Docker health checks; needs no curl).
    Healthcheck {
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

impl Cli {
    /// Parses `args` (including the program name); `Err` carries clap's
    /// usage/help output.
    pub fn try_parse_for<I, T>(info: ServiceInfo, args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Self::command()
            .name(info.name)
            .bin_name(info.name)
            .version(info.version)
            .about(info.description);
        Self::from_arg_matches(&command.try_get_matches_from(args)?)
    }
}

/// Runs a service binary: parses the command line, then [`run_cli`].
pub async fn run(info: ServiceInfo, router: impl FnOnce() -> Router) -> ExitCode {
    let cli = match Cli::try_parse_for(info, std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    run_cli(info, cli, router).await
}

/// Either probes a running instance (`healthcheck`) or serves `router()` until
/// SIGINT/SIGTERM. `router` is only called when serving, so the probe stays cheap.
pub async fn run_cli(info: ServiceInfo, cli: Cli, router: impl FnOnce() -> Router) -> ExitCode {
    match cli.command {
        Some(Command::Healthcheck { timeout_ms }) => {
            match healthcheck::check(cli.port, Duration::from_millis(timeout_ms)).await {
                Ok(()) => {
                    println!("{} healthy on port {}", info.name, cli.port);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{} unhealthy: {e}", info.name);
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let _telemetry = init_tracing(info.name);
            let addr = SocketAddr::from(([0, 0, 0, 0], cli.port));
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(service = info.name, "cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match serve(info, listener, router(), shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(service = info.name, "server failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish. Logs `ready on ADDR` first and `stopped` last.
/// Usable on its own by an all-in-one launcher with its own listeners.
pub async fn serve(
    info: ServiceInfo,
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(
        service = info.name,
        version = info.version,
        "ready on {addr}"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(service = info.name, "stopped");
    Ok(())
}

pub use gatehouse_telemetry::shutdown_signal;

/// Installs logging to stdout (filtered by `RUST_LOG`, default `info`; JSON lines
/// if `GATEHOUSE_LOG_FORMAT=json`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
/// OpenTelemetry trace export. Keep the guard alive: dropping it flushes the spans.
pub fn init_tracing(service: &str) -> gatehouse_telemetry::Telemetry {
    gatehouse_telemetry::init_with(service, "info", gatehouse_telemetry::LogTarget::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: ServiceInfo = ServiceInfo {
        name: "demo-service",
        version: "9.9.9",
        title: "Demo",
        description: "Demo.",
    };

    #[test]
    fn port_flag_before_or_after_subcommand() {
        let cli = Cli::try_parse_for(INFO, ["demo-service", "--port", "9001"]).unwrap();
        assert_eq!((cli.port, cli.command), (9001, None));

        let cli =
            Cli::try_parse_for(INFO, ["demo-service", "healthcheck", "--port", "9002"]).unwrap();
        assert_eq!(cli.port, 9002);
        assert_eq!(cli.command, Some(Command::Healthcheck { timeout_ms: 3000 }));

        let cli = Cli::try_parse_for(INFO, ["demo-service", "--port=9003", "healthcheck"]).unwrap();
        assert_eq!(cli.port, 9003);
    }

    #[test]
    fn rejects_bad_port_and_unknown_subcommand() {
        assert!(Cli::try_parse_for(INFO, ["demo-service", "--port", "http"]).is_err());
        assert!(Cli::try_parse_for(INFO, ["demo-service", "--port", "70000"]).is_err());
        assert!(Cli::try_parse_for(INFO, ["demo-service", "serve-forever"]).is_err());
    }

    #[test]
    fn help_uses_service_name() {
        let help = Cli::try_parse_for(INFO, ["demo-service", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("demo-service"), "{help}");
        assert!(help.contains("healthcheck"), "{help}");
    }
}
