//! `token-service`: the key manager binary, the same flags and code as
//! `gatehouse token-service`. See the crate docs of `gatehouse_token_service`.

fn main() -> std::process::ExitCode {
    gatehouse_node::process::standalone(
        "token-service",
        "Gatehouse token-service: OAuth2 client credentials with signed JWTs, revocation, introspection, application keys",
        gatehouse_token_service::main,
    )
}
