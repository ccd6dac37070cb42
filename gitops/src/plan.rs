//! A configuration file against a state: what to do, and what it changes.
//!
//! [`plan`] works out the commands that make the state match the file, object by
//! object in dependency order — policies, then APIs (definition, then lifecycle), then
//! applications, then their subscriptions (tier, state, scope grant), then, with
//! `--prune`, the deletions — and runs every one of them against a scratch copy of the
//! state (an O(1) clone: the state's maps are persistent) with the domain's own
//! handlers and fold. A command the rules refuse makes the whole plan fail, naming the
//! file, line and field, before anything is written: validation is all or nothing.
//!
//! The changes reported ([`Change`]) are the difference between the export of the state
//! read and the export of the scratch state once every step has run, so they show what
//! the steps really do, side effects included (a version taking the default flag from
//! another), object by object and field by field.
//!
//! Each [`Step`] carries the content hash ([`State::content_hash`]) the configuration
//! must have just before it; control runs it as a [`Command::Guarded`], so a change made
//! by anyone else since the plan was read makes the step fail instead of being
//! overwritten.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gatehouse_domain::api::normalize_definition;
use gatehouse_domain::content::canonical_definition;
use gatehouse_domain::lifecycle as lc;
use gatehouse_domain::{Command, CustomPolicy, DomainError, EventMeta, State, handle};
use gatehouse_proto::events::{lifecycle, subscription_status};
use serde_json::Value;

use crate::config::{self, ConfigError, ConfigFile, SubscriptionStateName};

/// What kind of change an object undergoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One field of an object that changes: its path in the object (`resources[1].scopes`)
/// and its value before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// One object that changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub action: Action,
    /// `policy`, `api`, `application` or `subscription`.
    pub kind: &'static str,
    /// The natural key: `SUBSCRIPTION Platinum`, `/client 1.0.0`, `admin/MyPythonApp`,
    /// `admin/MyPythonApp -> /client 1.0.0`.
    pub key: String,
    pub fields: Vec<FieldChange>,
}

/// One command of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub command: Command,
    /// The object it acts on, e.g. `api /client 1.0.0`.
    pub object: String,
    /// The configuration's content hash just before this step.
    pub expected_content_hash: u64,
}

impl Step {
    /// The step's command, guarded on the content it was planned against.
    pub fn guarded(&self) -> Command {
        Command::Guarded {
            expected_content_hash: self.expected_content_hash,
            command: Box::new(self.command.clone()),
        }
    }
}

/// What applying a file does to a state.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The content hash of the state the plan read.
    pub read_content_hash: u64,
    /// The content hash once every step has run.
    pub result_content_hash: u64,
    pub steps: Vec<Step>,
    pub changes: Vec<Change>,
    /// Objects the file leaves alone: in Gatehouse but not in the file (without
    /// `--prune`), or that cannot be deleted (policies).
    pub notes: Vec<String>,
}

/// Options of [`plan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Delete what the file does not list (applications, subscriptions of listed
    /// applications, APIs).
    pub prune: bool,
}

/// The plan that makes `state` match `config` (read from the file `file`, whose text
/// `text` locates errors), or the first error, naming file, line and field. `new_id`
/// gives the ids of new APIs, applications and subscriptions.
pub fn plan(
    state: &State,
    file: &str,
    text: &str,
    config: &ConfigFile,
    options: PlanOptions,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Plan, ConfigError> {
    let mut planner = Planner {
        scratch: state.clone(),
        file,
        text,
        steps: Vec::new(),
        new_id,
    };
    let mut notes = Vec::new();
    planner.unique(config)?;
    planner.policies(config)?;
    let deferred = planner.apis(config)?;
    planner.applications(config)?;
    for (origin, object, api_id, target) in deferred {
        planner.lifecycle(&origin, &object, &api_id, target)?;
    }
    planner.leftovers(state, config, options, &mut notes)?;
    let changes = changes(&config::export(state), &config::export(&planner.scratch));
    Ok(Plan {
        read_content_hash: state.content_hash(),
        result_content_hash: planner.scratch.content_hash(),
        steps: planner.steps,
        changes,
        notes,
    })
}

/// A lifecycle move left until the API's subscriptions exist.
type Deferred = (String, String, String, lifecycle::State);

struct Planner<'a> {
    scratch: State,
    file: &'a str,
    text: &'a str,
    steps: Vec<Step>,
    new_id: &'a mut dyn FnMut() -> String,
}

