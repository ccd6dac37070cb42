//! The `gatehouse` command line: every node as a subcommand, and the all-in-one.
//!
//! ```text
//! gatehouse up                 control + token-service + gateway + both backends, one process
//! gatehouse control            the control plane (same flags and code as the `control` binary)
//! gatehouse token-service      the key manager (same as `token-service`)
//! gatehouse gateway            a gateway replica (same as `gateway`)
//! gatehouse client-service     the demo backends (same as their own binaries)
//! gatehouse order-service
//! gatehouse bootstrap          seed the demo through the admin API (idempotent)
//! gatehouse ca ...             the cluster CA and node certificates (mutual TLS)
//! gatehouse api ...            import APIs (OpenAPI, WSO2 apictl projects), export them as OpenAPI
//! gatehouse config ...         the whole configuration as a file: export, diff, apply
//! gatehouse healthcheck ...    probes for Docker health checks
//! ```
//!
//! Each node subcommand parses the node's own configuration struct and calls the node's
//! own `main`, exactly as its stand-alone binary does, so the two entry points have one
//! flag set. The configuration reference ([`crate::reference`]) is generated from
//! [`Cli`] itself.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{bootstrap, healthcheck, up};

#[derive(Parser, Debug)]
#[command(name = "gatehouse", version, about = "Gatehouse: API management in Rust, event-sourced")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in this process (control, token-service, a gateway, the demo
    /// backends) on the embedded event log, seeded with the demo on first start.
    Up(up::UpConfig),
    /// Run the control plane (admin gRPC API).
    Control(gatehouse_control::ControlConfig),
    /// Run token-service, the key manager (OAuth2 token endpoint, application keys).
    TokenService(gatehouse_token_service::TokenServiceConfig),
    /// Run a gateway replica (the data plane).
    Gateway(gatehouse_gateway::GatewayConfig),
    /// Run the demo client-service backend.
    ClientService(service_kit::server::Cli),
    /// Run the demo order-service backend.
    OrderService(service_kit::server::Cli),
    /// Seed the demo (APIs, MyPythonApp, subscriptions, keys) through the admin API.
    Bootstrap(bootstrap::BootstrapConfig),
    /// The cluster CA and node certificates: init, issue, revoke, ensure.
    Ca {
        #[command(subcommand)]
        command: crate::ca::CaCommand,
    },
    /// APIs from OpenAPI documents or WSO2 apictl projects, and back to OpenAPI.
    Api {
        #[command(subcommand)]
        command: crate::gitops::ApiCommand,
    },
    /// The whole configuration as a declarative file: export, diff, apply.
    Config {
        #[command(subcommand)]
        command: crate::gitops::ConfigCommand,
    },
    /// Print the configuration reference (every flag and environment variable) as Markdown.
    #[command(hide = true)]
    ConfigReference,
    /// Exit 0 if a node answers its health check, 1 otherwise.
    Healthcheck {
        #[command(subcommand)]
        probe: healthcheck::Probe,
    },
}

/// Runs the subcommand.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Up(config) => up::main(config),
        Command::Control(config) => gatehouse_control::main(config),
        Command::TokenService(config) => gatehouse_token_service::main(config),
        Command::Gateway(config) => gatehouse_gateway::main(config),
        Command::ClientService(cli) => block_on(service_kit::server::run_cli(
            client_service::SERVICE,
            cli,
            client_service::router,
        )),
        Command::OrderService(cli) => block_on(service_kit::server::run_cli(
            order_service::SERVICE,
            cli,
            order_service::router,
        )),
        Command::Ca { command } => match crate::ca::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse ca: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Api { command } => admin_command("api", crate::gitops::api(command)),
        Command::Config { command } => admin_command("config", crate::gitops::config(command)),
        Command::ConfigReference => {
            print!("{}", crate::reference::markdown());
            ExitCode::SUCCESS
        }
        Command::Healthcheck { probe } => block_on(async move {
            match healthcheck::run(&probe).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Bootstrap(config) => block_on(async move {
            let _telemetry = gatehouse_node::telemetry::init("gatehouse-bootstrap");
            match bootstrap::run(&config).await {
                Ok(seeded) => {
                    println!(
                        "{}",
                        if seeded.changed {
                            "demo seeded"
                        } else {
                            "demo already seeded: nothing changed"
                        }
                    );
                    println!("{}", bootstrap::instructions(&config, &seeded));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gatehouse: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

/// Runs an admin command; its error on one line, exit code 1.
fn admin_command(name: &str, run: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    block_on(async move {
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse {name}: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs a one-off command (not a node) on a default runtime.
fn block_on(run: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run),
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
