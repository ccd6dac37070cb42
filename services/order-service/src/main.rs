//! `order-service` binary: see [`order_service`] for the API and
//! [`service_kit::server`] for flags, environment and the `healthcheck`
//! subcommand.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::server::run(order_service::SERVICE, order_service::router).await
}
