//! `token-service`: the key manager binary. See the crate docs of
//! `gatehouse_token_service`.

use clap::Parser;
use gatehouse_token_service::{TokenServiceConfig, serve};

#[derive(Parser, Debug)]
#[command(
    name = "token-service",
    version,
    about = "Gatehouse token-service: OAuth2 client credentials with signed JWTs, revocation, introspection, application keys"
)]
struct Cli {
    #[command(flatten)]
    config: TokenServiceConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = gatehouse_node::telemetry::init("token-service");
    let cli = Cli::parse();
    match serve(cli.config, gatehouse_node::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
