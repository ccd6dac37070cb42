//! Gatehouse's domain: the aggregates of API management and the fold of their events.
//!
//! Nothing here does I/O. The shape is cqrs-es's:
//!
//! - [`handle`] takes the current [`State`] and a [`Command`], checks the rules of the
//!   aggregate it targets (an API, a throttling policy, an application, a
//!   subscription, an OAuth client, a signing key, a revoked token) and returns the events to append ([`PendingEvent`]), or a [`DomainError`] that says
//!   what is wrong.
//! - [`State::apply`] folds one stored event into the state. It is the only way state
//!   changes, so every reader of the log — control's read model, token-service's client
//!   registry, each gateway's routing table — agrees with every other by construction.
//!
//! The events and the state records are the protobuf messages of `gatehouse.events.v1`
//! (see the `gatehouse-proto` crate), so a snapshot is the state itself.
//!
//! # Where each part lives
//!
//! One module per aggregate, holding its command handlers and its rules:
//!
//! | aggregate | log subject kind | module |
//! | --- | --- | --- |
//! | API (and its lifecycle, in [`lifecycle`]) | `api` | [`api`] |
//! | throttling policy (and WSO2's built-in ones) | `policy` | [`policy`] |
//! | application | `application` | [`application`] |
//! | subscription | `subscription` | [`subscription`] |
//! | OAuth client, signing key, revoked token | `client`, `signingkey`, `token` | [`keys`] |
//!
//! Around them:
//!
//! - [`command`]: the [`Command`]s, [`handle`] (which only dispatches to the aggregate's
//!   module), and what a decision is made of — [`PendingEvent`], its [`Consistency`]
//!   guard, the [`AggregateKind`] and the [`EventMeta`] the edge adds.
//! - `state.rs`: [`State`] and the fold, [`State::apply`], for every aggregate at once,
//!   since one event may touch several (deleting an application ends its subscriptions
//!   and revokes its keys); its maps are persistent (O(1) clones) and indexed for
//!   every per-event lookup.
//! - `effects.rs`: [`Effects`], what folding touched, for readers that recompute only
//!   that (a gateway's routing table).
//! - [`validate`]: input rules shared by the aggregates; `error.rs`: [`DomainError`] and
//!   [`ApplyError`].
//! - [`content`]: [`State::content_hash`], the configuration's fingerprint by natural
//!   keys (what a declarative apply compares), beside the fold's own hash chain.
//! - [`redact`]: secret hashes cleared from events and snapshots for every reader but
//!   token-service.
//! - `record.rs`: what every versioned record shares — finding it or NOT_FOUND, deciding
//!   its next event, stamping it with version and sequence in the fold.

pub mod api;
pub mod application;
pub mod command;
pub mod content;
mod effects;
mod error;
pub mod keys;
pub mod lifecycle;
pub mod policy;
mod record;
pub mod redact;
mod state;
pub mod subscription;
pub mod validate;

pub use command::{AggregateKind, Command, Consistency, EventMeta, PendingEvent, handle};
pub use effects::Effects;
pub use error::{ApplyError, DomainError};
pub use policy::CustomPolicy;
pub use state::{Id, REVOCATION_RETENTION_SECONDS, State};
