//! Prometheus metrics, rendered as text at `/metrics`.
//!
//! # Shared state
//!
//! Counters are plain atomics, so recording a request is a handful of relaxed
//! `fetch_add`s and no lock on the hot path:
//!
//! - per API, an [`ApiMetrics`] (requests by status) found once, when the routing table
//!   is compiled, and held by the compiled API, so a request never looks it up by name.
//!   The registry of them (a `RwLock<HashMap>`) is touched only when tables are built
//!   and when `/metrics` is scraped; it keeps an API's counters across table swaps so
//!   they stay monotonic, as Prometheus expects.
//! - inside [`ApiMetrics`], a short `RwLock<Vec<(status, counter)>>`: a read lock and a
//!   linear scan over the few statuses an API answers with; the write lock is taken once
//!   per new status.
//! - one latency histogram for the whole gateway (fixed buckets, atomics).
//! - sync gauges (applied sequence, control's sequence, stale), written by the sync
//!   task.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests of one API by HTTP status.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    statuses: RwLock<Vec<(u16, AtomicU64)>>,
}

impl ApiMetrics {
    pub fn record(&self, status: u16) {
        {
            let statuses = self.statuses.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, count)) = statuses.iter().find(|(s, _)| *s == status) {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut statuses = self.statuses.write().unwrap_or_else(|e| e.into_inner());
        match statuses.iter().find(|(s, _)| *s == status) {
            Some((_, count)) => {
                count.fetch_add(1, Relaxed);
            }
            None => statuses.push((status, AtomicU64::new(1))),
        }
    }

    /// Requests answered with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        let statuses = self.statuses.read().unwrap_or_else(|e| e.into_inner());
        statuses
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, c)| c.load(Relaxed))
    }
}

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// The gateway's metrics. One per gateway, shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    apis: RwLock<BTreeMap<Arc<str>, Arc<ApiMetrics>>>,
    /// Requests that matched no API (404) or hit the gateway's own endpoints.
    pub unrouted: ApiMetrics,
    latency: Histogram,
    /// Last log sequence folded into the routing table in use.
    pub applied_sequence: AtomicU64,
    /// The log's (or control's) last sequence, as last seen.
    pub source_sequence: AtomicU64,
    /// Serving a state that is not known to be current (disk snapshot, lost follower).
    pub stale: AtomicBool,
    /// Routing tables swapped in.
    pub table_swaps: AtomicU64,
    /// Resyncs from a snapshot (gaps, decode failures).
    pub resyncs: AtomicU64,
    /// Upstream attempts that failed (connect errors, timeouts).
    pub upstream_failures: AtomicU64,
    /// Responses served from the response cache.
    pub cache_hits: AtomicU64,
    /// Client connections open now, both listeners.
    pub connections_open: AtomicU64,
    /// Connections closed at once because their listener was full (`--max-connections`).
    pub connections_refused: AtomicU64,
    /// Connections closed because a request head took too long.
    pub header_timeouts: AtomicU64,
    /// Connections closed after their keep-alive or HTTP/2 idle timeout.
    pub idle_closes: AtomicU64,
    /// Whether throttling counts the other replicas' calls now (the throttle exchange is
    /// live), rather than each replica's fallback share.
    pub throttle_shared: AtomicBool,
    /// Other replicas heard on the throttle exchange within the peer expiry.
    pub throttle_peers: AtomicU64,
    /// Throttle reports published and received (other replicas' only).
    pub throttle_reports_sent: AtomicU64,
    pub throttle_reports_received: AtomicU64,
    /// Throttle reports or entries dropped: malformed, or past the peer and key caps.
    pub throttle_reports_dropped: AtomicU64,
}