/// `resources[0].throttling_tier` → `resources[0].throttlingTier`.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl Planner<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, field, message)
    }

    /// Runs `command` on the scratch state and records it as a step (unless it decides
    /// nothing); a refusal is an error at `origin` (the object's path in the file), or
    /// at the field the domain names, under `origin`, renamed by `rename`.
    fn step(
        &mut self,
        command: Command,
        object: &str,
        origin: &str,
        rename: &[(&str, &str)],
    ) -> Result<(), ConfigError> {
        let expected_content_hash = self.scratch.content_hash();
        match simulate(&mut self.scratch, command.clone()) {
            Ok(0) => Ok(()),
            Ok(_) => {
                self.steps.push(Step {
                    command,
                    object: object.to_string(),
                    expected_content_hash,
                });
                Ok(())
            }
            Err(DomainError::InvalidArgument { field, rule }) if !origin.is_empty() => {
                let mut field = field
                    .strip_prefix("definition.")
                    .unwrap_or(&field)
                    .to_string();
                for (from, to) in rename {
                    if let Some(rest) = field.strip_prefix(from) {
                        field = format!("{to}{rest}");
                    }
                }
                let at = format!("{origin}.{}", camel_case(&field));
                Err(self.error(&at, format!("{rule} ({object})")))
            }
            Err(e) => Err(self.error(origin, format!("{object}: {e}"))),
        }
    }

    /// Natural keys appear once each in the file.
    fn unique(&self, config: &ConfigFile) -> Result<(), ConfigError> {
        let policies = twice(&config.policies, |p| (p.level, p.name.clone()));
        if let Some(i) = policies {
            let p = &config.policies[i];
            let message = format!("{:?} policy {} is listed twice", p.level, p.name);
            return Err(self.error(&format!("policies[{i}]"), message));
        }
        if let Some(i) = twice(&config.apis, |a| (a.context.clone(), a.version.clone())) {
            let a = &config.apis[i];
            let message = format!("API {} {} is listed twice", a.context, a.version);
            return Err(self.error(&format!("apis[{i}]"), message));
        }
        let apps = &config.applications;
        if let Some(i) = twice(apps, |a| (a.owner.clone(), a.name.to_lowercase())) {
            let message = format!(
                "application {}/{} is listed twice",
                apps[i].owner, apps[i].name
            );
            return Err(self.error(&format!("applications[{i}]"), message));
        }
        for (i, a) in apps.iter().enumerate() {
            let subs = &a.subscriptions;
            if let Some(j) = twice(subs, |s| (s.context.clone(), s.version.clone())) {
                let (context, version) = (&subs[j].context, &subs[j].version);
                let message = format!("the subscription to {context} {version} is listed twice");
                return Err(self.error(&format!("applications[{i}].subscriptions[{j}]"), message));
            }
        }
        Ok(())
    }

    fn policies(&mut self, config: &ConfigFile) -> Result<(), ConfigError> {
        for (i, p) in config.policies.iter().enumerate() {
            let origin = format!("policies[{i}]");
            let object = format!("policy {:?} {}", p.level, p.name);
            let custom = CustomPolicy {
                name: p.name.clone(),
                level: p.level.level(),
                request_count: p.request_count,
                unit_seconds: p.unit_seconds,
                unlimited: p.unlimited,
                description: p.description.clone(),
            };
            let command = match self.scratch.policy(p.level.level(), &p.name) {
                None => Command::CreatePolicy(custom),
                Some(_) => Command::UpdatePolicy(custom),
            };
            self.step(command, &object, &origin, &[])?;
        }
        Ok(())
    }

    /// APIs: definitions, then lifecycle moves; the part of a move past a state that
    /// accepts subscriptions waits (returned) while the file subscribes to the API.
    fn apis(&mut self, config: &ConfigFile) -> Result<Vec<Deferred>, ConfigError> {
        let subscribed: BTreeSet<(&str, &str)> = config
            .applications
            .iter()
            .flat_map(|a| &a.subscriptions)
            .map(|s| (s.context.as_str(), s.version.as_str()))
            .collect();
        let mut deferred = Vec::new();
        for (i, spec) in config.apis.iter().enumerate() {
            let origin = format!("apis[{i}]");
            let object = format!("api {} {}", spec.context, spec.version);
            let desired = spec.definition();
            let existing = self
                .scratch
                .api_by_context_version(&spec.context, &spec.version)
                .cloned();
            let api_id = match existing {
                None => {
                    let api_id = (self.new_id)();
                    let command = Command::CreateApi {
                        api_id: api_id.clone(),
                        definition: desired,
                    };
                    self.step(command, &object, &origin, &[])?;
                    api_id
                }
                Some(api) => {
                    let normalized = normalize_definition(&self.scratch, desired.clone())
                        .map(|d| canonical_definition(&d));
                    let current = canonical_definition(&api.definition.clone().unwrap_or_default());
                    if normalized.as_ref().ok() != Some(&current) {
                        let command = Command::UpdateApi {
                            api_id: api.id.clone(),
                            definition: desired,
                            expected_version: Some(api.aggregate_version),
                        };
                        self.step(command, &object, &origin, &[])?;
                    }
                    api.id
                }
            };
            let target = spec.lifecycle.state();
            let waits = subscribed.contains(&(spec.context.as_str(), spec.version.as_str()))
                && !lc::accepts_subscriptions(target);
            let lifecycle_at = format!("{origin}.lifecycle");
            let now = self.scratch.api(&api_id).map(|a| a.lifecycle());
            let Some(now) = now else { continue };
            let path = transitions(now, target).ok_or_else(|| {
                self.error(
                    &lifecycle_at,
                    format!(
                        "{object} cannot go from {} to {} (WSO2's lifecycle)",
                        lc::name(now),
                        lc::name(target)
                    ),
                )
            })?;
            let split = if waits {
                path.iter()
                    .position(|s| lc::accepts_subscriptions(*s))
                    .map_or(0, |p| p + 1)
            } else {
                path.len()
            };
            for state in &path[..split] {
                self.lifecycle(&lifecycle_at, &object, &api_id, *state)?;
            }
            if split < path.len() {
                deferred.push((lifecycle_at, object.clone(), api_id.clone(), target));
            }
        }
        Ok(deferred)
    }

    /// Moves the API to `target` along WSO2's transitions.
    fn lifecycle(
        &mut self,
        origin: &str,
        object: &str,
        api_id: &str,
        target: lifecycle::State,
    ) -> Result<(), ConfigError> {
        let now = self
            .scratch
            .api(api_id)
            .map(|a| a.lifecycle())
            .unwrap_or(target);
        let path = transitions(now, target).unwrap_or_default();
        for state in path {
            let command = Command::ChangeLifecycle {
                api_id: api_id.to_string(),
                target: state,
                expected_version: None,
            };
            self.step(command, object, origin, &[])?;
        }
        Ok(())
    }

    fn applications(&mut self, config: &ConfigFile) -> Result<(), ConfigError> {
        for (i, spec) in config.applications.iter().enumerate() {
            let origin = format!("applications[{i}]");
            let object = format!("application {}/{}", spec.owner, spec.name);
            let existing = self
                .scratch
                .applications_of_owner(&spec.owner)
                .find(|a| a.name == spec.name)
                .map(|a| a.id.clone());
            let application_id = match existing {
                None => {
                    let id = (self.new_id)();
                    let command = Command::CreateApplication {
                        application_id: id.clone(),
                        name: spec.name.clone(),
                        owner: spec.owner.clone(),
                        throttling_tier: spec.throttling_tier.clone(),
                        description: spec.description.clone(),
                    };
                    self.step(command, &object, &origin, &[])?;
                    id
                }
                Some(id) => {
                    let command = Command::UpdateApplication {
                        application_id: id.clone(),
                        throttling_tier: spec.throttling_tier.clone(),
                        description: spec.description.clone(),
                    };
                    self.step(command, &object, &origin, &[])?;
                    id
                }
            };
            for (j, sub) in spec.subscriptions.iter().enumerate() {
                let origin = format!("{origin}.subscriptions[{j}]");
                let object = format!(
                    "subscription {}/{} -> {} {}",
                    spec.owner, spec.name, sub.context, sub.version
                );
                self.subscription(&application_id, sub, &origin, &object)?;
            }
        }
        Ok(())
    }

    fn subscription(
        &mut self,
        application_id: &str,
        sub: &config::SubscriptionSpec,
        origin: &str,
        object: &str,
    ) -> Result<(), ConfigError> {
        let Some(api_id) = self
            .scratch
            .api_by_context_version(&sub.context, &sub.version)
            .map(|a| a.id.clone())
        else {
            return Err(self.error(
                origin,
                format!(
                    "{object}: there is no API {} {} in the file or in Gatehouse",
                    sub.context, sub.version
                ),
            ));
        };
        let existing = self
            .scratch
            .subscription_of(application_id, &api_id)
            .cloned();
        let subscription_id = match existing {
            Some(s) if s.tier == sub.tier => s.id,
            other => {
                if let Some(s) = other {
                    // No command changes a tier: the subscription is made again.
                    let command = Command::Unsubscribe {
                        subscription_id: s.id,
                    };
                    self.step(command, object, origin, &[])?;
                }
                let id = (self.new_id)();
                let command = Command::Subscribe {
                    subscription_id: id.clone(),
                    application_id: application_id.to_string(),
                    api_id,
                    tier: sub.tier.clone(),
                };
                self.step(command, object, origin, &[])?;
                id
            }
        };
        let now = self
            .scratch
            .subscription(&subscription_id)
            .map(|s| s.state())
            .unwrap_or(subscription_status::State::Active);
        if SubscriptionStateName::of(now) != sub.state {
            let command = match sub.state {
                SubscriptionStateName::Active => Command::UnblockSubscription {
                    subscription_id: subscription_id.clone(),
                },
                blocked => Command::BlockSubscription {
                    subscription_id: subscription_id.clone(),
                    production_only: blocked == SubscriptionStateName::ProdOnlyBlocked,
                },
            };
            self.step(command, object, &format!("{origin}.state"), &[])?;
        }
        let command = Command::GrantSubscriptionScopes {
            subscription_id,
            scopes: sub.granted_scopes.clone(),
        };
        self.step(command, object, origin, &[("scopes", "granted_scopes")])
    }

    /// What the state has and the file does not: deleted with `prune`, else noted.
    fn leftovers(
        &mut self,
        read: &State,
        config: &ConfigFile,
        options: PlanOptions,
        notes: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let listed_apis: BTreeSet<(&str, &str)> = config
            .apis
            .iter()
            .map(|a| (a.context.as_str(), a.version.as_str()))
            .collect();
        let listed_apps: BTreeMap<(&str, &str), &config::ApplicationSpec> = config
            .applications
            .iter()
            .map(|a| ((a.owner.as_str(), a.name.as_str()), a))
            .collect();
        let keep = if options.prune {
            "deleted (--prune)"
        } else {
            "kept; --prune deletes it"
        };
        let mut unsubscribe = Vec::new();
        let mut delete_apps = Vec::new();
        for app in self.scratch.applications() {
            let object = format!("application {}/{}", app.owner, app.name);
            match listed_apps.get(&(app.owner.as_str(), app.name.as_str())) {
                None => {
                    notes.push(format!("{object} is not in the file: {keep}"));
                    delete_apps.push((app.id.clone(), object));
                }
                Some(spec) => {
                    for s in self.scratch.subscriptions_of_application(&app.id) {
                        let Some(d) = self
                            .scratch
                            .api(&s.api_id)
                            .and_then(|a| a.definition.as_ref())
                        else {
                            continue;
                        };
                        let listed = spec
                            .subscriptions
                            .iter()
                            .any(|x| x.context == d.context && x.version == d.version);
                        if !listed {
                            let object = format!(
                                "subscription {}/{} -> {} {}",
                                app.owner, app.name, d.context, d.version
                            );
                            notes.push(format!("{object} is not in the file: {keep}"));
                            unsubscribe.push((s.id.clone(), object));
                        }
                    }
                }
            }
        }
        let delete_apis: Vec<(String, String)> = self
            .scratch
            .apis()
            .filter_map(|a| {
                let d = a.definition.as_ref()?;
                (!listed_apis.contains(&(d.context.as_str(), d.version.as_str())))
                    .then(|| (a.id.clone(), format!("api {} {}", d.context, d.version)))
            })
            .collect();
        for (_, object) in &delete_apis {
            notes.push(format!("{object} is not in the file: {keep}"));
        }
        let listed_policies: BTreeSet<(config::LevelName, &str)> = config
            .policies
            .iter()
            .map(|p| (p.level, p.name.as_str()))
            .collect();
        for p in read.policies().filter(|p| !p.built_in) {
            let level = match p.level() {
                gatehouse_proto::events::throttle_policy::Level::Subscription => {
                    config::LevelName::Subscription
                }
                gatehouse_proto::events::throttle_policy::Level::Application => {
                    config::LevelName::Application
                }
                gatehouse_proto::events::throttle_policy::Level::Api => config::LevelName::Api,
                gatehouse_proto::events::throttle_policy::Level::Unspecified => continue,
            };
            if !listed_policies.contains(&(level, p.name.as_str())) {
                notes.push(format!(
                    "policy {level:?} {} is not in the file: kept (policies are never deleted)",
                    p.name
                ));
            }
        }
        if !options.prune {
            return Ok(());
        }
        for (subscription_id, object) in unsubscribe {
            self.step(Command::Unsubscribe { subscription_id }, &object, "", &[])?;
        }
        for (application_id, object) in delete_apps {
            self.step(
                Command::DeleteApplication { application_id },
                &object,
                "",
                &[],
            )?;
        }
        for (api_id, object) in delete_apis {
            self.step(Command::DeleteApi { api_id }, &object, "", &[])?;
        }
        Ok(())
    }
}

