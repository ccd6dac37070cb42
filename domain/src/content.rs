//! The configuration's content, as a fingerprint that names objects by their natural
//! keys: [`State::content_hash`].
//!
//! [`State::config_hash`] is a chain over the log's records — ids, times, actors and the
//! order of history included — so that a gateway can prove it folded exactly control's
//! records. Two deployments configured alike (one exported, the other applied from the
//! file) hold different ids and different histories, so their chains differ. The
//! content hash is the other question: *is the configuration the same?* It covers what
//! a declarative configuration file holds, and nothing else:
//!
//! - custom throttling policies, by level and name (built-in ones are the same
//!   everywhere);
//! - APIs by context and version: the definition (see [`canonical_definition`]) and the
//!   lifecycle state;
//! - applications by owner and name: tier and description;
//! - subscriptions by (owner, application name, context, version): tier, state and the
//!   scopes granted.
//!
//! Never ids, versions, sequences, times, actors — nor keys, signing keys or revoked
//! tokens, which carry secrets or belong to token-service's run time, not to the
//! configuration. It costs one pass over the configuration (O(n log n) for the
//! ordering), so it is computed on demand, never by the fold.

use gatehouse_proto::events::{ApiDefinition, CorsPolicy, EndpointGroup, Endpoints, ResponseCache};
use prost::Message;

use crate::State;

/// FNV-1a 64, fed field by field, each field length-prefixed so that no two different
/// sequences of fields feed the same bytes.
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, value: impl AsRef<[u8]>) -> &mut Self {
        self.bytes(value.as_ref());
        self
    }

    fn number(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_le_bytes());
        self
    }
}

/// `definition` with every empty optional part (endpoints, an endpoint group, CORS,
/// cache) absent: an empty part and a missing one configure the same thing, so they
/// hash alike and export alike.
pub fn canonical_definition(definition: &ApiDefinition) -> ApiDefinition {
    let mut d = definition.clone();
    if let Some(endpoints) = d.endpoints.as_mut() {
        for group in [&mut endpoints.production, &mut endpoints.sandbox] {
            if group.as_ref() == Some(&EndpointGroup::default()) {
                *group = None;
            }
        }
    }
    if d.endpoints == Some(Endpoints::default()) {
        d.endpoints = None;
    }
    if d.cors == Some(CorsPolicy::default()) {
        d.cors = None;
    }
    if d.cache == Some(ResponseCache::default()) {
        d.cache = None;
    }
    d
}

impl State {
    /// The fingerprint of the configuration's content, by natural keys (see the module
    /// docs): equal for two deployments configured alike, whatever their ids and
    /// histories.
    pub fn content_hash(&self) -> u64 {
        let mut hash = Fingerprint::new();
        for policy in self.policies().filter(|p| !p.built_in) {
            hash.field("policy")
                .number(policy.level as u64)
                .field(&policy.name)
                .number(u64::from(policy.unlimited))
                .number(if policy.unlimited {
                    0
                } else {
                    policy.request_count
                })
                .number(if policy.unlimited {
                    0
                } else {
                    u64::from(policy.unit_seconds)
                })
                .field(&policy.description);
        }
        let mut apis: Vec<_> = self
            .apis()
            .filter_map(|a| a.definition.as_ref().map(|d| (d, a)))
            .collect();
        apis.sort_by(|(a, _), (b, _)| (&a.context, &a.version).cmp(&(&b.context, &b.version)));
        for (definition, api) in apis {
            hash.field("api")
                .field(&definition.context)
                .field(&definition.version)
                .field(canonical_definition(definition).encode_to_vec())
                .number(api.lifecycle as u64);
        }
        let mut applications: Vec<_> = self.applications().collect();
        applications.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        for application in applications {
            hash.field("application")
                .field(&application.owner)
                .field(&application.name)
                .field(&application.throttling_tier)
                .field(&application.description);
            let mut subscriptions: Vec<_> = self
                .subscriptions_of_application(&application.id)
                .filter_map(|s| {
                    let d = self.api(&s.api_id)?.definition.as_ref()?;
                    Some((d.context.as_str(), d.version.as_str(), s))
                })
                .collect();
            subscriptions.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            for (context, version, s) in subscriptions {
                hash.field("subscription")
                    .field(context)
                    .field(version)
                    .field(&s.tier)
                    .number(s.state as u64)
                    .number(s.granted_scopes.len() as u64);
                for scope in &s.granted_scopes {
                    hash.field(scope);
                }
            }
        }
        hash.0
    }
}
