//! `gateway`: the data plane binary, the same flags and code as `gatehouse gateway`.
//! See the crate docs of `gatehouse_gateway`.

fn main() -> std::process::ExitCode {
    gatehouse_node::process::standalone(
        "gateway",
        "Gatehouse gateway: routes, authenticates, throttles and proxies API calls",
        gatehouse_gateway::main,
    )
}
