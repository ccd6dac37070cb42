//! What folding events touched: [`Effects`], the keys whose records — or whatever a
//! reader derives from them — may have changed.
//!
//! A reader that keeps something compiled from the [`State`](crate::State) (a gateway's
//! routing table) need not compile it all again after each batch of events: it asks
//! the state to record what the fold touches ([`State::record_effects`]), folds the
//! batch, takes the effects ([`State::take_effects`]) and recompiles exactly those keys
//! from the state as it now is. Effects name keys, never values: a key named twice in a
//! batch (created, then changed, then deleted) is recompiled once, from the end state,
//! which is all a reader needs.
//!
//! Effects may name more than changed (a key touched whose derived value did not move),
//! never less: every record the fold inserts, changes or removes is named, and so are
//! the records an event changes besides its own aggregate — the other versions of a
//! context whose default flag moved, the subscriptions an API or application deletion
//! ends, the keys an application deletion revokes, the revocations that expired.
//!
//! [`State::record_effects`]: crate::State::record_effects
//! [`State::take_effects`]: crate::State::take_effects
//!
//! # Shared state
//!
//! None: an `Effects` is a plain value, owned by the state recording it until taken.

use std::collections::BTreeSet;

use gatehouse_proto::events::throttle_policy::Level;

/// The keys a run of folded events touched. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// APIs whose record changed: created, updated, lifecycle changed, deleted, or whose
    /// default-version flag another version of their context took.
    pub apis: BTreeSet<String>,
    /// Throttling policies created, by level and name.
    pub policies: BTreeSet<(Level, String)>,
    /// Applications created or deleted.
    pub applications: BTreeSet<String>,
    /// `(application, API)` pairs whose subscription was created, changed (state,
    /// scopes) or removed (unsubscribed, or ended with its API or application).
    pub subscriptions: BTreeSet<(String, String)>,
    /// OAuth clients registered, given a new secret or revoked (also with their
    /// application).
    pub clients: BTreeSet<String>,
    /// Signing keys published or deactivated, by kid.
    pub signing_keys: BTreeSet<String>,
    /// Revoked tokens (jti) recorded, or forgotten once expired.
    pub revoked_tokens: BTreeSet<String>,
}

impl Effects {
    /// Whether nothing was touched (only records that carry no configuration were
    /// folded or skipped).
    pub fn is_empty(&self) -> bool {
        self.apis.is_empty()
            && self.policies.is_empty()
            && self.applications.is_empty()
            && self.subscriptions.is_empty()
            && self.clients.is_empty()
            && self.signing_keys.is_empty()
            && self.revoked_tokens.is_empty()
    }

    /// Adds what `other` touched.
    pub fn merge(&mut self, other: Effects) {
        self.apis.extend(other.apis);
        self.policies.extend(other.policies);
        self.applications.extend(other.applications);
        self.subscriptions.extend(other.subscriptions);
        self.clients.extend(other.clients);
        self.signing_keys.extend(other.signing_keys);
        self.revoked_tokens.extend(other.revoked_tokens);
    }
}
