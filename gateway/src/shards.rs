//! One sharded map for the request path's in-memory stores: verified tokens
//! ([`crate::auth`]), cached responses ([`crate::cache`]) and throttle counters
//! ([`crate::throttle`]).
//!
//! # Shared state
//!
//! A [`ShardedMap`] is a fixed number of `RwLock<HashMap>` shards; a key's shard is
//! picked by hashing it with the map's own random hasher (independent of the shards'
//! hashers, so the keys of one shard still spread over its buckets). A lookup takes one
//! shard's read lock; only inserting, removing and sweeping take a write lock, and only
//! on one shard at a time (a sweep walks them one after the other). So calls contend
//! only when they touch the same shard and one of them writes. The closures given to
//! the methods run with the shard's lock held: they must be short and never block.
//!
//! A map made [`weighted`](ShardedMap::weighted) also keeps, per shard, the sum of its
//! values' weights (the response cache's bytes), updated under the same write lock as
//! the entries, so [`insert_weighed`](ShardedMap::insert_weighed) can keep a shard
//! within a budget without walking it.
//!
//! A lock poisoned by a panic elsewhere is used as is: every value stored is valid on
//! its own (a counter, a cached entry), so there is no half-written state to avoid.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One shard's entries, and the sum of their weights.
struct Entries<K, V> {
    map: FastMap<K, V>,
    weight: usize,
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries {
            map: HashMap::default(),
            weight: 0,
        }
    }
}

impl<K: Hash + Eq, V> Entries<K, V> {
    fn insert(&mut self, key: K, value: V, weigh: fn(&V) -> usize) {
        self.weight += weigh(&value);
        if let Some(old) = self.map.insert(key, value) {
            self.weight -= weigh(&old);
        }
    }

    fn remove<Q>(&mut self, key: &Q, weigh: fn(&V) -> usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(old) = self.map.remove(key) {
            self.weight -= weigh(&old);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool, weigh: fn(&V) -> usize) {
        let mut removed = 0;
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                removed += weigh(v);
            }
            kept
        });
        self.weight -= removed;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.weight = 0;
    }
}

type Shard<K, V> = RwLock<Entries<K, V>>;

