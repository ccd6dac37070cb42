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
//! A lock poisoned by a panic elsewhere is used as is: every value stored is valid on
//! its own (a counter, a cached entry), so there is no half-written state to avoid.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

type Shard<K, V> = RwLock<HashMap<K, V, foldhash::fast::RandomState>>;

/// A concurrent map split into shards. See the module docs.
pub struct ShardedMap<K, V> {
    /// Picks a key's shard.
    selector: foldhash::fast::RandomState,
    shards: Box<[Shard<K, V>]>,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map of `shards` shards (at least one).
    pub fn new(shards: usize) -> Self {
        ShardedMap {
            selector: Default::default(),
            shards: (0..shards.max(1)).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, V> {
        &self.shards[(self.selector.hash_one(key) as usize) % self.shards.len()]
    }

    fn read_shard(
        shard: &Shard<K, V>,
    ) -> RwLockReadGuard<'_, HashMap<K, V, foldhash::fast::RandomState>> {
        shard.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shard(
        shard: &Shard<K, V>,
    ) -> RwLockWriteGuard<'_, HashMap<K, V, foldhash::fast::RandomState>> {
        shard.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on the value of `key` (or `None`) under the shard's read lock.
    pub fn read<Q, R>(&self, key: &Q, read: impl FnOnce(Option<&V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(Self::read_shard(self.shard(key)).get(key))
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
            if let Some(value) = values.get(&key) {
                return use_value(value);
            }
        }
        let mut values = Self::write_shard(shard);
        use_value(values.entry(key).or_insert_with(make))
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
        if values.len() >= max_per_shard {
            values.retain(keep);
            if values.len() >= max_per_shard {
                values.clear();
            }
        }
        values.insert(key, value);
    }

    /// Removes `key` if `remove` says so of its value.
    pub fn remove_if<Q>(&self, key: &Q, remove: impl FnOnce(&V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut values = Self::write_shard(self.shard(key));
        if let Some(value) = values.get(key)
            && remove(value)
        {
            values.remove(key);
        }
    }

    /// Keeps only the entries `keep` accepts, one shard at a time (sweeps).
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in &self.shards {
            Self::write_shard(shard).retain(&mut keep);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::read_shard(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
