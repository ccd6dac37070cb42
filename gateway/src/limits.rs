//! What one client may cost the gateway: connections, time, header and body bytes,
//! cache memory, and whose `X-Forwarded-For` is believed.
//!
//! Every limit is a flag of [`GatewayLimits`] (flattened into the gateway's
//! configuration, so each is in the generated configuration reference with its
//! environment variable) and applies where the module named beside it says:
//!
//! | limit | enforced by | past it |
//! |---|---|---|
//! | `--max-connections` | [`crate::server`]'s accept loop, per listener | the connection is accepted and closed at once, counted in `gatehouse_gateway_connections_refused_total` |
//! | `--header-read-timeout-seconds` | [`crate::conn`]'s watchdog | the connection is closed (`gatehouse_gateway_header_timeouts_total`) |
//! | `--http1-keep-alive-idle-seconds`, `--http2-idle-seconds` | [`crate::conn`]'s watchdog | the connection is closed gracefully (HTTP/2: GOAWAY) |
//! | `--http2-keep-alive-*` | hyper's HTTP/2 PINGs | a peer that does not answer is dropped |
//! | `--http2-max-concurrent-streams` | hyper (HTTP/2 SETTINGS) | the stream is refused |
//! | `--max-header-bytes`, `--max-headers` | hyper (HTTP/1 read buffer, HTTP/2 header list) and the request head ([`crate::proxy`]) | 431 |
//! | `--max-request-body-bytes` (or the API's own) | the request head (`Content-Length`) and the request body ([`crate::body`]) | 413 |
//! | `--body-read-timeout-seconds`, `--min-body-rate-bytes-per-second` | the request body ([`crate::body`]) | 408 |
//! | `--cache-max-bytes`, `--cache-max-entry-bytes` | [`crate::cache`] | oldest entries evicted; an answer larger than an entry is not stored |
//! | `--trusted-proxies` | [`crate::upstream`]'s request headers | a client's own `X-Forwarded-*` are dropped |
//!
//! # Shared state
//!
//! None: [`GatewayLimits`] is read-only once the gateway starts, held by the
//! [`Gateway`](crate::proxy::Gateway).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// The gateway's limits on what its clients may cost it. See the module docs.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayLimits {
    /// Most connections open at once on each listener (HTTPS and HTTP). A connection past
    /// it is accepted and closed at once, without reading it, and counted in
    /// `gatehouse_gateway_connections_refused_total`.
    #[arg(
        long = "max-connections",
        env = "GATEHOUSE_GATEWAY_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// A request's head (request line and headers) must be complete within this many
    /// seconds of its first byte, and a new connection must send its first request
    /// within it; otherwise the connection is closed (slow-header attacks). 0: no limit.
    #[arg(
        long = "header-read-timeout-seconds",
        env = "GATEHOUSE_GATEWAY_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub header_read_timeout_seconds: u64,
    /// An HTTP/1.1 keep-alive connection idle for this many seconds between two requests
    /// is closed. 0: no limit.
    #[arg(
        long = "http1-keep-alive-idle-seconds",
        env = "GATEHOUSE_GATEWAY_HTTP1_KEEP_ALIVE_IDLE_SECONDS",
        default_value_t = 60
    )]
    pub http1_keep_alive_idle_seconds: u64,
    /// An HTTP/2 connection with no request in flight for this many seconds is closed
    /// with GOAWAY. 0: no limit.
    #[arg(
        long = "http2-idle-seconds",
        env = "GATEHOUSE_GATEWAY_HTTP2_IDLE_SECONDS",
        default_value_t = 60
    )]
    pub http2_idle_seconds: u64,
    /// The gateway PINGs an HTTP/2 client after this many seconds without a frame from
    /// it. 0: no PINGs.
    #[arg(
        long = "http2-keep-alive-interval-seconds",
        env = "GATEHOUSE_GATEWAY_HTTP2_KEEP_ALIVE_INTERVAL_SECONDS",
        default_value_t = 20
    )]
    pub http2_keep_alive_interval_seconds: u64,
    /// An HTTP/2 client that does not answer a PING within this many seconds is
    /// disconnected.
    #[arg(
        long = "http2-keep-alive-timeout-seconds",
        env = "GATEHOUSE_GATEWAY_HTTP2_KEEP_ALIVE_TIMEOUT_SECONDS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http2_keep_alive_timeout_seconds: u64,
    /// Most requests (streams) in flight at once on one HTTP/2 connection.
    #[arg(
        long = "http2-max-concurrent-streams",
        env = "GATEHOUSE_GATEWAY_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub http2_max_concurrent_streams: u32,
    /// Largest request head, in bytes: HTTP/1's request line and headers (the read
    /// buffer; at least 8192), HTTP/2's header list. Past it: 431 (from hyper, without a
    /// body) and the connection is closed.
    #[arg(
        long = "max-header-bytes",
        env = "GATEHOUSE_GATEWAY_MAX_HEADER_BYTES",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u32).range(8192..)
    )]
    pub max_header_bytes: u32,
    /// Most header fields in one request. Past it: 431.
    #[arg(
        long = "max-headers",
        env = "GATEHOUSE_GATEWAY_MAX_HEADERS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_headers: u32,
    /// Largest request body, in bytes, of an API that sets no
    /// `max_request_body_bytes` of its own. A larger `Content-Length` is refused with
    /// 413 before the backend is called; a streamed (chunked) body is cut off as it
    /// passes the limit.
    #[arg(
        long = "max-request-body-bytes",
        env = "GATEHOUSE_GATEWAY_MAX_REQUEST_BODY_BYTES",
        default_value_t = 10 * 1024 * 1024
    )]
    pub max_request_body_bytes: u64,
    /// Longest wait, in seconds, for the next bytes of a request body (time the backend
    /// makes the gateway wait does not count). Past it: 408. 0: no limit.
    #[arg(
        long = "body-read-timeout-seconds",
        env = "GATEHOUSE_GATEWAY_BODY_READ_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub body_read_timeout_seconds: u64,
    /// Slowest request body accepted, in bytes per second averaged over the time spent
    /// waiting for it, once `--body-read-timeout-seconds` has been waited (a grace for
    /// slow starts). Slower: 408. 0: no minimum (none either when the body read timeout
    /// is 0).
    #[arg(
        long = "min-body-rate-bytes-per-second",
        env = "GATEHOUSE_GATEWAY_MIN_BODY_RATE_BYTES_PER_SECOND",
        default_value_t = 1024
    )]
    pub min_body_rate_bytes_per_second: u64,
    /// Memory the response cache may use, in bytes (bodies, headers and keys of every
    /// stored answer); when full, expired answers go first, then the oldest.
    #[arg(
        long = "cache-max-bytes",
        env = "GATEHOUSE_GATEWAY_CACHE_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub cache_max_bytes: u64,
    /// Largest answer the response cache stores, in bytes (body and headers); a larger
    /// one streams to the client and is not stored.
    #[arg(
        long = "cache-max-entry-bytes",
        env = "GATEHOUSE_GATEWAY_CACHE_MAX_ENTRY_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub cache_max_entry_bytes: u64,
    /// Proxies in front of the gateway whose `X-Forwarded-For`, `-Proto` and `-Host` are
    /// believed: comma-separated addresses or CIDR blocks (`10.0.0.0/8,192.0.2.7`).
    /// From any other peer those headers are replaced by what the connection says.
    #[arg(
        long = "trusted-proxies",
        env = "GATEHOUSE_GATEWAY_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for GatewayLimits {
    /// Every limit at its flag's default.
    fn default() -> Self {
        gatehouse_node::process::parse_defaults()
    }
}

