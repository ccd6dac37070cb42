//! The throttle exchange: the replicas' counts over core NATS, beside the hot path.
//!
//! Each gateway replica that follows NATS runs one task ([`run`]) on its own NATS
//! connection (the same servers, credentials and TLS as its log), publishing on and
//! subscribed to one subject, [`SUBJECT`] (`gatehouse.throttle`; gateways may publish
//! and subscribe there and nowhere else, `nats/users.conf`). The hot path never touches
//! it: admission reads the counters' atomics ([`crate::throttle`] says the rule).
//!
//! # The algorithm
//!
//! Every interval `T` (`--throttle-sync-interval-ms`, 100 ms):
//!
//! 1. **Publish.** The replica publishes a report: its instance id (random per process)
//!    and, for each key whose count changed since its last report, `(key, window,
//!    window end, count)` — the absolute count of this replica's calls in that window.
//!    Every tenth interval, and right after it hears an instance it did not know (a
//!    replica joining), it reports every active key, its own count and the others'
//!    as it knows them (so a lost message is repaired within `10 T`, and a replica that
//!    joins learns within `2 T` the calls of every replica, even of one that left
//!    before it came). A report with no entries is still sent: it is the heartbeat. A
//!    report holds at most [`MAX_ENTRIES_PER_MESSAGE`] entries (24 bytes each, 96 KiB in
//!    all, under NATS's 1 MiB payload); a replica sends at most
//!    [`MAX_ENTRIES_PER_INTERVAL`] entries an interval (the next interval carries on).
//! 2. **Receive.** For each other instance's entry, the replica keeps that instance's
//!    latest count per key (a newer window replaces an older one), then sets the key's
//!    `others` to the larger of two lower bounds of the others' calls in the latest
//!    window any of them reported: the sum of their own counts, and the largest total
//!    (own + others) one of them knows less this replica's own count. An instance's counts are kept until their window
//!    ends, even once it is silent: calls a stopped replica admitted still count.
//! 3. **Liveness.** An instance heard within the expiry `E = 10 T` (at least 500 ms) is a
//!    live peer (`gatehouse_gateway_throttle_peers`). Counts are **shared** (the rule
//!    `local + others < limit`) while the connection is up, this replica has heard its
//!    own last report within `E` (the subject works both ways: connection, permissions,
//!    the server's routes), and it has listened for at least one full round (`10 T`, so
//!    it knows every active key of the others). Otherwise it is **cut off** and enforces
//!    the fallback share `ceil(limit / --replica-count)` of its own calls.
//!
//! # Bounds
//!
//! At most [`MAX_PEERS`] instances are remembered (reports of others are dropped, and
//! counted in `gatehouse_gateway_throttle_reports_dropped_total`), each with at most
//! [`MAX_KEYS_PER_PEER`] keys; a malformed report is dropped whole. Entries leave when
//! their window ends, instances when they are silent past `E` and hold no count.
//!
//! # Shared state
//!
//! The peers' tables are this task's alone (no lock). What it shares with the request
//! path goes through the [`Throttler`]'s atomics (`others` per counter, `shared`), and
//! with `/metrics` through the [`Metrics`] gauges.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::connection::State as ConnectionState;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use gatehouse_eventlog::{NatsLog, NatsLogConfig};
use gatehouse_node::Shutdown;

use crate::metrics::Metrics;
use crate::throttle::{Report, Throttler, now_seconds};

/// The one subject of the exchange.
pub const SUBJECT: &str = "gatehouse.throttle";

/// The first bytes of every report (and the format's version).
const MAGIC: &[u8; 4] = b"GHT1";

/// Bytes of a report before its entries: magic, instance id, entry count.
const HEADER_BYTES: usize = 4 + 8 + 2;

/// Bytes of one entry: key, window, window end, count, others.
const ENTRY_BYTES: usize = 8 + 4 + 4 + 4 + 4;

/// Entries in one report at most.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 4096;

/// Entries a replica publishes in one interval at most.
pub const MAX_ENTRIES_PER_INTERVAL: usize = 65_536;

/// Instances remembered at most.
pub const MAX_PEERS: usize = 256;

/// Keys remembered per instance at most.
pub const MAX_KEYS_PER_PEER: usize = 262_144;

/// A full report of every active key every this many intervals.
const FULL_EVERY: u64 = 10;

/// A report: who sent it, and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub instance: u64,
    pub entries: Vec<Report>,
}

