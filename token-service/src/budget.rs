//! Failure budgets: how many failed client authentications one client id and one
//! source address may cause before they must wait, and for how long.
//!
//! # The design
//!
//! Each client id and each source address (an IPv4 address; an IPv6 /64, what one
//! host is usually given) has a record: its failures and when its backoff ends.
//!
//! - **Budget, then backoff.** The first `budget` failures cost nothing more. Each
//!   failure past the budget blocks the record for 1 s, doubling with each further
//!   one, up to `backoff_max`. A blocked record is answered 429 `slow_down` with
//!   `Retry-After` *before* any argon2 runs: a refused attempt costs a hash-map lookup.
//! - **Never a permanent lock.** A record is forgotten `backoff_max` after its last
//!   backoff ended (or after its last failure, within the budget). So once an attack
//!   stops, every block it caused is over within `backoff_max`.
//! - **The holder is not locked out by someone else's failures.** A blocked *client id*
//!   is still checked for a request from an address with no failure on record: an
//!   attacker who spent their addresses' budgets cannot keep the legitimate holder, at
//!   another address, from authenticating (each fresh attacker address gets one guess
//!   at a blocked client id before it has a record; after its own budget, it is
//!   blocked for any client). A blocked *address* blocks every client id from it —
//!   that is the attacker's address — but a secret recently proved (the secret
//!   checker's cache of successes, [`crate::secrets`]) is never blocked: it costs no
//!   argon2, so a client that authenticated in the last minutes keeps working even
//!   from an address an attacker shares (a NAT).
//! - **Success clears the client id's record** (the holder proved it); it does not
//!   clear the address's (a valid client of the attacker's own must not launder its
//!   address's failures).
//!
//! Budgets count *verified* failures: requests already admitted when a budget runs out
//! (at most the argon2 pool's workers + queue) still finish. The memory and CPU bound
//! is the pool's ([`crate::pool`]); the budgets bound the guessing rate and keep one
//! attacker from occupying the pool.
//!
//! # Bounded state
//!
//! Each table holds at most its capacity. Client ids are keyed by a 64-bit keyed hash
//! (SipHash with this process's random key) of the id, so an unknown id of any length
//! costs eight bytes and a table entry. When a table is full, forgotten records are
//! swept (at most once a second), then an arbitrary record is dropped: an attacker
//! who fills a table gains only retries sooner — never a lockout of anyone.
//!
//! # Shared state
//!
//! One [`FailureBudgets`] is shared by every request (through the guard, an `Arc`). Each
//! table is behind its own `std::sync::Mutex`: every critical section is one lookup or
//! update (or, when a table is full, one sweep), never held across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first backoff past a budget; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How often a full table may be swept of forgotten records.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The budgets' configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    pub per_client: u32,
    pub per_address: u32,
    pub backoff_max: Duration,
    pub max_clients: usize,
    pub max_addresses: usize,
}

impl From<&crate::limits::EdgeLimits> for BudgetConfig {
    fn from(limits: &crate::limits::EdgeLimits) -> Self {
        BudgetConfig {
            per_client: limits.failure_budget_per_client,
            per_address: limits.failure_budget_per_address,
            backoff_max: limits.failure_backoff_max(),
            max_clients: limits.max_tracked_clients as usize,
            max_addresses: limits.max_tracked_addresses as usize,
        }
    }
}

/// A refusal: the client id or the address is in backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentications from this {what}: retry in {} s", retry_after.as_secs())]
pub struct Throttled {
    /// What is in backoff.
    pub what: Subject,
    /// When to retry, rounded up to whole seconds (at least 1 s).
    pub retry_after: Duration,
}

/// What a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Client,
    Address,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subject::Client => "client",
            Subject::Address => "address",
        })
    }
}

/// The address a budget is kept for: IPv4 as is (an IPv4-mapped IPv6 address too), IPv6
/// by its /64.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// When the backoff ends (the last failure's time while within the budget).
    until: Instant,
}

