//! Throttling: fixed-window request counters in memory.
//!
//! Four tiers apply to a call, in this order (WSO2's): the **subscription** tier (per
//! application × API), the **application** tier (per application, over all its APIs),
//! the **API** tier (per API, over all callers) and the **resource** tier (per API
//! resource, over all callers). Each is a policy from the state (`Bronze`, `10PerMin`,
//! `10KPerMin`, or a custom one): `count` calls per `unit_seconds`. Unlimited tiers are
//! compiled away (no counter at all). The first tier that refuses answers 429 with its
//! own WSO2 code (900804, 900803, 900800, 900802) and `Retry-After`; the tiers already
//! counted for that call give their unit back, so a refused call costs nothing.
//!
//! Windows are fixed and aligned on the Unix clock (`now / unit_seconds`), like WSO2's
//! traffic manager: every replica's windows start at the same instants. Each response
//! carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
//! until the window ends) of the most constrained tier that applied.
//!
//! # Limits across replicas: shared counts, a fallback share
//!
//! A call never waits on another replica or on NATS: admission reads this replica's
//! counter and one more atomic, the other replicas' last reported counts for the key.
//! The counts travel beside the hot path, over core NATS ([`crate::exchange`]): every
//! `--throttle-sync-interval-ms` (100 ms) each replica publishes the counts of its keys
//! that changed (all its active keys every tenth interval), and receives the others'.
//! The rule, per key and window:
//!
//! - **shared** (the exchange is live): a call is admitted when
//!   `local + others < limit`, where `local` is this replica's count and `others` the sum
//!   of the other replicas' last reported counts for the same window. A replica's calls
//!   count until their window ends, even after it stopped or left (a restarted replica is
//!   a new peer; the old one's counts still hold). The deployment as a whole admits at
//!   most `limit + Σ_j a_j`, where `a_j` is what replica `j` admitted within one report
//!   interval plus the delivery time (its calls the others had not heard of yet): exact
//!   when the traffic is on one replica; at `r` calls a second spread over the replicas,
//!   about `r × 0.1 s` over at most.
//! - **fallback** (cut off: no NATS, this replica's own reports not heard back within the
//!   peer expiry, or less than one full report round since the exchange started): each
//!   replica admits at most `ceil(limit / N)` of its own calls (and no more than the
//!   others' last known counts leave), N being `--replica-count`
//!   (`GATEHOUSE_GATEWAY_REPLICA_COUNT`, default 1). A gateway without NATS (following
//!   control's stream, the all-in-one) is always in fallback. While cut off, the others
//!   may still admit the full limit among themselves: a partitioned deployment admits at
//!   most `limit + (cut-off replicas) × ceil(limit / N)`.
//!
//! `X-RateLimit-Limit` says the limit in force (the policy's, or the fallback share) and
//! `X-RateLimit-Remaining` what is left of it counting the other replicas.
//!
//! # Types
//!
//! A [`Check`] is a [`ThrottleKey`] (what is counted: its variant is the tier, its fields
//! the ids that tier counts by) and the tier's [`Limit`]. A refusal is a [`Throttled`]:
//! the tier, the policy, this replica's share of the limit and the seconds until the
//! window ends, which becomes the 429 ([`GatewayError`]) and the `X-RateLimit-*`
//! headers of the refused call.
//!
//! # Shared state
//!
//! One `u64` per counter packs the window number (high 32 bits) and the count (low 32
//! bits), updated with a compare-and-swap loop: no lock while counting. Beside it, the
//! other replicas' summed counts in the same packing (`others`, written only by the
//! exchange task, read with one relaxed load), and the last count the exchange published
//! (`reported`, the exchange's own). Whether counts are shared is one `AtomicBool`. Counters live in
//! a [`ShardedMap`] of 32 shards; the read lock is all a known key needs, and the write
//! lock is taken only to add a key (the first call of a client in a while, or a key
//! first heard from another replica) or to sweep counters whose window has passed. Keys
//! are 64-bit hashes of the [`ThrottleKey`]'s canonical bytes ([`key_hash`]: FNV-1a and
//! a 64-bit finaliser, the same on every replica and build, so replicas name a key
//! alike), so they cost no allocation; the ids hashed are ids control generates and
//! templates admins define, not a caller's choice, and two distinct keys sharing a
//! counter needs a 64-bit collision among them, which we accept. Counters survive routing-table swaps: a policy change applies to the current
//! window's count.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::Method;