impl Message {
    /// The wire form: `GHT1`, instance (u64), entry count (u16), then per entry key
    /// (u64), window (u32), window end (u32), count (u32), others (u32), big-endian.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES);
        out.put_slice(MAGIC);
        out.put_u64(self.instance);
        out.put_u16(self.entries.len() as u16);
        for e in &self.entries {
            out.put_u64(e.key);
            out.put_u32(e.window);
            out.put_u32(e.window_end);
            out.put_u32(e.count);
            out.put_u32(e.others);
        }
        out.freeze()
    }

    /// A report from its wire form; `None` unless it is exactly one well-formed report
    /// of at most [`MAX_ENTRIES_PER_MESSAGE`] entries.
    pub fn decode(mut bytes: &[u8]) -> Option<Message> {
        if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
            return None;
        }
        bytes.advance(4);
        let instance = bytes.get_u64();
        let n = usize::from(bytes.get_u16());
        if n > MAX_ENTRIES_PER_MESSAGE || bytes.len() != n * ENTRY_BYTES {
            return None;
        }
        let entries = (0..n)
            .map(|_| Report {
                key: bytes.get_u64(),
                window: bytes.get_u32(),
                window_end: bytes.get_u32(),
                count: bytes.get_u32(),
                others: bytes.get_u32(),
            })
            .collect();
        Some(Message { instance, entries })
    }
}

/// How the exchange runs.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// The NATS servers, credentials and TLS (the replica's log configuration).
    pub nats: NatsLogConfig,
    /// `T`: how often a replica reports.
    pub interval: Duration,
}

impl ExchangeConfig {
    /// `E`: how long an instance (this one included) counts as heard.
    pub fn expiry(&self) -> Duration {
        (self.interval * 10).max(Duration::from_millis(500))
    }
}

/// What one instance said of a key: window, window end, its own count, its others'.
type Seen = (u32, u32, u32, u32);

/// One other instance's latest counts.
struct Peer {
    last_heard: Instant,
    /// Key -> its latest window's (window, window end, own count, others' count).
    counts: HashMap<u64, Seen>,
}

/// What one replica knows of the others (the task's own state).
pub struct Peers {
    instance: u64,
    peers: HashMap<u64, Peer>,
}

impl Peers {
    pub fn new(instance: u64) -> Peers {
        Peers {
            instance,
            peers: HashMap::new(),
        }
    }

    /// Takes in another instance's report and updates `others` of each key it names;
    /// returns how many entries were dropped (caps). Its own reports are ignored here.
    pub fn receive(&mut self, message: &Message, now: Instant, throttler: &Throttler) -> usize {
        if message.instance == self.instance {
            return 0;
        }
        if !self.peers.contains_key(&message.instance) && self.peers.len() >= MAX_PEERS {
            return message.entries.len().max(1);
        }
        let peer = self.peers.entry(message.instance).or_insert_with(|| Peer {
            last_heard: now,
            counts: HashMap::new(),
        });
        peer.last_heard = now;
        let mut dropped = 0;
        for e in &message.entries {
            let full = peer.counts.len() >= MAX_KEYS_PER_PEER;
            match peer.counts.get_mut(&e.key) {
                Some(known) if known.0 > e.window => {}
                Some(known) => *known = (e.window, e.window_end, e.count, e.others),
                None if full => dropped += 1,
                None => {
                    peer.counts
                        .insert(e.key, (e.window, e.window_end, e.count, e.others));
                }
            }
        }
        for e in &message.entries {
            let (window, window_end, own_sum, max_total) = self.others(e.key);
            throttler.set_others(e.key, window, window_end, own_sum, max_total);
        }
        dropped
    }

    /// Whether `instance` has been heard (and not forgotten).
    pub fn knows(&self, instance: u64) -> bool {
        self.peers.contains_key(&instance)
    }

    /// What the others said of `key` in the latest window any of them reported: the
    /// window, its end, the sum of their own counts, and the largest total (own and
    /// others') one of them knows.
    fn others(&self, key: u64) -> (u32, u32, u32, u32) {
        let mut latest = (0u32, 0u32, 0u32, 0u32);
        let mut any = false;
        for peer in self.peers.values() {
            if let Some(&(window, window_end, count, others)) = peer.counts.get(&key) {
                let total = count.saturating_add(others);
                if !any || window > latest.0 {
                    latest = (window, window_end, count, total);
                    any = true;
                } else if window == latest.0 {
                    latest.2 = latest.2.saturating_add(count);
                    latest.3 = latest.3.max(total);
                }
            }
        }
        latest
    }

