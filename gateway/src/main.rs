//! `gateway`: the data plane binary. See the crate docs of `gatehouse_gateway`.

use clap::Parser;
use gatehouse_gateway::{GatewayConfig, serve};

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Gatehouse gateway: routes, authenticates, throttles and proxies API calls"
)]
struct Cli {
    #[command(flatten)]
    config: GatewayConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let telemetry = gatehouse_node::telemetry::init("gateway");
    let mut cli = Cli::parse();
    cli.config.trace_requests = telemetry.is_exporting();
    match serve(cli.config, gatehouse_node::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
