//! What one anonymous caller of the HTTPS endpoints may cost: the flags (every one with
//! its `GATEHOUSE_TOKEN_*` variable) and the values derived from them.
//!
//! The endpoints are public (`/oauth2/token`, `/oauth2/revoke`, `/oauth2/introspect`
//! authenticate clients; anyone may try), so each resource an attempt consumes has a
//! bound here:
//!
//! | resource | bound | past it |
//! |---|---|---|
//! | connections | `--max-connections` | the connection is closed at once |
//! | time to send the headers | `--header-read-timeout-seconds` (also between requests on a kept-alive connection) | the connection is closed |
//! | body size | `--max-body-bytes`, checked against `Content-Length` before reading and while reading | 413 `invalid_request`, nothing more read |
//! | time to send the body | `--body-read-timeout-seconds` | 408 `invalid_request`, the connection closed |
//! | form parameters | `--max-form-parameters` (one linear parse, [`crate::form`]) | 400 `invalid_request`, parsing stops |
//! | argon2 (19 MiB, tens of ms each) | `--argon2-workers` at once, `--argon2-queue` waiting ([`crate::pool`]) | 503 `temporarily_unavailable`, `Retry-After: 1`, at once |
//! | failed authentications | `--failure-budget-per-client`, `--failure-budget-per-address`, backoff up to `--failure-backoff-max-seconds` ([`crate::budget`]) | 429 `slow_down` with `Retry-After`, before any argon2 |
//! | the failure records | `--max-tracked-clients`, `--max-tracked-addresses` | stale records go first, then arbitrary ones |
//!
//! # Shared state
//!
//! None: [`EdgeLimits`] is parsed once and copied into the parts that enforce it.

use std::time::Duration;

/// The HTTPS endpoints' limits (flattened into token-service's configuration).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Largest request body the HTTPS endpoints accept, in bytes. A larger one is
    /// answered 413 (RFC 6749 `invalid_request`) before it is read: at once when its
    /// `Content-Length` says so, else as soon as this many bytes have arrived.
    #[arg(
        long = "max-body-bytes",
        env = "GATEHOUSE_TOKEN_MAX_BODY_BYTES",
        default_value_t = 16 * 1024,
        value_parser = clap::value_parser!(u32).range(64..)
    )]
    pub max_body_bytes: u32,
    /// Most parameters a form body may have; more is answered 400 `invalid_request`,
    /// and the parameters past the cap are never decoded.
    #[arg(
        long = "max-form-parameters",
        env = "GATEHOUSE_TOKEN_MAX_FORM_PARAMETERS",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(4..)
    )]
    pub max_form_parameters: u16,
    /// Seconds a client has to send a whole request body once its headers are in;
    /// slower is answered 408 `invalid_request` and the connection closed.
    #[arg(
        long = "body-read-timeout-seconds",
        env = "GATEHOUSE_TOKEN_BODY_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub body_read_timeout_seconds: u64,
    /// Seconds a client has to send a request's headers, from the end of the TLS
    /// handshake or of the previous response on a kept-alive connection; slower closes
    /// the connection.
    #[arg(
        long = "header-read-timeout-seconds",
        env = "GATEHOUSE_TOKEN_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout_seconds: u64,
    /// Most HTTPS connections open at once (TLS handshakes included); a connection
    /// past it is closed as soon as it is accepted.
    #[arg(
        long = "max-connections",
        env = "GATEHOUSE_TOKEN_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Threads that check client secrets with argon2 (19 MiB and tens of milliseconds
    /// each), so at most this many checks run at once and their memory is this many
    /// times 19 MiB; 0 = one per core.
    #[arg(
        long = "argon2-workers",
        env = "GATEHOUSE_TOKEN_ARGON2_WORKERS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u16)
    )]
    pub argon2_workers: u16,
    /// Secret checks that may wait for an argon2 worker. Past the workers and this
    /// queue, an authentication is answered 503 `temporarily_unavailable` with
    /// `Retry-After: 1` at once.
    #[arg(
        long = "argon2-queue",
        env = "GATEHOUSE_TOKEN_ARGON2_QUEUE",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32)
    )]
    pub argon2_queue: u32,
    /// Failed authentications of one client id (from any address) before backoff:
    /// the next failure blocks it for 1 s, each further one doubles that, up to
    /// `--failure-backoff-max-seconds`. A blocked client id is answered 429 `slow_down`
    /// with `Retry-After` — except from an address with no failure on record, which is
    /// still checked; and a secret proved in the last 5 minutes always passes (it needs
    /// no argon2).
    #[arg(
        long = "failure-budget-per-client",
        env = "GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_CLIENT",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub failure_budget_per_client: u32,
    /// Failed authentications from one source address (IPv6: one /64), whatever the
    /// client id, before the same backoff blocks the address (429 `slow_down` with
    /// `Retry-After`; a secret proved in the last 5 minutes still passes).
    #[arg(
        long = "failure-budget-per-address",
        env = "GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_ADDRESS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub failure_budget_per_address: u32,
    /// Longest backoff, in seconds. A record of failures is forgotten after this long
    /// without any, counted from the end of its last backoff: no block outlasts an
    /// attack by more than this.
    #[arg(
        long = "failure-backoff-max-seconds",
        env = "GATEHOUSE_TOKEN_FAILURE_BACKOFF_MAX_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub failure_backoff_max_seconds: u64,
    /// Most client ids whose failures are remembered at once; past it, forgotten
    /// (stale) records go first, then arbitrary ones — which only ever lets an attacker
    /// retry sooner, never locks a client out.
    #[arg(
        long = "max-tracked-clients",
        env = "GATEHOUSE_TOKEN_MAX_TRACKED_CLIENTS",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_tracked_clients: u32,
    /// Most source addresses whose failures are remembered at once (same rule as
    /// `--max-tracked-clients`).
    #[arg(
        long = "max-tracked-addresses",
        env = "GATEHOUSE_TOKEN_MAX_TRACKED_ADDRESSES",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_tracked_addresses: u32,
}

impl EdgeLimits {
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes as usize
    }

    pub fn max_form_parameters(&self) -> usize {
        self.max_form_parameters as usize
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_seconds)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections as usize
    }

    /// The argon2 workers: as configured, or one per core.
    pub fn argon2_workers(&self) -> usize {
        match self.argon2_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }

    pub fn argon2_queue(&self) -> usize {
        self.argon2_queue as usize
    }

    pub fn failure_backoff_max(&self) -> Duration {
        Duration::from_secs(self.failure_backoff_max_seconds)
    }
}

impl Default for EdgeLimits {
    /// The flags' defaults.
    fn default() -> Self {
        gatehouse_node::process::parse_defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        // The defaults read the environment too: a developer's shell may set some.
        if std::env::vars().any(|(k, _)| k.starts_with("GATEHOUSE_TOKEN_")) {
            return;
        }
        let limits = EdgeLimits::default();
        assert_eq!(limits.max_body_bytes(), 16 * 1024);
        assert_eq!(limits.max_form_parameters(), 32);
        assert_eq!(limits.body_read_timeout(), Duration::from_secs(10));
        assert_eq!(limits.header_read_timeout(), Duration::from_secs(10));
        assert_eq!(limits.max_connections(), 1024);
        assert!(limits.argon2_workers() >= 1);
        assert_eq!(limits.argon2_queue(), 32);
        assert_eq!(limits.failure_budget_per_client, 5);
        assert_eq!(limits.failure_budget_per_address, 20);
        assert_eq!(limits.failure_backoff_max(), Duration::from_secs(60));
    }
}
