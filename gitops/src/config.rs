//! The declarative configuration file: APIs, throttling policies, applications, their
//! subscriptions and scope grants — never keys or secrets — in one YAML document that
//! moves between deployments.
//!
//! ```yaml
//! format: gatehouse/v1
//! policies:
//!   - {name: Platinum, level: SUBSCRIPTION, requestCount: 10000, unitSeconds: 60}
//! apis:
//!   - context: /client
//!     version: 1.0.0
//!     name: ClientServiceAPI
//!     lifecycle: PUBLISHED
//!     resources:
//!       - {method: GET, path: /users, scopes: [read:users]}
//!     endpoints:
//!       production: {urls: [http://client-service:8000]}
//!     subscriptionTiers: [Gold]
//! applications:
//!   - owner: admin
//!     name: MyPythonApp
//!     subscriptions:
//!       - {context: /client, version: 1.0.0, tier: Gold, grantedScopes: [read:users]}
//! ```
//!
//! Objects are named by natural keys — an API by context and version, an application
//! by owner and name, a policy by level and name, a subscription by its application and
//! the API's context and version — never by ids, so a file exported from one
//! deployment applies to another. The JSON Schema of the format is
//! `gitops/gatehouse.schema.json`.
//!
//! Every error names the file, the line and the field ([`ConfigError`]); unknown
//! fields are errors (a typo must not be silently ignored).

use gatehouse_domain::State;
use gatehouse_domain::content::canonical_definition;
use gatehouse_proto::events::{
    ApiDefinition, CorsPolicy, EndpointGroup, Endpoints, Resource, ResponseCache, endpoint_group,
    lifecycle, subscription_status, throttle_policy::Level,
};
use serde::{Deserialize, Serialize};

use crate::locate::locate;

/// The value of `format` this version reads and writes.
pub const FORMAT: &str = "gatehouse/v1";

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// Always [`FORMAT`].
    pub format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicySpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<ApiSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<ApplicationSpec>,
}

impl Default for ConfigFile {
    fn default() -> Self {
        ConfigFile {
            format: FORMAT.into(),
            policies: Vec::new(),
            apis: Vec::new(),
            applications: Vec::new(),
        }
    }
}

/// A throttling policy's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LevelName {
    Subscription,
    Application,
    Api,
}

impl LevelName {
    pub fn level(self) -> Level {
        match self {
            LevelName::Subscription => Level::Subscription,
            LevelName::Application => Level::Application,
            LevelName::Api => Level::Api,
        }
    }

    fn of(level: Level) -> Option<LevelName> {
        match level {
            Level::Subscription => Some(LevelName::Subscription),
            Level::Application => Some(LevelName::Application),
            Level::Api => Some(LevelName::Api),
            Level::Unspecified => None,
        }
    }
}

/// A custom throttling policy: `requestCount` calls per `unitSeconds`, or unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    pub name: String,
    pub level: LevelName,
    #[serde(default, skip_serializing_if = "is_default")]
    pub unlimited: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub request_count: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub unit_seconds: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An API lifecycle state, as WSO2 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleName {
    #[default]
    Created,
    Prototyped,
    Published,
    Blocked,
    Deprecated,
    Retired,
}

impl LifecycleName {
    pub fn state(self) -> lifecycle::State {
        use LifecycleName::*;
        match self {
            Created => lifecycle::State::Created,
            Prototyped => lifecycle::State::Prototyped,
            Published => lifecycle::State::Published,
            Blocked => lifecycle::State::Blocked,
            Deprecated => lifecycle::State::Deprecated,
            Retired => lifecycle::State::Retired,
        }
    }

    pub fn of(state: lifecycle::State) -> LifecycleName {
        use LifecycleName::*;
        match state {
            lifecycle::State::Prototyped => Prototyped,
            lifecycle::State::Published => Published,
            lifecycle::State::Blocked => Blocked,
            lifecycle::State::Deprecated => Deprecated,
            lifecycle::State::Retired => Retired,
            lifecycle::State::Created | lifecycle::State::Unspecified => Created,
        }
    }
}

/// An API version: its definition and lifecycle state. The fields are those of the
/// admin API's `ApiDefinition`, in the same camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiSpec {
    pub context: String,
    pub version: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub lifecycle: LifecycleName,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub is_default_version: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointsSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_tiers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_throttling_tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_request_body_bytes: u32,
}

/// One resource: a method on a path template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceSpec {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth_disabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub throttling_tier: String,
}

/// How calls are spread over a group's URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModeName {
    #[default]
    LoadBalance,
    Failover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointGroupSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: ModeName,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<EndpointGroupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<EndpointGroupSpec>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_age_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ttl_seconds: u32,
}

/// An application and its subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplicationSpec {
    pub owner: String,
    pub name: String,
    /// An APPLICATION-level tier; empty: Unlimited.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub throttling_tier: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// A subscription's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStateName {
    #[default]
    Active,
    Blocked,
    ProdOnlyBlocked,
}

