//! Each node has one flag set: `gatehouse <node> --help` lists exactly the flags of the
//! configuration struct its stand-alone binary parses too (each node crate's `cli` test
//! checks the binary against the same struct), and the generated configuration
//! reference documents every one of them, with its environment variable.

use clap::Args;

#[test]
fn each_node_subcommand_offers_its_configuration_and_the_reference_documents_it() {
    let reference = gatehouse::reference::markdown();
    for (role, command) in [
        (
            "control",
            gatehouse_control::ControlConfig::augment_args(clap::Command::new("control")),
        ),
        (
            "token-service",
            gatehouse_token_service::TokenServiceConfig::augment_args(clap::Command::new(
                "token-service",
            )),
        ),
        (
            "gateway",
            gatehouse_gateway::GatewayConfig::augment_args(clap::Command::new("gateway")),
        ),
        (
            "up",
            gatehouse::up::UpConfig::augment_args(clap::Command::new("up")),
        ),
    ] {
        gatehouse_testkit::cli::assert_help_matches(
            env!("CARGO_BIN_EXE_gatehouse"),
            &[role],
            &command,
        );
        let heading = format!("#### `gatehouse {role}`");
        let section = reference
            .split("#### ")
            .find(|s| format!("#### {s}").starts_with(&heading))
            .unwrap_or_else(|| panic!("the reference has no section for {role}"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                section.contains(&format!("| `--{long}` |")),
                "the reference of {role} misses --{long}"
            );
            if let Some(env) = arg.get_env() {
                assert!(
                    section.contains(&format!("`{}`", env.to_string_lossy())),
                    "the reference of {role} misses {env:?}"
                );
            }
        }
    }
    assert!(
        reference.contains("| `--worker-threads` | `GATEHOUSE_WORKER_THREADS` |"),
        "--worker-threads is on every node and documented"
    );
}
