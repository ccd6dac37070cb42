//! What the services' in-memory stores share: records under ids the store assigns,
//! and the lock the handlers share them behind.
//!
//! # Shared state
//!
//! [`Shared`] is the one piece of state handlers share: an `Arc<std::sync::RwLock<_>>`
//! rather than tokio's async lock or a channel-owned task, since every critical section
//! is a short, synchronous map operation and no guard is held across an `.await` (the
//! case tokio's docs recommend a blocking lock for); `RwLock` over `Mutex` because
//! reads (the `GET`s) dominate. A poisoned lock is recovered rather than propagated: a
//! panicking handler cannot leave a store half-updated, since each mutation is a single
//! map insert.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Records keyed by the id the table gives each (1, 2, 3, ...; never reused), listed
/// in id order.
///
/// A `BTreeMap` keeps listings ordered by id without sorting; `next_id` only grows.
#[derive(Debug, Clone)]
pub struct IdTable<T> {
    records: BTreeMap<u64, T>,
    next_id: u64,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            records: BTreeMap::new(),
            next_id: 1,
        }
    }
}

impl<T: Clone> IdTable<T> {
    /// An empty table; the first record gets id 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, by ascending id.
    pub fn list(&self) -> Vec<T> {
        self.records.values().cloned().collect()
    }

    /// The record `id`, if there is one.
    pub fn get(&self, id: u64) -> Option<T> {
        self.records.get(&id).cloned()
    }

    /// The first record (by id) that `matches`.
    pub fn find(&self, matches: impl Fn(&T) -> bool) -> Option<&T> {
        self.records.values().find(|record| matches(record))
    }

    /// Stores the record `make` builds for the next id, and returns it.
    pub fn insert_with(&mut self, make: impl FnOnce(u64) -> T) -> T {
        let id = self.next_id;
        self.next_id += 1;
        let record = make(id);
        self.records.insert(id, record.clone());
        record
    }
}

/// A value every handler shares, cheap to clone (see the module docs for the lock).
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<RwLock<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(RwLock::new(value)))
    }

    /// Reads the value; hold the guard briefly, never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the value; hold the guard briefly, never across an `.await`.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_grow_and_list_in_order() {
        let mut table = IdTable::new();
        let first = table.insert_with(|id| (id, "a"));
        let second = table.insert_with(|id| (id, "b"));
        assert_eq!((first.0, second.0), (1, 2));
        assert_eq!(table.list(), [(1, "a"), (2, "b")]);
        assert_eq!(table.get(2), Some((2, "b")));
        assert_eq!(table.find(|(_, name)| *name == "b"), Some(&(2, "b")));
        assert_eq!(table.get(3), None);
    }
}