impl SubscriptionStateName {
    pub fn state(self) -> subscription_status::State {
        match self {
            SubscriptionStateName::Active => subscription_status::State::Active,
            SubscriptionStateName::Blocked => subscription_status::State::Blocked,
            SubscriptionStateName::ProdOnlyBlocked => subscription_status::State::ProdOnlyBlocked,
        }
    }

    pub fn of(state: subscription_status::State) -> SubscriptionStateName {
        match state {
            subscription_status::State::Blocked => SubscriptionStateName::Blocked,
            subscription_status::State::ProdOnlyBlocked => SubscriptionStateName::ProdOnlyBlocked,
            _ => SubscriptionStateName::Active,
        }
    }
}

/// The application's subscription to the API of `context` and `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionSpec {
    pub context: String,
    pub version: String,
    pub tier: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub state: SubscriptionStateName,
    /// Scopes of the API's resources granted to the application on this API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,
}

/// A file that cannot be read or applied: where (file, line, column, field) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConfigError {
    pub file: String,
    /// From 1; 0 when the error is about no place in the file.
    pub line: usize,
    pub column: usize,
    /// The field's path, e.g. `apis[2].resources[0].path`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn describe(&self) -> String {
        let mut out = self.file.clone();
        if self.line > 0 {
            out.push_str(&format!(":{}:{}", self.line, self.column));
        }
        out.push_str(": ");
        if !self.field.is_empty() {
            out.push_str(&self.field);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }

    /// An error at `field` of the file `text`, located in it.
    pub fn at(file: &str, text: &str, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = locate(text, field).unwrap_or((0, 0));
        ConfigError {
            file: file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a configuration file: YAML (or JSON), unknown fields refused, every error
/// naming `file`, the line and the field.
pub fn parse(file: &str, text: &str) -> Result<ConfigFile, ConfigError> {
    let parsed: ConfigFile = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        // serde_yaml's message is `<path>: <what> at line L column C`.
        let full = e.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(m, _)| m);
        let (field, message) = match message.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
            _ => (String::new(), message.to_string()),
        };
        ConfigError {
            file: file.to_string(),
            line,
            column,
            field,
            message,
        }
    })?;
    if parsed.format != FORMAT {
        return Err(ConfigError::at(
            file,
            text,
            "format",
            format!("must be {FORMAT:?} (the format this Gatehouse reads)"),
        ));
    }
    Ok(parsed)
}

/// The file as YAML.
pub fn to_yaml(config: &ConfigFile) -> String {
    serde_yaml::to_string(config).expect("a configuration serialises")
}

/// The configuration `state` holds, as a file: custom policies by level and name, APIs
/// by context and version, applications by owner and name with their subscriptions by
/// context and version. Built-in policies, keys and secrets are not configuration and
/// are never written.
pub fn export(state: &State) -> ConfigFile {
    let mut policies: Vec<PolicySpec> = state
        .policies()
        .filter(|p| !p.built_in)
        .filter_map(|p| {
            Some(PolicySpec {
                name: p.name.clone(),
                level: LevelName::of(p.level())?,
                unlimited: p.unlimited,
                request_count: if p.unlimited { 0 } else { p.request_count },
                unit_seconds: if p.unlimited { 0 } else { p.unit_seconds },
                description: p.description.clone(),
            })
        })
        .collect();
    policies.sort_by(|a, b| (a.level, &a.name).cmp(&(b.level, &b.name)));

    let mut apis: Vec<ApiSpec> = state
        .apis()
        .filter_map(|api| {
            let definition = api.definition.as_ref()?;
            Some(api_spec(definition, api.lifecycle()))
        })
        .collect();
    apis.sort_by(|a, b| (&a.context, &a.version).cmp(&(&b.context, &b.version)));

    let mut applications: Vec<ApplicationSpec> = state
        .applications()
        .map(|app| {
            let mut subscriptions: Vec<SubscriptionSpec> = state
                .subscriptions_of_application(&app.id)
                .filter_map(|s| {
                    let d = state.api(&s.api_id)?.definition.as_ref()?;
                    Some(SubscriptionSpec {
                        context: d.context.clone(),
                        version: d.version.clone(),
                        tier: s.tier.clone(),
                        state: SubscriptionStateName::of(s.state()),
                        granted_scopes: s.granted_scopes.clone(),
                    })
                })
                .collect();
            subscriptions.sort_by(|a, b| (&a.context, &a.version).cmp(&(&b.context, &b.version)));
            ApplicationSpec {
                owner: app.owner.clone(),
                name: app.name.clone(),
                throttling_tier: app.throttling_tier.clone(),
                description: app.description.clone(),
                subscriptions,
            }
        })
        .collect();
    applications.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));

    ConfigFile {
        format: FORMAT.into(),
        policies,
        apis,
        applications,
    }
}

