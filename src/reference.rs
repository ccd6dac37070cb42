//! The configuration reference: every flag and environment variable of every role,
//! generated from the very clap definitions the binaries parse, so the README's copy
//! (checked by a test) cannot drift.

use clap::{Command, CommandFactory};

/// One way to run a Gatehouse process.
pub struct Role {
    /// `gatehouse <name>`; also the name of the stand-alone binary, where there is one.
    pub name: String,
    pub summary: String,
    pub command: Command,
}

/// Every role: each subcommand of [`crate::cli::Cli`] that takes flags, with its clap
/// command — so a flag added to any node's configuration is in the reference at once.
/// (`order-service` has the same flags as `client-service`; `healthcheck` is a probe;
/// `ca`, `api` and `config` are admin tools whose flags their `--help` lists.)
pub fn roles() -> Vec<Role> {
    crate::cli::Cli::command()
        .get_subcommands()
        .filter(|c| {
            !c.is_hide_set()
                && !matches!(
                    c.get_name(),
                    "order-service" | "healthcheck" | "ca" | "api" | "config"
                )
        })
        .map(|command| {
            let name = command.get_name().to_string();
            let summary = match name.as_str() {
                "up" => "the all-in-one",
                "control" => "the control plane (also the `control` binary)",
                "token-service" => "the key manager (also the `token-service` binary)",
                "gateway" => "a gateway replica (also the `gateway` binary)",
                "bootstrap" => "seeds the demo through the admin API",
                "client-service" => {
                    "the demo backends (also `order-service`, and their own binaries)"
                }
                _ => "",
            };
            Role {
                summary: if summary.is_empty() {
                    command
                        .get_about()
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                } else {
                    summary.to_string()
                },
                name,
                command: command.clone(),
            }
        })
        .collect()
}

/// The environment variables `role` reads: its flags' and the telemetry ones.
pub fn env_vars(command: &Command) -> Vec<String> {
    let mut vars: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    vars.extend(
        gatehouse_telemetry::ENV_VARS
            .iter()
            .map(|(v, _)| v.to_string()),
    );
    vars
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The reference as Markdown tables.
pub fn markdown() -> String {
    let mut out = String::new();
    for role in roles() {
        out.push_str(&format!(
            "#### `gatehouse {}`: {}\n\n",
            role.name, role.summary
        ));
        out.push_str("| flag | environment | default | meaning |\n|---|---|---|---|\n");
        for arg in role.command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{}`", default.join(","))
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            out.push_str(&format!(
                "| `--{long}` | {env} | {default} | {} |\n",
                cell(&help)
            ));
        }
        out.push('\n');
    }
    out.push_str("#### Every process: logs and traces\n\n| environment | meaning |\n|---|---|\n");
    for (var, meaning) in gatehouse_telemetry::ENV_VARS {
        out.push_str(&format!("| `{var}` | {} |\n", cell(meaning)));
    }
    out
}
