//! In-memory user storage and the shared handler state.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::model::{User, ValidUser};

/// The users, keyed by id, plus the id the next created user gets.
///
/// A `BTreeMap` keeps listings ordered by id without sorting. Ids are never
/// reused: `next_id` only grows.
#[derive(Debug, Clone)]
pub struct UserStore {
    users: BTreeMap<u64, User>,
    next_id: u64,
}

/// `POST /users` with an email (compared case-insensitively) already in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailTaken {
    pub existing_id: u64,
}

impl UserStore {
    /// An empty store; the first user gets id 1.
    pub fn empty() -> Self {
        Self {
            users: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The demo data: ids 1–3.
    pub fn seeded() -> Self {
        let mut store = Self::empty();
        for (name, email) in [
            ("Ada Lovelace", "ada@example.com"),
            ("Alan Turing", "alan@example.com"),
            ("Grace Hopper", "grace@example.com"),
        ] {
            let id = store.next_id;
            store.next_id += 1;
            store.users.insert(
                id,
                User {
                    id,
                    name: name.into(),
                    email: email.into(),
                },
            );
        }
        store
    }

    /// All users, by ascending id.
    pub fn list(&self) -> Vec<User> {
        self.users.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<User> {
        self.users.get(&id).cloned()
    }

    /// Stores `user` under the next id, unless its email is taken.
    pub fn insert(&mut self, user: ValidUser) -> Result<User, EmailTaken> {
        if let Some(existing) = self
            .users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(user.email()))
        {
            return Err(EmailTaken {
                existing_id: existing.id,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let user = user.into_user(id);
        self.users.insert(id, user.clone());
        Ok(user)
    }
}

/// State shared by all handlers: a cheap-to-clone handle on one [`UserStore`].
///
/// `Arc<std::sync::RwLock<_>>` rather than tokio's async lock or a
/// channel-owned task: every critical section is a short, synchronous map
/// operation and no guard is held across an `.await`, which is the case
/// tokio's docs recommend a blocking lock for. `RwLock` over `Mutex` because
/// reads (the `GET`s) dominate. A poisoned lock is recovered rather than
/// propagated: a panicking handler cannot leave the map half-updated, since
/// each mutation is a single `BTreeMap::insert`.
#[derive(Debug, Clone)]
pub struct AppState {
    users: Arc<RwLock<UserStore>>,
}

impl AppState {
    pub fn new(store: UserStore) -> Self {
        Self {
            users: Arc::new(RwLock::new(store)),
        }
    }

    /// State over [`UserStore::seeded`].
    pub fn seeded() -> Self {
        Self::new(UserStore::seeded())
    }

    pub fn read(&self) -> RwLockReadGuard<'_, UserStore> {
        self.users.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, UserStore> {
        self.users.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewUser;

    fn valid(name: &str, email: &str) -> ValidUser {
        NewUser {
            name: Some(name.into()),
            email: Some(email.into()),
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn ids_follow_the_seed_and_are_not_reused() {
        let mut store = UserStore::seeded();
        assert_eq!(store.list().len(), 3);
        let created = store.insert(valid("New", "new@example.com")).unwrap();
        assert_eq!(created.id, 4);
        assert_eq!(store.get(4), Some(created));
    }

    #[test]
    fn duplicate_email_is_case_insensitive() {
        let mut store = UserStore::seeded();
        let err = store.insert(valid("Ada", "ADA@Example.com")).unwrap_err();
        assert_eq!(err, EmailTaken { existing_id: 1 });
        assert_eq!(store.list().len(), 3);
    }
}