use crate::errors::{GatewayError, codes};
use crate::shards::ShardedMap;
use crate::table::Limit;

const SHARDS: usize = 32;

/// Which tier a counter belongs to, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Subscription,
    Application,
    Api,
    Resource,
}

impl Tier {
    /// WSO2's throttling code for this tier.
    pub fn code(self) -> u32 {
        match self {
            Tier::Subscription => codes::SUBSCRIPTION_THROTTLED,
            Tier::Application => codes::APPLICATION_THROTTLED,
            Tier::Api => codes::API_THROTTLED,
            Tier::Resource => codes::RESOURCE_THROTTLED,
        }
    }
}

/// What one counter counts: the tier, and the ids it counts by. Borrowed from the
/// routing table and the token, so building one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKey<'a> {
    /// One application's calls to one API.
    Subscription { application: &'a str, api: &'a str },
    /// One application's calls, to all its APIs.
    Application { application: &'a str },
    /// All calls to one API.
    Api { api: &'a str },
    /// All calls to one resource (method and template) of an API.
    Resource {
        api: &'a str,
        method: &'a Method,
        template: &'a str,
    },
}

impl ThrottleKey<'_> {
    /// The tier this key counts for.
    pub fn tier(&self) -> Tier {
        match self {
            ThrottleKey::Subscription { .. } => Tier::Subscription,
            ThrottleKey::Application { .. } => Tier::Application,
            ThrottleKey::Api { .. } => Tier::Api,
            ThrottleKey::Resource { .. } => Tier::Resource,
        }
    }
}

/// One check: what to count, and the limit it has.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub key: ThrottleKey<'a>,
    pub limit: &'a Limit,
}

/// What the most constrained tier said, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window ends.
    pub reset: u64,
}

/// A call refused by a tier: the 429 it answers (see `From<Throttled> for
/// GatewayError`) and the rate-limit headers it carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "throttled by the {tier:?} tier ({policy}): {limit} calls per window, again in {retry_after} s"
)]
pub struct Throttled {
    pub tier: Tier,
    /// The policy's name (`10PerMin`).
    pub policy: Arc<str>,
    /// This replica's share of the policy's limit.
    pub limit: u64,
    /// Seconds until the window ends (`Retry-After`).
    pub retry_after: u64,
}

impl Throttled {
    /// The `X-RateLimit-*` headers of the refused call: nothing remains until the
    /// window ends.
    pub fn rate_limit(&self) -> RateLimitStatus {
        RateLimitStatus {
            limit: self.limit,
            remaining: 0,
            reset: self.retry_after,
        }
    }
}

impl From<Throttled> for GatewayError {
    /// 429 with the tier's WSO2 code and `Retry-After`.
    fn from(refusal: Throttled) -> Self {
        GatewayError::throttled(refusal.tier.code(), &refusal.policy, refusal.retry_after)
    }
}

/// One counter: a window and this replica's count, the other replicas' count.
pub(crate) struct Counter {
    /// Window number << 32 | this replica's count.
    state: AtomicU64,
    /// Unix second at which the counter's current window ends (for sweeping).
    window_end: AtomicU64,
    /// Window number << 32 | the other replicas' reported counts (the exchange's).
    others: AtomicU64,
    /// The `state` the exchange last published (the exchange's).
    reported: AtomicU64,
}

impl Counter {
    fn new(window: u64, window_end: u64) -> Counter {
        Counter {
            state: AtomicU64::new((window & 0xffff_ffff) << 32),
            window_end: AtomicU64::new(window_end),
            others: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }
}

/// One key's count in one window, as the exchange reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub key: u64,
    /// The window number, low 32 bits.
    pub window: u32,
    /// Unix second at which the window ends.
    pub window_end: u32,
    /// The sender's own calls.
    pub count: u32,
    /// The other replicas' calls as the sender knows them (its `others`): relays the
    /// counts of a replica that left to one that joins after it.
    pub others: u32,
}

