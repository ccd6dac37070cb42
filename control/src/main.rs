//! `control`: the control plane binary. See the crate docs of `gatehouse_control`.

use clap::Parser;
use gatehouse_control::{ControlConfig, serve};

#[derive(Parser, Debug)]
#[command(
    name = "control",
    version,
    about = "Gatehouse control plane: the admin gRPC API over the event log"
)]
struct Cli {
    #[command(flatten)]
    config: ControlConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = gatehouse_node::telemetry::init("control");
    let cli = Cli::parse();
    match serve(cli.config, gatehouse_node::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
