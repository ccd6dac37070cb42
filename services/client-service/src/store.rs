//! In-memory user storage and the shared handler state.

use service_kit::store::{IdTable, Shared};
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use crate::model::{User, ValidUser};

/// The users, under the ids the store gives them (never reused), listed by id.
#[derive(Debug, Clone)]
pub struct UserStore {
    users: IdTable<User>,
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
            users: IdTable::new(),
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
            store.users.insert_with(|id| User {
                id,
                name: name.into(),
                email: email.into(),
            });
        }
        store
    }

    /// All users, by ascending id.
    pub fn list(&self) -> Vec<User> {
        self.users.list()
    }

    pub fn get(&self, id: u64) -> Option<User> {
        self.users.get(id)
    }

    /// Stores `user` under the next id, unless its email is taken.
    pub fn insert(&mut self, user: ValidUser) -> Result<User, EmailTaken> {
        let taken = |u: &User| u.email.eq_ignore_ascii_case(user.email());
        if let Some(existing) = self.users.find(taken) {
            return Err(EmailTaken {
                existing_id: existing.id,
            });
        }
        Ok(self.users.insert_with(|id| user.into_user(id)))
    }
}

/// State shared by all handlers: a cheap-to-clone handle on one [`UserStore`]
/// (see [`Shared`] for the lock).
#[derive(Debug, Clone)]
pub struct AppState {
    users: Shared<UserStore>,
}

impl AppState {
    pub fn new(store: UserStore) -> Self {
        Self {
            users: Shared::new(store),
        }
    }

    /// State over [`UserStore::seeded`].
    pub fn seeded() -> Self {
        Self::new(UserStore::seeded())
    }

    pub fn read(&self) -> RwLockReadGuard<'_, UserStore> {
        self.users.read()
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, UserStore> {
        self.users.write()
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