/// Every counter of this replica, whether counts are shared now, and the fallback share.
pub struct Throttler {
    /// N of the fallback share `ceil(limit / N)`.
    replica_count: u64,
    /// Whether the other replicas' counts are live (set by the exchange).
    shared: AtomicBool,
    counters: ShardedMap<u64, Counter>,
}

impl std::fmt::Debug for Throttler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttler")
            .field("replica_count", &self.replica_count)
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// A [`ThrottleKey`]'s hash, the same on every replica: FNV-1a over the tier's tag and
/// each id followed by `0xff` (a byte no UTF-8 text has), then a 64-bit finaliser
/// (splitmix64's) to spread FNV's low bits over the map's shards.
pub fn key_hash(key: &ThrottleKey<'_>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
        hash = (hash ^ 0xff).wrapping_mul(PRIME);
    };
    match key {
        ThrottleKey::Subscription { application, api } => {
            eat(b"s");
            eat(application.as_bytes());
            eat(api.as_bytes());
        }
        ThrottleKey::Application { application } => {
            eat(b"a");
            eat(application.as_bytes());
        }
        ThrottleKey::Api { api } => {
            eat(b"p");
            eat(api.as_bytes());
        }
        ThrottleKey::Resource {
            api,
            method,
            template,
        } => {
            eat(b"r");
            eat(api.as_bytes());
            eat(method.as_str().as_bytes());
            eat(template.as_bytes());
        }
    }
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The Unix time in seconds.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Throttler {
    /// Counters in fallback, for one replica out of `replica_count` (at least 1), until
    /// [`set_shared`](Self::set_shared) says the other replicas' counts are live.
    pub fn new(replica_count: u32) -> Self {
        Throttler {
            replica_count: u64::from(replica_count.max(1)),
            shared: AtomicBool::new(false),
            counters: ShardedMap::new(SHARDS),
        }
    }

    /// The fallback share of `limit`: `ceil(limit / N)`, at least 1.
    pub fn share(&self, limit: u64) -> u64 {
        limit.div_ceil(self.replica_count).max(1)
    }

    /// Whether admission counts the other replicas' reported calls (else: fallback share).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Switches between shared counts and the fallback share (the exchange, as it hears
    /// or stops hearing its own reports).
    pub fn set_shared(&self, shared: bool) {
        self.shared.store(shared, Ordering::Relaxed);
    }

    /// This replica's counts that changed since the last call, or with `all` every
    /// active one (and the keys it only knows the others' counts of), at most `max`,
    /// marked as reported. A window that has ended is not reported.
    pub fn changed_counts(&self, all: bool, now: u64, max: usize, out: &mut Vec<Report>) {
        self.counters.for_each(|key, counter| {
            if out.len() >= max {
                return;
            }
            let state = counter.state.load(Ordering::Acquire);
            let window_end = counter.window_end.load(Ordering::Relaxed);
            let window = state >> 32;
            let count = state & 0xffff_ffff;
            let others = counter.others.load(Ordering::Acquire);
            let others = if others >> 32 == window {
                others & 0xffff_ffff
            } else {
                0
            };
            if (count == 0 && !(all && others > 0)) || window_end <= now {
                return;
            }
            if !all && counter.reported.load(Ordering::Relaxed) == state {
                return;
            }
            counter.reported.store(state, Ordering::Relaxed);
            out.push(Report {
                key: *key,
                window: window as u32,
                window_end: window_end.min(u64::from(u32::MAX)) as u32,
                count: count as u32,
                others: others as u32,
            });
        });
    }

    /// Sets the other replicas' count of `key` in `window` (the exchange) from what it
    /// heard: `own_sum`, the sum of their own counts, and `max_total`, the largest
    /// count of all calls one of them knows (its own and its others', this replica's
    /// included as it last heard them). Both are lower bounds of the others' calls:
    /// the larger is kept, `max_total` less this replica's own count. Adds a counter if
    /// this replica has none for `key` yet.
    pub fn set_others(&self, key: u64, window: u32, window_end: u32, own_sum: u32, max_total: u32) {
        self.counters.with_or_insert(
            key,
            || Counter::new(u64::from(window), u64::from(window_end)),
            |counter| {
                let state = counter.state.load(Ordering::Acquire);
                let local = if state >> 32 == u64::from(window) {
                    (state & 0xffff_ffff) as u32
                } else {
                    0
                };
                let others = own_sum.max(max_total.saturating_sub(local));
                let packed = (u64::from(window) << 32) | u64::from(others);
                counter.others.store(packed, Ordering::Release);
                counter
                    .window_end
                    .fetch_max(u64::from(window_end), Ordering::Relaxed);
            },
        );
    }

    /// Counts one call against every check, in order. On the first refusal, gives back
    /// the units taken by the earlier checks and returns it.
    pub fn admit(&self, checks: &[Check<'_>]) -> Result<Option<RateLimitStatus>, Throttled> {
        self.admit_at(checks, now_seconds())
    }

    /// [`admit`](Self::admit) at a given Unix time (tests).
    pub fn admit_at(
        &self,
        checks: &[Check<'_>],
        now: u64,
    ) -> Result<Option<RateLimitStatus>, Throttled> {
        let mut taken: [(u64, u64); 4] = [(0, 0); 4];
        let mut n_taken = 0;
        let mut tightest: Option<RateLimitStatus> = None;
        for check in checks {
            let unit = u64::from(check.limit.unit_seconds.max(1));
            let window = now / unit;
            let reset = (window + 1) * unit - now;
            let shared = self.is_shared();
            let full = check.limit.count.max(1);
            let limit = if shared {
                full
            } else {
                self.share(check.limit.count)
            };
            let key = key_hash(&check.key);
            match self.take(key, window, full, limit, (window + 1) * unit) {
                Some((count, cap)) => {
                    if n_taken < taken.len() {
                        taken[n_taken] = (key, window);
                        n_taken += 1;
                    }
                    let status = RateLimitStatus {
                        limit,
                        remaining: cap.saturating_sub(count),
                        reset,
                    };
                    if tightest.is_none_or(|t| status.remaining < t.remaining) {
                        tightest = Some(status);
                    }
                }
                None => {
                    for &(key, window) in &taken[..n_taken] {
                        self.give_back(key, window);
                    }
                    return Err(Throttled {
                        tier: check.key.tier(),
                        policy: check.limit.tier.clone(),
                        limit,
                        retry_after: reset,
                    });
                }
            }
        }
        Ok(tightest)
    }

    /// Takes one unit in `window` if this replica's count stays under its cap: `full`
    /// less the other replicas' reported calls, and at most `own` (the fallback share
    /// when cut off, `full` when shared). Returns this replica's count after it and the
    /// cap, or `None` when the cap is reached.
    fn take(
        &self,
        key: u64,
        window: u64,
        full: u64,
        own: u64,
        window_end: u64,
    ) -> Option<(u64, u64)> {
        self.counters.with_or_insert(
            key,
            || Counter::new(window, window_end),
            |counter| {
                let others = counter.others.load(Ordering::Acquire);
                let others = if others >> 32 == window & 0xffff_ffff {
                    others & 0xffff_ffff
                } else {
                    0
                };
                let cap = full.saturating_sub(others).min(own);
                take_from(counter, window, cap, window_end).map(|count| (count, cap))
            },
        )
    }

    /// Returns a unit taken in `window` (if the window has not moved on since).
    fn give_back(&self, key: u64, window: u64) {
        self.counters.read(&key, |counter| {
            if let Some(counter) = counter {
                let _ = counter
                    .state
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                        (state >> 32 == window && state & 0xffff_ffff > 0).then(|| state - 1)
                    });
            }
        });
    }

    /// Drops counters whose window has ended (called periodically).
    pub fn sweep(&self) {
        self.sweep_at(now_seconds());
    }

    /// [`sweep`](Self::sweep) at a given Unix time (tests).
    pub fn sweep_at(&self, now: u64) {
        self.counters
            .retain(|_, c| c.window_end.load(Ordering::Relaxed) > now);
    }

    /// Number of live counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

fn take_from(counter: &Counter, window: u64, limit: u64, window_end: u64) -> Option<u64> {
    let window = window & 0xffff_ffff;
    let mut result = None;
    let updated = counter
        .state
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
            let (w, count) = (state >> 32, state & 0xffff_ffff);
            let count = if w == window { count } else { 0 };
            if count >= limit {
                result = None;
                return None;
            }
            let next = count + 1;
            result = Some(next);
            Some((window << 32) | next.min(0xffff_ffff))
        });
    if updated.is_ok() {
        counter.window_end.fetch_max(window_end, Ordering::Relaxed);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(count: u64, unit_seconds: u32) -> Limit {
        Limit {
            tier: "T".into(),
            count,
            unit_seconds,
        }
    }

    /// A check of `tier` for application `app` calling API `api`.
    fn check(limit: &Limit, tier: Tier) -> Check<'_> {
        let (application, api) = ("app", "api");
        let key = match tier {
            Tier::Subscription => ThrottleKey::Subscription { application, api },
            Tier::Application => ThrottleKey::Application { application },
            Tier::Api => ThrottleKey::Api { api },
            Tier::Resource => ThrottleKey::Resource {
                api,
                method: &Method::GET,
                template: "/users",
            },
        };
        Check { key, limit }
    }

    #[test]
    fn fixed_window_counts_and_resets() {
        let t = Throttler::new(1);
        let l = limit(3, 60);
        let c = [check(&l, Tier::Subscription)];
        let now = 6_000; // the start of a window
        for remaining in [2, 1, 0] {
            let status = t.admit_at(&c, now).unwrap().unwrap();
            assert_eq!(
                (status.limit, status.remaining, status.reset),
                (3, remaining, 60)
            );
        }
        let refused = t.admit_at(&c, now + 59).unwrap_err();
        assert_eq!(refused.tier, Tier::Subscription);
        assert_eq!(
            refused.rate_limit(),
            RateLimitStatus {
                limit: 3,
                remaining: 0,
                reset: 1
            }
        );
        let refused = GatewayError::from(refused);
        assert_eq!(refused.code, codes::SUBSCRIPTION_THROTTLED);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            t.admit_at(&c, now + 60).is_ok(),
            "a new window starts afresh"
        );
    }

    #[test]
    fn a_replica_enforces_its_share_of_the_limit() {
        let t = Throttler::new(3);
        assert_eq!(t.share(10), 4);
        assert_eq!(t.share(2), 1);
        let l = limit(10, 60);
        let c = [check(&l, Tier::Api)];
        let admitted = (0..10).filter(|_| t.admit_at(&c, 60).is_ok()).count();
        assert_eq!(admitted, 4);
    }

    #[test]
    fn shared_counts_admit_the_limit_less_the_others_calls() {
        let t = Throttler::new(3);
        let l = limit(10, 60);
        let c = [check(&l, Tier::Subscription)];
        let key = key_hash(&c[0].key);
        let now = 6_000;
        let window = (now / 60) as u32;
        t.set_shared(true);
        t.set_others(key, window, (now + 60) as u32, 6, 0);
        let status = t.admit_at(&c, now).unwrap().unwrap();
        assert_eq!(
            (status.limit, status.remaining),
            (10, 3),
            "the policy's limit, less all calls"
        );
        let admitted = 1 + (0..10).filter(|_| t.admit_at(&c, now).is_ok()).count();
        assert_eq!(admitted, 4, "10 - 6 reported by the others");
        // Others' counts of an older window do not count.
        t.set_others(key, window - 1, (now + 60) as u32, 9, 0);
        assert!(t.admit_at(&c, now).is_ok());
        // Cut off: the fallback share of its own calls (5 taken already, share 4).
        t.set_shared(false);
        assert_eq!(t.admit_at(&c, now).unwrap_err().limit, 4);
        // What it reports: its own count only, once, then again in a full report.
        let mut out = Vec::new();
        t.changed_counts(false, now, 10, &mut out);
        assert_eq!(
            out,
            [Report {
                key,
                window,
                window_end: (now + 60) as u32,
                count: 5,
                others: 0
            }]
        );
        out.clear();
        t.changed_counts(false, now, 10, &mut out);
        assert!(out.is_empty(), "unchanged since the last report");
        t.changed_counts(true, now, 10, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        t.changed_counts(true, now + 60, 10, &mut out);
        assert!(out.is_empty(), "an ended window is not reported");
    }

    #[test]
    fn key_hashes_are_the_same_everywhere() {
        let method = Method::GET;
        let keys = [
            ThrottleKey::Subscription {
                application: "a",
                api: "b",
            },
            ThrottleKey::Subscription {
                application: "ab",
                api: "",
            },
            ThrottleKey::Application { application: "a" },
            ThrottleKey::Api { api: "a" },
            ThrottleKey::Resource {
                api: "a",
                method: &method,
                template: "/x",
            },
        ];
        let hashes: std::collections::HashSet<u64> = keys.iter().map(key_hash).collect();
        assert_eq!(hashes.len(), keys.len(), "distinct keys, distinct hashes");
        // Fixed: another process or build hashes a key alike.
        assert_eq!(key_hash(&keys[3]), key_hash(&ThrottleKey::Api { api: "a" }));
        assert_eq!(
            key_hash(&keys[3]),
            0xe7f6_0aae_cd2f_480d,
            "pinned: a change breaks mixed versions"
        );
    }

    #[test]
    fn a_refusal_gives_back_the_units_of_earlier_tiers() {
        let t = Throttler::new(1);
        let generous = limit(100, 60);
        let strict = limit(1, 60);
        let both = [
            check(&generous, Tier::Subscription),
            check(&strict, Tier::Application),
        ];
        assert_eq!(t.admit_at(&both, 0).unwrap().unwrap().remaining, 0);
        let refused = t.admit_at(&both, 0).unwrap_err();
        assert_eq!(refused.tier, Tier::Application);
        assert_eq!(
            GatewayError::from(refused).code,
            codes::APPLICATION_THROTTLED
        );
        let only_generous = [check(&generous, Tier::Subscription)];
        // 100 - 1 (first call) - 1 (this call): the refused call gave its unit back.
        assert_eq!(
            t.admit_at(&only_generous, 0).unwrap().unwrap().remaining,
            98
        );
    }

    #[test]
    fn keys_are_separate_and_swept_after_their_window() {
        let t = Throttler::new(1);
        let l = limit(1, 1);
        let subscription = |application| Check {
            key: ThrottleKey::Subscription {
                application,
                api: "api",
            },
            limit: &l,
        };
        let (a, b) = (subscription("a"), subscription("b"));
        let now = now_seconds();
        assert!(t.admit_at(&[a], now).is_ok());
        assert!(t.admit_at(&[b], now).is_ok());
        assert!(t.admit_at(&[a], now).is_err());
        assert_eq!(t.len(), 2);
        t.sweep_at(now);
        assert_eq!(t.len(), 2, "windows still running are kept");
        t.sweep_at(now + 1);
        assert!(t.is_empty(), "one-second windows have ended a second later");
    }

    #[test]
    fn tiers_with_the_same_ids_count_apart() {
        let t = Throttler::new(1);
        let l = limit(1, 60);
        for tier in [
            Tier::Subscription,
            Tier::Application,
            Tier::Api,
            Tier::Resource,
        ] {
            assert!(t.admit_at(&[check(&l, tier)], 0).is_ok(), "{tier:?}");
            let refused = t.admit_at(&[check(&l, tier)], 0).unwrap_err();
            assert_eq!(refused.tier, tier);
            assert_eq!(GatewayError::from(refused).code, tier.code());
        }
        assert_eq!(t.len(), 4);
    }
}
