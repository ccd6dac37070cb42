//! `gatehouse`: every Gatehouse node in one binary, and the all-in-one.
//!
//! ```text
//! gatehouse up                 control + token-service + gateway + both backends, one process
//! gatehouse control            the control plane (same as the `control` binary)
//! gatehouse token-service      the key manager (same as `token-service`)
//! gatehouse gateway            a gateway replica (same as `gateway`)
//! gatehouse client-service     the demo backends
//! gatehouse order-service
//! gatehouse bootstrap          seed the demo through the admin API (idempotent)
//! gatehouse healthcheck ...    probes for Docker health checks
//! ```

use gatehouse::{bootstrap, healthcheck, up};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse: API management in Rust, event-sourced"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    ClientService {
        #[arg(long, env = "PORT", default_value_t = 8000)]
        port: u16,
    },
    /// Run the demo order-service backend.
    OrderService {
        #[arg(long, env = "PORT", default_value_t = 8000)]
        port: u16,
    },
    /// Seed the demo (APIs, MyPythonApp, subscriptions, keys) through the admin API.
    Bootstrap(bootstrap::BootstrapConfig),
    /// Print the configuration reference (every flag and environment variable) as Markdown.
    #[command(hide = true)]
    ConfigReference,
    /// Exit 0 if a node answers its health check, 1 otherwise.
    Healthcheck {
        #[command(subcommand)]
        probe: healthcheck::Probe,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ConfigReference => {
            print!("{}", gatehouse::reference::markdown());
            Ok(())
        }
        Command::Healthcheck { probe } => {
            return match healthcheck::run(&probe).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Up(config) => {
            // Quiet by default: the nodes print their own "ready on" lines.
            let telemetry = gatehouse_node::telemetry::init_with_filter("gatehouse", "warn");
            up::run(config, telemetry.is_exporting()).await
        }
        Command::Control(config) => {
            let _telemetry = gatehouse_node::telemetry::init("control");
            gatehouse_control::serve(config, gatehouse_node::shutdown_signal()).await
        }
        Command::TokenService(config) => {
            let _telemetry = gatehouse_node::telemetry::init("token-service");
            gatehouse_token_service::serve(config, gatehouse_node::shutdown_signal()).await
        }
        Command::Gateway(mut config) => {
            let telemetry = gatehouse_node::telemetry::init("gateway");
            config.trace_requests = telemetry.is_exporting();
            gatehouse_gateway::serve(config, gatehouse_node::shutdown_signal()).await
        }
        Command::ClientService { port } => {
            serve_backend(client_service::SERVICE, client_service::router(), port).await
        }
        Command::OrderService { port } => {
            serve_backend(order_service::SERVICE, order_service::router(), port).await
        }
        Command::Bootstrap(config) => {
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
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_backend(
    info: service_kit::ServiceInfo,
    router: axum::Router,
    port: u16,
) -> anyhow::Result<()> {
    let _telemetry = service_kit::server::init_tracing(info.name);
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot listen on {addr}: {e}", info.name))?;
    service_kit::server::serve(info, listener, router, gatehouse_node::shutdown_signal()).await?;
    Ok(())
}
