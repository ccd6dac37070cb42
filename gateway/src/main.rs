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
    /// Threads serving requests. 0: one per available core, and on a single core (e.g.
    /// pinned with taskset, or a one-CPU container) a current-thread runtime, which
    /// spares the work-stealing scheduler's synchronisation.
    #[arg(
        long = "worker-threads",
        env = "GATEHOUSE_GATEWAY_WORKER_THREADS",
        default_value_t = 0
    )]
    worker_threads: usize,
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match cli.worker_threads {
        0 if cores == 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = gatehouse_node::telemetry::init("gateway");
        cli.config.trace_requests = telemetry.is_exporting();
        match serve(cli.config, gatehouse_node::shutdown_signal()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gateway: {e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