fn group_spec(group: &Option<EndpointGroup>) -> Option<EndpointGroupSpec> {
    group.as_ref().map(|g| EndpointGroupSpec {
        mode: if g.mode() == endpoint_group::Mode::Failover {
            ModeName::Failover
        } else {
            ModeName::LoadBalance
        },
        urls: g.urls.clone(),
    })
}

fn group_of(spec: &Option<EndpointGroupSpec>) -> Option<EndpointGroup> {
    spec.as_ref().map(|g| EndpointGroup {
        mode: match g.mode {
            ModeName::LoadBalance => endpoint_group::Mode::LoadBalance,
            ModeName::Failover => endpoint_group::Mode::Failover,
        } as i32,
        urls: g.urls.clone(),
    })
}

/// The file's view of an API.
pub fn api_spec(definition: &ApiDefinition, lifecycle: lifecycle::State) -> ApiSpec {
    let d = canonical_definition(definition);
    ApiSpec {
        context: d.context,
        version: d.version,
        name: d.name,
        lifecycle: LifecycleName::of(lifecycle),
        description: d.description,
        is_default_version: d.is_default_version,
        resources: d
            .resources
            .into_iter()
            .map(|r| ResourceSpec {
                method: r.method,
                path: r.path,
                auth_disabled: r.auth_disabled,
                scopes: r.scopes,
                throttling_tier: r.throttling_tier,
            })
            .collect(),
        endpoints: d.endpoints.map(|e| EndpointsSpec {
            production: group_spec(&e.production),
            sandbox: group_spec(&e.sandbox),
            timeout_ms: e.timeout_ms,
        }),
        subscription_tiers: d.subscription_tiers,
        api_throttling_tier: d.api_throttling_tier,
        cors: d.cors.map(|c| CorsSpec {
            enabled: c.enabled,
            allow_origins: c.allow_origins,
            allow_methods: c.allow_methods,
            allow_headers: c.allow_headers,
            allow_credentials: c.allow_credentials,
            max_age_seconds: c.max_age_seconds,
        }),
        cache: d.cache.map(|c| CacheSpec {
            enabled: c.enabled,
            ttl_seconds: c.ttl_seconds,
        }),
        tags: d.tags,
        max_request_body_bytes: d.max_request_body_bytes,
    }
}

impl ApiSpec {
    /// The admin API's definition of this API (not yet normalised by the domain).
    pub fn definition(&self) -> ApiDefinition {
        ApiDefinition {
            name: self.name.clone(),
            context: self.context.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            resources: self
                .resources
                .iter()
                .map(|r| Resource {
                    method: r.method.clone(),
                    path: r.path.clone(),
                    auth_disabled: r.auth_disabled,
                    scopes: r.scopes.clone(),
                    throttling_tier: r.throttling_tier.clone(),
                })
                .collect(),
            endpoints: self.endpoints.as_ref().map(|e| Endpoints {
                production: group_of(&e.production),
                sandbox: group_of(&e.sandbox),
                timeout_ms: e.timeout_ms,
            }),
            subscription_tiers: self.subscription_tiers.clone(),
            is_default_version: self.is_default_version,
            cors: self.cors.as_ref().map(|c| CorsPolicy {
                enabled: c.enabled,
                allow_origins: c.allow_origins.clone(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                allow_credentials: c.allow_credentials,
                max_age_seconds: c.max_age_seconds,
            }),
            cache: self.cache.as_ref().map(|c| ResponseCache {
                enabled: c.enabled,
                ttl_seconds: c.ttl_seconds,
            }),
            api_throttling_tier: self.api_throttling_tier.clone(),
            tags: self.tags.clone(),
            max_request_body_bytes: self.max_request_body_bytes,
        }
    }
}

/// How many objects a file holds (policies, APIs, applications, subscriptions): what
/// control's `--max-config-objects` bounds.
pub fn object_count(config: &ConfigFile) -> usize {
    config.policies.len()
        + config.apis.len()
        + config
            .applications
            .iter()
            .map(|a| 1 + a.subscriptions.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_bad_values_name_file_line_and_field() {
        let text = "format: gatehouse/v1\napis:\n  - context: /a\n    version: '1'\n    name: A\n    resources:\n      - methd: GET\n";
        let e = parse("g.yaml", text).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("g.yaml", 7), "{e}");
        assert_eq!(e.field, "apis[0].resources[0]", "{e}");
        assert!(e.message.contains("unknown field `methd`"), "{e}");
        assert!(e.to_string().starts_with("g.yaml:7:"), "{e}");

        let e = parse("g.yaml", "format: gatehouse/v1\napis:\n  - context: /a\n    version: 1\n    name: A\n    lifecycle: LIVE\n").unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert_eq!(e.field, "apis[0].lifecycle", "{e}");

        let e = parse("g.yaml", "format: other\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "format"), "{e}");

        let e = parse("g.yaml", "format: gatehouse/v1\napis: [\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }
}
