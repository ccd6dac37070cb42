//! `control`: the control plane binary, the same flags and code as `gatehouse control`.
//! See the crate docs of `gatehouse_control`.

fn main() -> std::process::ExitCode {
    gatehouse_node::process::standalone(
        "control",
        "Gatehouse control plane: the admin gRPC API over the event log",
        gatehouse_control::main,
    )
}
