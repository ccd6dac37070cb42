//! The stand-alone `token-service` binary and `gatehouse token-service` parse one configuration
//! struct: its `--help` lists exactly that struct's flags (the root crate's `cli` test
//! checks `gatehouse token-service` against the same struct).

use clap::Args;

#[test]
fn the_binary_offers_exactly_the_flags_of_its_configuration() {
    gatehouse_testkit::cli::assert_help_matches(
        env!("CARGO_BIN_EXE_token-service"),
        &[],
        &gatehouse_token_service::TokenServiceConfig::augment_args(clap::Command::new(
            "token-service",
        )),
    );
}