/// One table of records.
struct Ledger<K> {
    records: HashMap<K, Record>,
    budget: u32,
    backoff_max: Duration,
    capacity: usize,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Copy> Ledger<K> {
    fn new(budget: u32, backoff_max: Duration, capacity: usize) -> Self {
        Ledger {
            records: HashMap::new(),
            budget,
            backoff_max,
            capacity: capacity.max(1),
            last_sweep: None,
        }
    }

    fn forgotten(&self, record: &Record, now: Instant) -> bool {
        now >= record.until + self.backoff_max
    }

    /// The live record of `key`, if any.
    fn get(&self, key: &K, now: Instant) -> Option<&Record> {
        self.records.get(key).filter(|r| !self.forgotten(r, now))
    }

    /// How long `key` is still blocked. (Within the budget, `until` is the last
    /// failure's time, which may be a moment after `now` when another request recorded
    /// it concurrently: not a block.)
    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        self.get(key, now)
            .filter(|r| r.failures > self.budget)
            .map(|r| r.until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn backoff(&self, failures: u32) -> Duration {
        let past = failures.saturating_sub(self.budget);
        if past == 0 {
            return Duration::ZERO;
        }
        let doublings = (past - 1).min(31);
        FIRST_BACKOFF
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }

    /// Records a failure of `key`; whether it started (or extended) a backoff.
    fn fail(&mut self, key: K, now: Instant) -> bool {
        let failures = match self.get(&key, now) {
            Some(record) => record.failures.saturating_add(1),
            None => {
                self.make_room(now);
                1
            }
        };
        let backoff = self.backoff(failures);
        self.records.insert(
            key,
            Record {
                failures,
                until: now + backoff,
            },
        );
        !backoff.is_zero()
    }

    fn clear(&mut self, key: &K) {
        self.records.remove(key);
    }

    /// Makes room for one more record: sweeps forgotten ones (at most once per
    /// [`SWEEP_INTERVAL`]), then drops an arbitrary one.
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < self.capacity {
            return;
        }
        if self
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL)
        {
            self.last_sweep = Some(now);
            let backoff_max = self.backoff_max;
            self.records.retain(|_, r| now < r.until + backoff_max);
        }
        while self.records.len() >= self.capacity {
            let Some(key) = self.records.keys().next().copied() else {
                break;
            };
            self.records.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// The failure budgets of client ids and source addresses (see the module
/// documentation).
pub struct FailureBudgets {
    clients: Mutex<Ledger<u64>>,
    addresses: Mutex<Ledger<IpAddr>>,
    hasher: RandomState,
}

impl std::fmt::Debug for FailureBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (clients, addresses) = self.tracked();
        f.debug_struct("FailureBudgets")
            .field("tracked_clients", &clients)
            .field("tracked_addresses", &addresses)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whole seconds, rounded up, at least one: what `Retry-After` says.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

impl FailureBudgets {
    pub fn new(config: BudgetConfig) -> Self {
        FailureBudgets {
            clients: Mutex::new(Ledger::new(
                config.per_client,
                config.backoff_max,
                config.max_clients,
            )),
            addresses: Mutex::new(Ledger::new(
                config.per_address,
                config.backoff_max,
                config.max_addresses,
            )),
            hasher: RandomState::new(),
        }
    }

    fn client_key(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    /// Whether an attempt for `client_id` from `address` may be checked now: refused if
    /// the address is in backoff, or if the client id is and the address has a failure
    /// on record.
    pub fn admit(&self, address: IpAddr, client_id: &str, now: Instant) -> Result<(), Throttled> {
        let address = address_key(address);
        let (address_blocked, address_clean) = {
            let addresses = lock(&self.addresses);
            (
                addresses.blocked_for(&address, now),
                addresses.get(&address, now).is_none(),
            )
        };
        if let Some(wait) = address_blocked {
            return Err(Throttled {
                what: Subject::Address,
                retry_after: whole_seconds(wait),
            });
        }
        if address_clean {
            return Ok(());
        }
        let key = self.client_key(client_id);
        match lock(&self.clients).blocked_for(&key, now) {
            Some(wait) => Err(Throttled {
                what: Subject::Client,
                retry_after: whole_seconds(wait),
            }),
            None => Ok(()),
        }
    }

    /// Records a failed authentication of `client_id` from `address`; which budgets it
    /// put in backoff.
    pub fn failed(&self, address: IpAddr, client_id: &str, now: Instant) -> Vec<Subject> {
        let mut blocked = Vec::new();
        let key = self.client_key(client_id);
        if lock(&self.clients).fail(key, now) {
            blocked.push(Subject::Client);
        }
        if lock(&self.addresses).fail(address_key(address), now) {
            blocked.push(Subject::Address);
        }
        blocked
    }

    /// Records a successful authentication of `client_id`: its record is cleared.
    pub fn succeeded(&self, client_id: &str) {
        let key = self.client_key(client_id);
        lock(&self.clients).clear(&key);
    }

    /// How many client ids and addresses have a record (live or not yet swept).
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.clients).len(), lock(&self.addresses).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn budgets(per_client: u32, per_address: u32, capacity: usize) -> FailureBudgets {
        FailureBudgets::new(BudgetConfig {
            per_client,
            per_address,
            backoff_max: Duration::from_secs(8),
            max_clients: capacity,
            max_addresses: capacity,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_budget_then_a_doubling_backoff_up_to_the_cap() {
        let b = budgets(2, 100, 100);
        let (attacker, t0) = (ip("10.0.0.1"), Instant::now());
        assert!(b.admit(attacker, "c", t0).is_ok());
        assert!(b.failed(attacker, "c", t0).is_empty());
        assert!(b.admit(attacker, "c", t0).is_ok());
        assert!(b.failed(attacker, "c", t0).is_empty());
        // The budget is spent: the third failure starts the backoff.
        assert_eq!(b.failed(attacker, "c", t0), vec![Subject::Client]);
        let refused = b.admit(attacker, "c", t0).unwrap_err();
        assert_eq!(refused.what, Subject::Client);
        assert_eq!(refused.retry_after, SECOND);
        let mut t = t0;
        for expected in [1, 2, 4, 8, 8, 8] {
            let blocked = b.admit(attacker, "c", t).unwrap_err().retry_after;
            assert!(blocked <= Duration::from_secs(expected), "{blocked:?}");
            t += blocked;
            assert!(b.admit(attacker, "c", t).is_ok(), "the backoff ends");
            b.failed(attacker, "c", t);
            assert_eq!(
                b.admit(attacker, "c", t).unwrap_err().retry_after,
                Duration::from_secs(expected.min(8) * 2).min(Duration::from_secs(8))
            );
        }
        // Other client ids from the attacker's address are not blocked by this one's
        // budget (the address has its own).
        assert!(b.admit(attacker, "other", t).is_ok());
    }

    #[test]
    fn the_holder_at_a_clean_address_is_checked_while_the_client_id_is_blocked() {
        let b = budgets(1, 100, 100);
        let (attacker, holder, t) = (ip("10.0.0.1"), ip("10.0.0.2"), Instant::now());
        for _ in 0..5 {
            b.failed(attacker, "c", t);
        }
        assert_eq!(b.admit(attacker, "c", t).unwrap_err().what, Subject::Client);
        assert!(
            b.admit(holder, "c", t).is_ok(),
            "a clean address is checked"
        );
        // The holder proves the secret: the client id's record is cleared for everyone.
        b.succeeded("c");
        assert!(b.admit(attacker, "c", t).is_ok());
        // A fresh attacker address gets one guess, then it has a record.
        b.failed(attacker, "c", t);
        b.failed(attacker, "c", t);
        let fresh = ip("10.0.0.3");
        assert!(b.admit(fresh, "c", t).is_ok());
        b.failed(fresh, "c", t);
        assert_eq!(b.admit(fresh, "c", t).unwrap_err().what, Subject::Client);
    }

    #[test]
    fn an_address_past_its_budget_is_blocked_for_every_client_id() {
        let b = budgets(100, 3, 100);
        let (attacker, t) = (ip("10.0.0.1"), Instant::now());
        for i in 0..3 {
            assert!(b.failed(attacker, &format!("c{i}"), t).is_empty());
        }
        assert_eq!(b.failed(attacker, "c3", t), vec![Subject::Address]);
        let refused = b.admit(attacker, "anything", t).unwrap_err();
        assert_eq!(
            (refused.what, refused.retry_after),
            (Subject::Address, SECOND)
        );
        assert!(b.admit(ip("10.0.0.2"), "anything", t).is_ok());
        // Success does not clear an address's record.
        b.succeeded("c0");
        assert!(b.admit(attacker, "c0", t).is_err());
    }

    #[test]
    fn no_block_outlasts_the_attack_by_more_than_the_cap() {
        let b = budgets(1, 1, 100);
        let (attacker, t0) = (ip("10.0.0.1"), Instant::now());
        let mut t = t0;
        // A long attack: always retrying the moment the backoff ends.
        for _ in 0..40 {
            if let Err(refused) = b.admit(attacker, "c", t) {
                t += refused.retry_after;
            }
            b.failed(attacker, "c", t);
        }
        // It stops at `t`: at most the cap later, everything is admitted, and once the
        // records are forgotten the budgets are whole again.
        let cap = Duration::from_secs(8);
        assert!(b.admit(attacker, "c", t + cap).is_ok());
        assert!(
            b.failed(attacker, "c", t + cap + cap).is_empty(),
            "forgotten"
        );
    }

    #[test]
    fn a_failure_recorded_a_moment_after_an_admission_is_not_a_block() {
        let b = budgets(5, 5, 100);
        let (address, t) = (ip("10.0.0.1"), Instant::now());
        b.failed(address, "c", t + Duration::from_millis(1));
        assert!(b.admit(address, "c", t).is_ok());
    }

    #[test]
    fn ipv6_addresses_share_a_budget_per_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let b = budgets(100, 1, 100);
        let t = Instant::now();
        b.failed(ip("2001:db8:1:2::1"), "c", t);
        b.failed(ip("2001:db8:1:2::2"), "c", t);
        assert!(b.admit(ip("2001:db8:1:2::3"), "c", t).is_err());
        assert!(b.admit(ip("2001:db8:1:3::1"), "c", t).is_ok());
    }

    #[test]
    fn the_tables_stay_within_their_capacity_under_rotation() {
        let b = budgets(1, 1, 64);
        let t = Instant::now();
        for i in 0..10_000u32 {
            let address = IpAddr::from(i.to_be_bytes());
            b.failed(
                address,
                &format!("client-{i}"),
                t + Duration::from_millis(u64::from(i)),
            );
            let (clients, addresses) = b.tracked();
            assert!(clients <= 64 && addresses <= 64, "{clients} {addresses}");
        }
    }
}
