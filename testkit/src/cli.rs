//! What a binary's `--help` offers, compared with the clap definition it should come
//! from: the stand-alone node binaries and `gatehouse <node>` parse one configuration
//! struct each, and these checks keep it that way.
//!
//! # Shared state
//!
//! None.

use std::collections::BTreeSet;
use std::path::Path;

use crate::process::run_ok;

/// The long flags (`--name`) `program args... --help` prints, without `--help` and
/// `--version`.
pub fn help_flags(program: impl AsRef<Path>, args: &[&str]) -> BTreeSet<String> {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--help");
    let program = program.as_ref().to_string_lossy().into_owned();
    let help = run_ok(&program, &all);
    // An option's line starts with its flags (`  -h, --help`, `      --data-dir <DIR>`);
    // help texts may mention other flags, which are not options here.
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            line.split(|c: char| c.is_whitespace() || c == ',')
                .find_map(|word| word.strip_prefix("--"))
        })
        .map(|flag| flag.split(['=', '<']).next().unwrap_or(flag).to_string())
        .filter(|flag| !flag.is_empty() && flag != "help" && flag != "version")
        .collect()
}

/// The long flags a clap command defines (`help` and `version` aside).
pub fn command_flags(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "help" && *l != "version")
        .map(String::from)
        .collect()
}

/// Asserts that `program args... --help` lists exactly the flags of `command`.
pub fn assert_help_matches(program: impl AsRef<Path>, args: &[&str], command: &clap::Command) {
    let shown = help_flags(&program, args);
    let defined = command_flags(command);
    assert_eq!(
        shown,
        defined,
        "{} {args:?} --help does not list the flags of its configuration",
        program.as_ref().display()
    );
    assert!(!defined.is_empty(), "a configuration with no flags");
}
