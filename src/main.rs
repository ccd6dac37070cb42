//! `gatehouse`: every Gatehouse node in one binary, and the all-in-one. See
//! [`gatehouse::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    gatehouse::cli::main(gatehouse::cli::Cli::parse())
}
