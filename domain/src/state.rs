//! The fold: [`State`] is what every reader of the log holds, and [`State::apply`] is the
//! only way it changes.
//!
//! The records are the protobuf messages of `gatehouse.events.v1` themselves (`Api`,
//! `Application`, ...), so a [`Snapshot`] is the state as it is, with no mapping layer
//! that could drift. Maps are `BTreeMap`s so that iteration (listings, snapshots, the
//! config hash of a gateway) is in a stable order on every node.

use std::collections::BTreeMap;

use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    Api, Application, EventEnvelope, Snapshot, Subscription, ThrottlePolicy, event_envelope::Event,
    lifecycle, subscription_status, throttle_policy,
};

use crate::ApplyError;
use crate::policy;

/// Everything the log says, as of `sequence`.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    sequence: u64,
    apis: BTreeMap<String, Api>,
    /// Keyed by [`policy::policy_id`] (`<level>-<name>`): one name may exist at several
    /// levels (`Unlimited` does at all three).
    policies: BTreeMap<String, ThrottlePolicy>,
    applications: BTreeMap<String, Application>,
    subscriptions: BTreeMap<String, Subscription>,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// The state of an empty log: no APIs, and WSO2's default throttling policies.
    pub fn new() -> Self {
        let policies = policy::built_in()
            .into_iter()
            .map(|p| (policy::policy_id(p.level(), &p.name), p))
            .collect();
        State {
            sequence: 0,
            apis: BTreeMap::new(),
            policies,
            applications: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }

    /// The state a snapshot describes. Built-in policies are restored even if the
    /// snapshot lacks them (a snapshot from an older version).
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut state = State::new();
        state.sequence = snapshot.sequence;
        for p in snapshot.policies {
            state
                .policies
                .insert(policy::policy_id(p.level(), &p.name), p);
        }
        state.apis = snapshot
            .apis
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        state.applications = snapshot
            .applications
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        state.subscriptions = snapshot
            .subscriptions
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        state
    }

    /// The whole state and the sequence it covers.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            sequence: self.sequence,
            apis: self.apis.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            applications: self.applications.values().cloned().collect(),
            subscriptions: self.subscriptions.values().cloned().collect(),
        }
    }

    /// The log sequence this state covers (0: nothing applied yet).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn api(&self, id: &str) -> Option<&Api> {
        self.apis.get(id)
    }

    pub fn apis(&self) -> impl Iterator<Item = &Api> {
        self.apis.values()
    }

    /// The API with this context and version, if any.
    pub fn api_by_context_version(&self, context: &str, version: &str) -> Option<&Api> {
        self.apis.values().find(|a| {
            let d = a.definition.as_ref();
            d.is_some_and(|d| d.context == context && d.version == version)
        })
    }

    pub fn policy(&self, level: throttle_policy::Level, name: &str) -> Option<&ThrottlePolicy> {
        self.policies.get(&policy::policy_id(level, name))
    }

    pub fn policies(&self) -> impl Iterator<Item = &ThrottlePolicy> {
        self.policies.values()
    }

    pub fn application(&self, id: &str) -> Option<&Application> {
        self.applications.get(id)
    }

    pub fn applications(&self) -> impl Iterator<Item = &Application> {
        self.applications.values()
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.get(id)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions.values()
    }

    /// The subscription of an application to an API, if any.
    pub fn subscription_of(&self, application_id: &str, api_id: &str) -> Option<&Subscription> {
        self.subscriptions
            .values()
            .find(|s| s.application_id == application_id && s.api_id == api_id)
    }

    /// Folds the event stored at `sequence` into the state.
    ///
    /// `sequence` must be exactly the next one: a reader that sees anything else has
    /// missed events (or is replaying old ones) and must resync. On error the state is
    /// unchanged.
    pub fn apply(&mut self, sequence: u64, envelope: &EventEnvelope) -> Result<(), ApplyError> {
        if sequence != self.sequence + 1 {
            return Err(ApplyError::OutOfOrder {
                state: self.sequence,
                got: sequence,
            });
        }
        self.fold(sequence, envelope)?;
        self.sequence = sequence;
        Ok(())
    }

    /// Marks a log record that carries no event for this state (e.g. a record of another
    /// node's aggregates) as covered.
    pub fn skip(&mut self, sequence: u64) -> Result<(), ApplyError> {
        if sequence != self.sequence + 1 {
            return Err(ApplyError::OutOfOrder {
                state: self.sequence,
                got: sequence,
            });
        }
        self.sequence = sequence;
        Ok(())
    }

    fn fold(&mut self, sequence: u64, envelope: &EventEnvelope) -> Result<(), ApplyError> {
        let id = envelope.aggregate_id.clone();
        let time = envelope.time;
        let version = envelope.aggregate_version;
        let unknown = |kind: &'static str| ApplyError::UnknownAggregate {
            event_id: envelope.event_id.clone(),
            kind,
            id: id.clone(),
        };
        let Some(event) = envelope.event.as_ref() else {
            return Err(ApplyError::UnknownEvent(envelope.event_id.clone()));
        };
        match event {
            Event::ApiCreated(e) => {
                let definition = e.definition.clone().unwrap_or_default();
                if definition.is_default_version {
                    self.clear_default_version(&definition.context, &id);
                }
                self.apis.insert(
                    id.clone(),
                    Api {
                        id,
                        definition: Some(definition),
                        lifecycle: lifecycle::State::Created as i32,
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                        updated_at: time,
                        created_by: envelope.actor.clone(),
                        source_api_id: e.source_api_id.clone(),
                    },
                );
            }
            Event::ApiUpdated(e) => {
                let definition = e.definition.clone().unwrap_or_default();
                if definition.is_default_version {
                    self.clear_default_version(&definition.context, &id);
                }
                let api = self.apis.get_mut(&id).ok_or_else(|| unknown("api"))?;
                api.definition = Some(definition);
                touch_api(api, version, sequence, time);
            }
            Event::ApiLifecycleChanged(e) => {
                let api = self.apis.get_mut(&id).ok_or_else(|| unknown("api"))?;
                api.lifecycle = e.to;
                touch_api(api, version, sequence, time);
            }
            Event::ApiDeleted(_) => {
                self.apis.remove(&id).ok_or_else(|| unknown("api"))?;
                self.subscriptions.retain(|_, s| s.api_id != id);
            }
            Event::PolicyCreated(e) => {
                let mut policy = e.policy.clone().unwrap_or_default();
                policy.built_in = false;
                policy.aggregate_version = version;
                policy.last_sequence = sequence;
                self.policies
                    .insert(policy::policy_id(policy.level(), &policy.name), policy);
            }
            Event::ApplicationCreated(e) => {
                self.applications.insert(
                    id.clone(),
                    Application {
                        id,
                        name: e.name.clone(),
                        owner: e.owner.clone(),
                        throttling_tier: e.throttling_tier.clone(),
                        description: e.description.clone(),
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                    },
                );
            }
            Event::ApplicationDeleted(_) => {
                self.applications
                    .remove(&id)
                    .ok_or_else(|| unknown("application"))?;
                self.subscriptions.retain(|_, s| s.application_id != id);
            }
            Event::SubscriptionCreated(e) => {
                self.subscriptions.insert(
                    id.clone(),
                    Subscription {
                        id,
                        application_id: e.application_id.clone(),
                        api_id: e.api_id.clone(),
                        tier: e.tier.clone(),
                        state: subscription_status::State::Active as i32,
                        aggregate_version: version,
                        last_sequence: sequence,
                        created_at: time,
                    },
                );
            }
            Event::SubscriptionStateChanged(e) => {
                let s = self
                    .subscriptions
                    .get_mut(&id)
                    .ok_or_else(|| unknown("subscription"))?;
                s.state = e.to;
                s.aggregate_version = version;
                s.last_sequence = sequence;
            }
            Event::SubscriptionDeleted(_) => {
                self.subscriptions
                    .remove(&id)
                    .ok_or_else(|| unknown("subscription"))?;
            }
        }
        Ok(())
    }

    /// One default version per context: the API `except` takes the flag from the others.
    fn clear_default_version(&mut self, context: &str, except: &str) {
        for api in self.apis.values_mut() {
            if api.id != except
                && let Some(d) = api.definition.as_mut()
                && d.context == context
            {
                d.is_default_version = false;
            }
        }
    }
}

fn touch_api(api: &mut Api, version: u64, sequence: u64, time: Option<Timestamp>) {
    api.aggregate_version = version;
    api.last_sequence = sequence;
    api.updated_at = time;
}