    /// Forgets counts whose window has ended, and instances silent past `expiry` that
    /// hold none; returns the number of live peers (heard within `expiry`).
    pub fn sweep(&mut self, now: Instant, now_unix: u64, expiry: Duration) -> usize {
        for peer in self.peers.values_mut() {
            peer.counts
                .retain(|_, &mut (_, window_end, _, _)| u64::from(window_end) > now_unix);
        }
        self.peers
            .retain(|_, peer| now - peer.last_heard < expiry || !peer.counts.is_empty());
        self.peers
            .values()
            .filter(|peer| now - peer.last_heard < expiry)
            .count()
    }
}

/// Runs the exchange until `shutdown`: connects (retrying while NATS is down; the
/// replica stays in fallback meanwhile), then reports, receives and decides shared or
/// cut off every interval.
pub async fn run(
    config: ExchangeConfig,
    throttler: Arc<Throttler>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let client = loop {
        match NatsLog::connect_client(&config.nats).await {
            Ok(client) => break client,
            Err(err) => {
                tracing::warn!(error = %err, "throttle exchange cannot connect yet; enforcing fallback shares");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    };
    let mut subscription = match client.subscribe(SUBJECT).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(error = %err, "throttle exchange cannot subscribe; enforcing fallback shares");
            return;
        }
    };
    let instance: u64 = rand_instance();
    tracing::info!(
        instance,
        interval_ms = config.interval.as_millis() as u64,
        "throttle exchange started"
    );
    let expiry = config.expiry();
    let started = Instant::now();
    let mut peers = Peers::new(instance);
    let mut heard_self: Option<Instant> = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = 0u64;
    let mut entries = Vec::new();
    // A new instance was heard: the next report is a full one, so it learns every key.
    let mut newcomer = false;
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            _ = ticker.tick() => {
                tick += 1;
                let now = Instant::now();
                let now_unix = now_seconds();
                entries.clear();
                let full = tick.is_multiple_of(FULL_EVERY) || std::mem::take(&mut newcomer);
                throttler.changed_counts(full, now_unix, MAX_ENTRIES_PER_INTERVAL, &mut entries);
                let mut chunks: Vec<&[Report]> = entries.chunks(MAX_ENTRIES_PER_MESSAGE).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                for chunk in chunks {
                    let message = Message { instance, entries: chunk.to_vec() };
                    if client.publish(SUBJECT, message.encode()).await.is_ok() {
                        metrics.throttle_reports_sent.fetch_add(1, Relaxed);
                    }
                }
                let live = peers.sweep(now, now_unix, expiry);
                metrics.throttle_peers.store(live as u64, Relaxed);
                let connected = client.connection_state() == ConnectionState::Connected;
                let hears_itself = heard_self.is_some_and(|at| now - at < expiry);
                let listened = now - started >= config.interval * FULL_EVERY as u32;
                let shared = connected && hears_itself && listened;
                if shared != throttler.is_shared() {
                    if shared {
                        tracing::info!(peers = live, "throttle exchange live: limits count every replica's calls");
                    } else {
                        tracing::warn!(connected, hears_itself, "throttle exchange cut off: enforcing fallback shares");
                    }
                }
                throttler.set_shared(shared);
                metrics.throttle_shared.store(shared, Relaxed);
            }
            message = subscription.next() => {
                let Some(message) = message else { break };
                match Message::decode(&message.payload) {
                    Some(report) if report.instance == instance => heard_self = Some(Instant::now()),
                    Some(report) => {
                        metrics.throttle_reports_received.fetch_add(1, Relaxed);
                        newcomer |= !peers.knows(report.instance);
                        let dropped = peers.receive(&report, Instant::now(), &throttler);
                        metrics.throttle_reports_dropped.fetch_add(dropped as u64, Relaxed);
                    }
                    None => {
                        metrics.throttle_reports_dropped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
    throttler.set_shared(false);
    metrics.throttle_shared.store(false, Relaxed);
}

/// A random instance id (the process's hash keys, the clock and the pid).
fn rand_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(key: u64, window: u32, count: u32) -> Report {
        relayed(key, window, count, 0)
    }

    fn relayed(key: u64, window: u32, count: u32, others: u32) -> Report {
        Report {
            key,
            window,
            window_end: u32::MAX,
            count,
            others,
        }
    }

    #[test]
    fn reports_round_trip_and_malformed_ones_are_refused() {
        let message = Message {
            instance: 7,
            entries: vec![report(1, 2, 3), report(u64::MAX, u32::MAX, 0)],
        };
        let bytes = message.encode();
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * ENTRY_BYTES);
        assert_eq!(Message::decode(&bytes), Some(message));
        assert_eq!(
            Message::decode(&bytes[..bytes.len() - 1]),
            None,
            "truncated"
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(Message::decode(&long), None, "trailing bytes");
        assert_eq!(Message::decode(b"GHT2xxxxxxxxxx"), None, "another format");
        let mut too_many = BytesMut::new();
        too_many.put_slice(MAGIC);
        too_many.put_u64(1);
        too_many.put_u16((MAX_ENTRIES_PER_MESSAGE + 1) as u16);
        too_many.put_bytes(0, (MAX_ENTRIES_PER_MESSAGE + 1) * ENTRY_BYTES);
        assert_eq!(Message::decode(&too_many), None, "over the entry cap");
    }

    #[test]
    fn others_sum_every_instance_in_the_latest_window_and_outlive_silence() {
        let throttler = Throttler::new(1);
        let mut peers = Peers::new(1);
        let now = Instant::now();
        let from = |instance, entries| Message { instance, entries };
        assert_eq!(
            peers.receive(&from(1, vec![report(9, 5, 50)]), now, &throttler),
            0
        );
        assert_eq!(
            peers.others(9),
            (0, 0, 0, 0),
            "its own reports are not others'"
        );
        peers.receive(&from(2, vec![report(9, 5, 10)]), now, &throttler);
        peers.receive(&from(3, vec![report(9, 5, 4)]), now, &throttler);
        assert_eq!(peers.others(9).2, 14);
        peers.receive(&from(2, vec![report(9, 5, 12)]), now, &throttler);
        assert_eq!(peers.others(9).2, 16, "a newer count replaces the older");
        peers.receive(&from(3, vec![report(9, 6, 1)]), now, &throttler);
        assert_eq!(
            peers.others(9),
            (6, u32::MAX, 1, 1),
            "the latest window only"
        );
        peers.receive(&from(2, vec![report(9, 5, 99)]), now, &throttler);
        assert_eq!(
            peers.others(9).2,
            1,
            "an older window does not replace a newer"
        );
        // Silent instances keep their counts until the window ends.
        let later = now + Duration::from_secs(60);
        assert_eq!(peers.sweep(later, 0, Duration::from_secs(1)), 0);
        assert_eq!(peers.others(9).2, 1);
        assert_eq!(
            peers.sweep(later, u64::from(u32::MAX), Duration::from_secs(1)),
            0
        );
        assert!(
            peers.peers.is_empty(),
            "ended windows and silent instances go"
        );
    }

    #[test]
    fn a_joining_replica_learns_the_calls_of_one_that_left_from_the_others() {
        use crate::throttle::{Check, ThrottleKey, key_hash};
        let limit = crate::table::Limit {
            tier: "T".into(),
            count: 60,
            unit_seconds: 60,
        };
        let checks = [Check {
            key: ThrottleKey::Api { api: "api" },
            limit: &limit,
        }];
        let key = key_hash(&checks[0].key);
        let (now_unix, window) = (6_000, 100);
        // Instance 3 admitted 20 and left before instance 1 joined; 2 admitted 20 and
        // had heard 3's 20.
        let throttler = Throttler::new(3);
        throttler.set_shared(true);
        let mut joined = Peers::new(1);
        let message = Message {
            instance: 2,
            entries: vec![Report {
                key,
                window,
                window_end: 6_060,
                count: 20,
                others: 20,
            }],
        };
        joined.receive(&message, Instant::now(), &throttler);
        assert_eq!(joined.others(key), (window, 6_060, 20, 40));
        let admitted = (0..60)
            .filter(|_| throttler.admit_at(&checks, now_unix).is_ok())
            .count();
        assert_eq!(admitted, 20, "60 less the 40 the others admitted");
    }

    #[test]
    fn instances_past_the_cap_are_dropped() {
        let throttler = Throttler::new(1);
        let mut peers = Peers::new(0);
        let now = Instant::now();
        for instance in 1..=MAX_PEERS as u64 {
            let message = Message {
                instance,
                entries: vec![],
            };
            assert_eq!(peers.receive(&message, now, &throttler), 0);
        }
        let one_more = Message {
            instance: u64::MAX,
            entries: vec![report(1, 1, 1)],
        };
        assert_eq!(peers.receive(&one_more, now, &throttler), 1);
        assert_eq!(peers.peers.len(), MAX_PEERS);
    }
}
