//! `client-service` binary: see [`client_service`] for the API and
//! [`service_kit::server`] for flags, environment and the `healthcheck`
//! subcommand.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::server::run(client_service::SERVICE, client_service::router).await
}