impl Metrics {
    /// The counters of the API labelled `label` (`/client/1.0.0`), created on first use.
    pub fn api(&self, label: &Arc<str>) -> Arc<ApiMetrics> {
        if let Some(m) = self
            .apis
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
        {
            return m.clone();
        }
        self.apis
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label.clone())
            .or_default()
            .clone()
    }

    /// Records one request's latency.
    pub fn observe_latency(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let h = &self.latency;
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| seconds <= *b) {
            h.buckets[i].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_micros.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP gatehouse_gateway_requests_total Requests by API and HTTP status.\n");
        out.push_str("# TYPE gatehouse_gateway_requests_total counter\n");
        let mut write_api = |label: &str, m: &ApiMetrics| {
            let statuses = m.statuses.read().unwrap_or_else(|e| e.into_inner());
            let mut sorted: Vec<_> = statuses
                .iter()
                .map(|(s, c)| (*s, c.load(Relaxed)))
                .collect();
            sorted.sort_unstable();
            for (status, count) in sorted {
                let _ = writeln!(
                    out,
                    "gatehouse_gateway_requests_total{{api=\"{}\",status=\"{status}\"}} {count}",
                    escape(label)
                );
            }
        };
        write_api("", &self.unrouted);
        for (label, m) in self.apis.read().unwrap_or_else(|e| e.into_inner()).iter() {
            write_api(label, m);
        }

        out.push_str("# HELP gatehouse_gateway_request_duration_seconds Time from request to response headers.\n");
        out.push_str("# TYPE gatehouse_gateway_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BOUNDS.iter().zip(&self.latency.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "gatehouse_gateway_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency.count.load(Relaxed);
        let _ = writeln!(
            out,
            "gatehouse_gateway_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "gatehouse_gateway_request_duration_seconds_sum {}",
            self.latency.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "gatehouse_gateway_request_duration_seconds_count {count}"
        );

        // The scalar series: gauges, then counters (atomics), each named after the
        // `gatehouse_gateway_` prefix.
        let applied = self.applied_sequence.load(Relaxed);
        let source = self.source_sequence.load(Relaxed);
        let gauges = [
            (
                "applied_sequence",
                applied,
                "Last log sequence in the routing table served.",
            ),
            (
                "sync_lag",
                source.saturating_sub(applied),
                "Events known to exist in the log but not applied yet.",
            ),
            (
                "stale",
                u64::from(self.stale.load(Relaxed)),
                "1 while serving a configuration not known to be current (disk snapshot).",
            ),
            (
                "connections_open",
                self.connections_open.load(Relaxed),
                "Client connections open now.",
            ),
            (
                "throttle_shared",
                u64::from(self.throttle_shared.load(Relaxed)),
                "1 while limits count every replica's calls (the throttle exchange is live); 0: this replica enforces its fallback share.",
            ),
            (
                "throttle_peers",
                self.throttle_peers.load(Relaxed),
                "Other replicas heard on the throttle exchange within the peer expiry.",
            ),
        ];
        let counters = [
            (
                "table_swaps_total",
                &self.table_swaps,
                "Routing tables swapped in.",
            ),
            (
                "resyncs_total",
                &self.resyncs,
                "Resyncs from a snapshot after a gap in the log.",
            ),
            (
                "events_quarantined_total",
                &gatehouse_node::fold::QUARANTINED,
                "Records that could not be folded (undecodable, kind not matching the subject, refused by the fold): skipped, as on every node.",
            ),
            (
                "upstream_failures_total",
                &self.upstream_failures,
                "Upstream attempts that failed (connection errors, timeouts).",
            ),
            (
                "cache_hits_total",
                &self.cache_hits,
                "Responses served from the response cache.",
            ),
            (
                "connections_refused_total",
                &self.connections_refused,
                "Connections accepted and closed at once because their listener had --max-connections open.",
            ),
            (
                "header_timeouts_total",
                &self.header_timeouts,
                "Connections closed because a request head did not arrive within --header-read-timeout-seconds.",
            ),
            (
                "idle_closes_total",
                &self.idle_closes,
                "Connections closed after their HTTP/1 keep-alive or HTTP/2 idle timeout.",
            ),
            (
                "throttle_reports_sent_total",
                &self.throttle_reports_sent,
                "Throttle reports published on the exchange.",
            ),
            (
                "throttle_reports_received_total",
                &self.throttle_reports_received,
                "Other replicas' throttle reports received.",
            ),
            (
                "throttle_reports_dropped_total",
                &self.throttle_reports_dropped,
                "Throttle reports or entries dropped: malformed, or past the peer and key caps.",
            ),
        ];
        let mut scalar = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP gatehouse_gateway_{name} {help}\n# TYPE gatehouse_gateway_{name} {kind}\ngatehouse_gateway_{name} {value}"
            );
        };
        for (name, value, help) in gauges {
            scalar(name, "gauge", help, value);
        }
        for (name, counter, help) in counters {
            scalar(name, "counter", help, counter.load(Relaxed));
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        let api = metrics.api(&Arc::from("/client/1.0.0"));
        api.record(200);
        api.record(200);
        api.record(401);
        assert!(Arc::ptr_eq(&api, &metrics.api(&Arc::from("/client/1.0.0"))));
        metrics.observe_latency(Duration::from_millis(3));
        metrics.applied_sequence.store(7, Relaxed);
        metrics.source_sequence.store(10, Relaxed);
        let text = metrics.render();
        assert!(
            text.contains(
                "gatehouse_gateway_requests_total{api=\"/client/1.0.0\",status=\"200\"} 2"
            )
        );
        assert!(
            text.contains(
                "gatehouse_gateway_requests_total{api=\"/client/1.0.0\",status=\"401\"} 1"
            )
        );
        assert!(text.contains("gatehouse_gateway_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(
            text.contains("gatehouse_gateway_request_duration_seconds_bucket{le=\"0.0025\"} 0")
        );
        assert!(text.contains("gatehouse_gateway_sync_lag 3"));
        assert!(text.contains("gatehouse_gateway_applied_sequence 7"));
    }
}