/// A concurrent map split into shards. See the module docs.
pub struct ShardedMap<K, V> {
    /// Picks a key's shard.
    selector: foldhash::fast::RandomState,
    shards: Box<[Shard<K, V>]>,
    /// A value's weight (0 for every value of an unweighted map).
    weigh: fn(&V) -> usize,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map of `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        Self::weighted(shards, |_| 0)
    }

    /// An empty map of `shards` shards whose values weigh `weigh(value)` each (bytes,
    /// for the response cache): see [`insert_weighed`](Self::insert_weighed).
    pub fn weighted(shards: usize, weigh: fn(&V) -> usize) -> Self {
        ShardedMap {
            selector: Default::default(),
            shards: (0..shards.max(1)).map(|_| RwLock::default()).collect(),
            weigh,
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        &self.shards[(self.selector.hash_one(key) as usize) % self.shards.len()]
    }

    fn read_shard(shard: &Shard<K, V>) -> RwLockReadGuard<'_, Entries<K, V>> {
        shard.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shard(shard: &Shard<K, V>) -> RwLockWriteGuard<'_, Entries<K, V>> {
        shard.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on the value of `key` (or `None`) under the shard's read lock.
    pub fn read<Q, R>(&self, key: &Q, read: impl FnOnce(Option<&V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(Self::read_shard(self.shard(key)).map.get(key))
    }

    /// Runs `use_value` on the value of `key`, inserting `make()` first if there is none.
    /// A known key needs only the read lock; the write lock is taken to insert.
    pub fn with_or_insert<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        use_value: impl FnOnce(&V) -> R,
    ) -> R {
        let shard = self.shard(&key);
        {
            let values = Self::read_shard(shard);
            if let Some(value) = values.map.get(&key) {
                return use_value(value);
            }
        }
        let mut values = Self::write_shard(shard);
        let values = &mut *values;
        let weigh = self.weigh;
        let value = values.map.entry(key).or_insert_with(|| {
            let value = make();
            values.weight += weigh(&value);
            value
        });
        use_value(value)
    }

    /// Inserts `value`, keeping the shard within `max_per_shard` entries: when it is
    /// full, the entries `keep` refuses go first, and if that is not enough the whole
    /// shard (for caches, which may forget).
    pub fn insert_bounded(
        &self,
        key: K,
        value: V,
        max_per_shard: usize,
        keep: impl FnMut(&K, &mut V) -> bool,
    ) {
        let mut values = Self::write_shard(self.shard(&key));
        if values.map.len() >= max_per_shard {
            values.retain(keep, self.weigh);
            if values.map.len() >= max_per_shard {
                values.clear();
            }
        }
        values.insert(key, value, self.weigh);
    }

    /// Inserts `value` (replacing the value of `key`), keeping the shard's weight within
    /// `max_weight`: when it would not fit, the entries `keep` refuses go first, then the
    /// oldest by `age` (smallest first) until the shard is at most 7/8 full with the new
    /// value, so that the next inserts find room without another eviction. A value
    /// heavier than `max_weight` on its own is not inserted (and `key` keeps no value):
    /// returns whether it was.
    pub fn insert_weighed<O: Ord>(
        &self,
        key: K,
        value: V,
        max_weight: usize,
        keep: impl FnMut(&K, &mut V) -> bool,
        age: impl Fn(&V) -> O,
    ) -> bool
    where
        K: Clone,
    {
        let weight = (self.weigh)(&value);
        let mut values = Self::write_shard(self.shard(&key));
        values.remove(&key, self.weigh);
        if weight > max_weight {
            return false;
        }
        if values.weight + weight > max_weight {
            values.retain(keep, self.weigh);
        }
        if values.weight + weight > max_weight {
            let target = (max_weight - max_weight / 8).saturating_sub(weight);
            let mut by_age: Vec<(O, K)> = values
                .map
                .iter()
                .map(|(k, v)| (age(v), k.clone()))
                .collect();
            by_age.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (_, oldest) in by_age {
                if values.weight <= target {
                    break;
                }
                values.remove(&oldest, self.weigh);
            }
        }
        values.insert(key, value, self.weigh);
        true
    }

    /// Removes `key` if `remove` says so of its value.
    pub fn remove_if<Q>(&self, key: &Q, remove: impl FnOnce(&V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut values = Self::write_shard(self.shard(key));
        if let Some(value) = values.map.get(key)
            && remove(value)
        {
            values.remove(key, self.weigh);
        }
    }

    /// Visits every entry under its shard's read lock, one shard at a time.
    pub fn for_each(&self, mut visit: impl FnMut(&K, &V)) {
        for shard in &self.shards {
            for (key, value) in &Self::read_shard(shard).map {
                visit(key, value);
            }
        }
    }

    /// Keeps only the entries `keep` accepts, one shard at a time (sweeps).
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &self.shards {
            Self::write_shard(shard).retain(&mut keep, self.weigh);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| Self::read_shard(s).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of the values' weights (0 for an unweighted map).
    pub fn weight(&self) -> usize {
        self.shards.iter().map(|s| Self::read_shard(s).weight).sum()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl<K, V> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inserts_and_sweeps_across_shards() {
        let map: ShardedMap<Box<str>, u32> = ShardedMap::new(4);
        for i in 0..100 {
            map.insert_bounded(format!("k{i}").into(), i, usize::MAX, |_, _| true);
        }
        assert_eq!(map.len(), 100);
        assert_eq!(map.read("k7", |v| v.copied()), Some(7));
        assert_eq!(map.read("nope", |v| v.copied()), None);
        map.remove_if("k7", |v| *v == 8);
        assert_eq!(
            map.read("k7", |v| v.copied()),
            Some(7),
            "not removed: 7 != 8"
        );
        map.remove_if("k7", |v| *v == 7);
        assert_eq!(map.read("k7", |v| v.copied()), None);
        map.retain(|_, v| *v % 2 == 0);
        assert_eq!(map.len(), 50);
        assert_eq!(map.with_or_insert("k1".into(), || 41, |v| *v + 1), 42);
        assert_eq!(map.with_or_insert("k1".into(), || 0, |v| *v), 41, "kept");
    }

    #[test]
    fn a_full_shard_drops_what_keep_refuses_then_everything() {
        let map: ShardedMap<u32, u32> = ShardedMap::new(1);
        for i in 0..4 {
            map.insert_bounded(i, i, 4, |_, _| true);
        }
        map.insert_bounded(10, 10, 4, |_, v| *v >= 2);
        assert_eq!(map.len(), 3, "0 and 1 went, 10 came: {map:?}");
        map.insert_bounded(11, 11, 3, |_, _| true);
        assert_eq!(map.len(), 1, "nothing could go: the shard was emptied");
        assert_eq!(map.read(&11, |v| v.copied()), Some(11));
    }

    #[test]
    fn a_weighted_shard_stays_within_its_budget_dropping_refused_then_oldest() {
        // The value is (weight, age).
        let map: ShardedMap<u32, (usize, u32)> = ShardedMap::weighted(1, |v| v.0);
        let insert = |k: u32, w: usize, age: u32, keep_from: u32| {
            map.insert_weighed(k, (w, age), 100, |_, v| v.1 >= keep_from, |v| v.1)
        };
        for k in 0..10 {
            assert!(insert(k, 10, k, 0));
        }
        assert_eq!(map.weight(), 100);
        // Full: entries `keep` refuses (age < 3) go first, nothing else.
        assert!(insert(10, 20, 10, 3));
        assert_eq!(map.weight(), 90, "0, 1, 2 dropped for 10: {map:?}");
        assert_eq!(map.read(&2, |v| v.copied()), None);
        assert_eq!(map.read(&3, |v| v.copied()), Some((10, 3)));
        // Full again, `keep` refuses nothing: the oldest go, down to 7/8 with the new one.
        assert!(insert(11, 30, 11, 0));
        assert!(map.weight() <= 100 - 100 / 8, "{}", map.weight());
        assert_eq!(map.read(&3, |v| v.copied()), None, "the oldest went");
        assert_eq!(map.read(&11, |v| v.copied()), Some((30, 11)));
        assert_eq!(
            map.read(&10, |v| v.copied()),
            Some((20, 10)),
            "a young one stayed"
        );
        // Replacing a key counts its weight once.
        let before = map.weight();
        assert!(insert(11, 5, 12, 0));
        assert_eq!(map.weight(), before - 25);
        // Heavier than the whole budget: not stored, and the key's old value is gone.
        assert!(!insert(11, 101, 13, 0));
        assert_eq!(map.read(&11, |v| v.copied()), None);
        assert_eq!(map.weight(), before - 30);
        // Removing and sweeping keep the sum true.
        map.remove_if(&10, |_| true);
        map.retain(|_, _| false);
        assert_eq!((map.len(), map.weight()), (0, 0));
    }
}
