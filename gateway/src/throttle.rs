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
//! # Limits with N replicas: each replica enforces its share
//!
//! Counters are per replica, never shared: a call never waits on another replica or on
//! NATS. A gateway started with `--replica-count N` (`GATEHOUSE_GATEWAY_REPLICA_COUNT`)
//! enforces `ceil(limit / N)` per window, and advertises that share in
//! `X-RateLimit-Limit`. Behind a load balancer that spreads calls evenly (round-robin),
//! the deployment as a whole admits the policy's limit (at most `N - 1` calls more,
//! from the rounding). The trade-off, documented rather than hidden: with an uneven
//! spread a client can be refused by one replica while another still has room, and a
//! replica added without updating N lets the total exceed the policy by one share. A
//! shared count over NATS would be exact at the cost of a broker round trip (or
//! asynchronous, inexact syncing) on every call; per-replica shares keep the hot path
//! local.
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
//! bits), updated with a compare-and-swap loop: no lock while counting. Counters live in
//! a [`ShardedMap`] of 32 shards; the read lock is all a known key needs, and the write
//! lock is taken only to add a key (the first call of a client in a while) or to sweep
//! counters whose window has passed. Keys are 64-bit SipHash values of the
//! [`ThrottleKey`], with the process's random hash keys, so they cost no allocation; two
//! distinct keys sharing a counter needs a 64-bit collision under unknown keys, which we
//! accept. Counters survive routing-table swaps: a policy change applies to the current
//! window's count.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One counter: a window and its count.
struct Counter {
    /// Window number << 32 | count.
    state: AtomicU64,
    /// Unix second at which the counter's current window ends (for sweeping).
    window_end: AtomicU64,
}

/// Every counter of this replica, and the replica's share of each limit.
pub struct Throttler {
    replica_count: u64,
    /// Hashes a [`ThrottleKey`] into a counter's key.
    hasher: std::collections::hash_map::RandomState,
    counters: ShardedMap<u64, Counter>,
}

impl std::fmt::Debug for Throttler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttler")
            .field("replica_count", &self.replica_count)
            .finish()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Throttler {
    /// Counters for one replica out of `replica_count` (at least 1).
    pub fn new(replica_count: u32) -> Self {
        Throttler {
            replica_count: u64::from(replica_count.max(1)),
            hasher: Default::default(),
            counters: ShardedMap::new(SHARDS),
        }
    }

    /// This replica's share of `limit`: `ceil(limit / N)`, at least 1.
    pub fn share(&self, limit: u64) -> u64 {
        limit.div_ceil(self.replica_count).max(1)
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
            let limit = self.share(check.limit.count);
            let key = self.hasher.hash_one(check.key);
            match self.take(key, window, limit, (window + 1) * unit) {
                Some(count) => {
                    if n_taken < taken.len() {
                        taken[n_taken] = (key, window);
                        n_taken += 1;
                    }
                    let status = RateLimitStatus {
                        limit,
                        remaining: limit.saturating_sub(count),
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

    /// Takes one unit in `window`; returns the count after it, or `None` when the
    /// window's limit is reached.
    fn take(&self, key: u64, window: u64, limit: u64, window_end: u64) -> Option<u64> {
        self.counters.with_or_insert(
            key,
            || Counter {
                state: AtomicU64::new(window << 32),
                window_end: AtomicU64::new(window_end),
            },
            |counter| take_from(counter, window, limit, window_end),
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