/// The index of the first item whose key an earlier one has.
fn twice<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Option<usize> {
    let mut seen = BTreeSet::new();
    items.iter().position(|item| !seen.insert(key(item)))
}

/// Decides `command` on `state` and folds its events, as the log would; how many.
pub fn simulate(state: &mut State, command: Command) -> Result<usize, DomainError> {
    let events = handle(state, command)?;
    let count = events.len();
    for event in events {
        let sequence = state.sequence() + 1;
        let envelope = event.envelope(EventMeta {
            event_id: format!("plan-{sequence}"),
            actor: "plan".into(),
            ..Default::default()
        });
        state.apply(sequence, &envelope).map_err(|e| {
            DomainError::FailedPrecondition(format!("the fold refused a planned event: {e}"))
        })?;
    }
    Ok(count)
}

/// The shortest run of WSO2 lifecycle transitions from `from` to `to` (empty when they
/// are equal), if there is one.
pub fn transitions(from: lifecycle::State, to: lifecycle::State) -> Option<Vec<lifecycle::State>> {
    if from == to {
        return Some(Vec::new());
    }
    let mut previous: BTreeMap<i32, lifecycle::State> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(state) = queue.pop_front() {
        for next in lc::allowed_transitions(state) {
            if *next == from || previous.contains_key(&(*next as i32)) {
                continue;
            }
            previous.insert(*next as i32, state);
            if *next == to {
                let mut path = vec![to];
                let mut at = to;
                while let Some(p) = previous.get(&(at as i32)) {
                    if *p == from {
                        break;
                    }
                    path.push(*p);
                    at = *p;
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(*next);
        }
    }
    None
}

/// The objects of a file by kind and natural key, as JSON (subscriptions apart from
/// their applications).
fn objects(config: &ConfigFile) -> BTreeMap<(u8, &'static str, String), Value> {
    let mut out = BTreeMap::new();
    for p in &config.policies {
        out.insert((0, "policy", format!("{:?} {}", p.level, p.name)), json(p));
    }
    for a in &config.apis {
        out.insert((1, "api", format!("{} {}", a.context, a.version)), json(a));
    }
    for a in &config.applications {
        let mut app = a.clone();
        app.subscriptions.clear();
        out.insert(
            (2, "application", format!("{}/{}", a.owner, a.name)),
            json(&app),
        );
        for s in &a.subscriptions {
            out.insert(
                (
                    3,
                    "subscription",
                    format!("{}/{} -> {} {}", a.owner, a.name, s.context, s.version),
                ),
                json(s),
            );
        }
    }
    out
}

fn json<T: serde::Serialize>(spec: &T) -> Value {
    serde_json::to_value(spec).expect("a spec serialises")
}

/// The changes from `before` to `after`, object by object, field by field.
pub fn changes(before: &ConfigFile, after: &ConfigFile) -> Vec<Change> {
    let before = objects(before);
    let mut after = objects(after);
    let mut out = Vec::new();
    for (key, old) in before {
        match after.remove(&key) {
            None => out.push((
                key.clone(),
                Change {
                    action: Action::Delete,
                    kind: key.1,
                    key: key.2,
                    fields: Vec::new(),
                },
            )),
            Some(new) if new != old => {
                let mut fields = Vec::new();
                diff("", Some(&old), Some(&new), &mut fields);
                out.push((
                    key.clone(),
                    Change {
                        action: Action::Update,
                        kind: key.1,
                        key: key.2,
                        fields,
                    },
                ));
            }
            Some(_) => {}
        }
    }
    for (key, new) in after {
        let mut fields = Vec::new();
        diff("", None, Some(&new), &mut fields);
        out.push((
            key.clone(),
            Change {
                action: Action::Create,
                kind: key.1,
                key: key.2,
                fields,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, c)| c).collect()
}

/// Field by field: objects by key, arrays of objects by index, anything else whole.
fn diff(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff(&join(key), a.get(key), b.get(key), out);
            }
        }
        (None, Some(Value::Object(b))) if path.is_empty() => {
            for (key, value) in b {
                diff(&join(key), None, Some(value), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b)))
            if a.iter().chain(b).all(Value::is_object) =>
        {
            for i in 0..a.len().max(b.len()) {
                diff(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            field: path.to_string(),
            before: a.cloned(),
            after: b.cloned(),
        }),
        _ => {}
    }
}

/// The changes as people read them, one object a paragraph:
///
/// ```text
/// ~ update api /client 1.0.0
///     resources[0].scopes: ["read:users"] -> ["read:users","write:users"]
/// ```
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        let sign = match change.action {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
        };
        out.push_str(&format!(
            "{sign} {} {} {}\n",
            change.action.as_str(),
            change.kind,
            change.key
        ));
        for f in &change.fields {
            let show =
                |v: &Option<Value>| v.as_ref().map_or("(none)".to_string(), |v| v.to_string());
            match change.action {
                Action::Create => out.push_str(&format!("    {}: {}\n", f.field, show(&f.after))),
                _ => out.push_str(&format!(
                    "    {}: {} -> {}\n",
                    f.field,
                    show(&f.before),
                    show(&f.after)
                )),
            }
        }
    }
    for note in &plan.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    if plan.changes.is_empty() {
        out.push_str("no change\n");
    }
    out
}