/// Seconds as a `Duration`, `None` for 0 (no limit).
fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

impl GatewayLimits {
    pub fn header_read_timeout(&self) -> Option<Duration> {
        seconds(self.header_read_timeout_seconds)
    }

    pub fn http1_keep_alive_idle(&self) -> Option<Duration> {
        seconds(self.http1_keep_alive_idle_seconds)
    }

    pub fn http2_idle(&self) -> Option<Duration> {
        seconds(self.http2_idle_seconds)
    }

    pub fn body_read_timeout(&self) -> Option<Duration> {
        seconds(self.body_read_timeout_seconds)
    }

    /// Whether the peer `ip` is a proxy whose `X-Forwarded-*` headers are believed.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|cidr| cidr.contains(ip))
    }

    /// What a request body may cost, for an API whose own limit is `api_max` (0: the
    /// gateway's default).
    pub fn body(&self, api_max: u32) -> BodyLimits {
        BodyLimits {
            max_bytes: if api_max == 0 {
                self.max_request_body_bytes
            } else {
                u64::from(api_max)
            },
            read_timeout: self.body_read_timeout(),
            min_rate: self.min_body_rate_bytes_per_second,
        }
    }
}

/// What one request body may cost (see [`crate::body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: u64,
    /// Longest wait for the next bytes (`None`: no limit).
    pub read_timeout: Option<Duration>,
    /// Slowest average rate, in bytes per second, after `read_timeout` of waiting (0:
    /// none).
    pub min_rate: u64,
}

/// An IP address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`, a
/// `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A `--trusted-proxies` entry that is not an address or CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(text.to_string());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 peer counts as its IPv4
    /// address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = GatewayLimits::default();
        assert_eq!(l.max_connections, 10_000);
        assert_eq!(l.header_read_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(l.http1_keep_alive_idle(), Some(Duration::from_secs(60)));
        assert_eq!(l.http2_idle(), Some(Duration::from_secs(60)));
        assert_eq!(l.http2_keep_alive_interval_seconds, 20);
        assert_eq!(l.max_header_bytes, 65_536);
        assert_eq!(l.max_headers, 100);
        assert_eq!(l.max_request_body_bytes, 10 * 1024 * 1024);
        assert_eq!(l.cache_max_bytes, 64 * 1024 * 1024);
        assert_eq!(l.cache_max_entry_bytes, 1024 * 1024);
        assert!(l.trusted_proxies.is_empty());
        assert!(!l.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(l.body(0).max_bytes, 10 * 1024 * 1024);
        assert_eq!(l.body(5).max_bytes, 5, "the API's own limit wins");
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped IPv6"
        );
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_come_from_a_comma_separated_flag() {
        use clap::{Args, FromArgMatches};
        let command = GatewayLimits::augment_args(clap::Command::new("limits"));
        let matches = command
            .no_binary_name(true)
            .try_get_matches_from(["--trusted-proxies", "10.0.0.0/8,192.0.2.7"])
            .unwrap();
        let l = GatewayLimits::from_arg_matches(&matches).unwrap();
        assert_eq!(l.trusted_proxies.len(), 2);
        assert!(l.trusts("10.9.9.9".parse().unwrap()));
        assert!(l.trusts("192.0.2.7".parse().unwrap()));
        assert!(!l.trusts("192.0.2.8".parse().unwrap()));
    }
}
