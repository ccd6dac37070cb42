//! WSO2 apictl API projects: what `apictl export api` writes (a directory, or a zip of
//! it) — `api.yaml` and the OpenAPI definition in `Definitions/swagger.yaml` — read
//! into an API definition and a lifecycle state.
//!
//! The format assumed is apictl 4.x's (API Manager 4.x), from WSO2's documentation:
//!
//! ```yaml
//! type: api
//! version: v4.3.0
//! data:
//!   name: PizzaShackAPI
//!   context: /pizzashack
//!   version: 1.0.0
//!   lifeCycleStatus: PUBLISHED
//!   type: HTTP
//!   isDefaultVersion: false
//!   policies: [Gold, Unlimited]          # subscription tiers
//!   apiThrottlingPolicy: 10KPerMin       # optional
//!   securityScheme: [oauth2, oauth_basic_auth_api_key_mandatory]
//!   scopes:
//!     - scope: {name: read:menu, displayName: read:menu, bindings: [admin]}
//!       shared: false
//!   operations:
//!     - {target: /menu, verb: GET, authType: Application & Application User,
//!        throttlingPolicy: Unlimited, scopes: [read:menu]}
//!   endpointConfig:
//!     endpoint_type: http                # or load_balance (lists), failover
//!     production_endpoints: {url: https://backend/v1}
//!     sandbox_endpoints: {url: https://sandbox/v1}
//!   corsConfiguration: {corsConfigurationEnabled: false, accessControlAllowOrigins: ["*"]}
//!   responseCachingEnabled: false
//!   cacheTimeout: 300
//! ```
//!
//! What maps and what does not is the table in the README ("From WSO2"); everything
//! that does not is a [`Problem`] with a pointer into `api.yaml` (or the definition),
//! and nothing is imported.

use std::collections::BTreeSet;

use gatehouse_domain::validate;
use gatehouse_proto::events::{
    CorsPolicy, EndpointGroup, Endpoints, Resource, ResponseCache, endpoint_group, lifecycle,
};
use serde_json::Value;

use crate::document::{self, child};
use crate::openapi::{self, ImportOptions, ImportedApi};
use crate::{ImportError, Problem};

/// The project's `api.yaml` as named in problems.
pub const API_YAML: &str = "api.yaml";

/// An imported project: the API and the lifecycle state it had in WSO2.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedProject {
    pub api: ImportedApi,
    pub lifecycle: lifecycle::State,
}

/// Reads a project: the text of its `api.yaml`, and its OpenAPI definition (name and
/// text) if it has one.
pub fn import(
    project: &str,
    api_yaml: &str,
    definition: Option<(&str, &str)>,
    options: &ImportOptions,
) -> Result<ImportedProject, ImportError> {
    let fail = |problems: Vec<Problem>| ImportError {
        document: project.to_string(),
        problems,
    };
    let root = document::parse(API_YAML, api_yaml).map_err(|p| fail(vec![p]))?;
    let mut reader = Reader {
        problems: Vec::new(),
    };
    let mut imported = reader.read(&root, options);
    if let Some((name, text)) = definition {
        match document::parse(name, text) {
            Ok(doc) => {
                let mut problems = Vec::new();
                document::check_references(&doc, name, &mut problems);
                reader.problems.extend(
                    problems
                        .into_iter()
                        .map(|p| Problem::new(format!("{name}#{}", p.pointer), p.message)),
                );
                if imported.api.definition.resources.is_empty() {
                    // No operations in api.yaml: the definition's paths are the resources.
                    let mut with = options.clone();
                    with.context = Some(imported.api.definition.context.clone());
                    match openapi::import(name, &doc, &with) {
                        Ok(from_doc) => {
                            imported.api.resource_pointers = from_doc
                                .resource_pointers
                                .iter()
                                .map(|p| format!("{name}#{p}"))
                                .collect();
                            imported.api.definition.resources = from_doc.definition.resources;
                        }
                        Err(e) => reader.problems.extend(
                            e.problems
                                .into_iter()
                                .map(|p| Problem::new(format!("{name}#{}", p.pointer), p.message)),
                        ),
                    }
                }
            }
            Err(p) => reader.problems.push(p),
        }
    }
    if reader.problems.is_empty() {
        Ok(imported)
    } else {
        Err(fail(reader.problems))
    }
}

struct Reader {
    problems: Vec<Problem>,
}

/// A pointer into `api.yaml`.
fn at(pointer: &str) -> String {
    format!("{API_YAML}#{pointer}")
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

impl Reader {
    fn problem(&mut self, pointer: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(at(pointer), message));
    }

    fn read(&mut self, root: &Value, options: &ImportOptions) -> ImportedProject {
        let mut api = ImportedApi {
            definition: Default::default(),
            resource_pointers: Vec::new(),
            field_pointers: Default::default(),
        };
        let mut project = ImportedProject {
            api: api.clone(),
            lifecycle: lifecycle::State::Created,
        };
        match root.get("type").and_then(Value::as_str) {
            Some("api") => {}
            Some(other) => {
                self.problem(
                    "/type",
                    format!("is {other:?}: only API projects (type: api) can be imported"),
                );
                return project;
            }
            None => {}
        }
        let Some(data) = root.get("data").filter(|d| d.is_object()) else {
            self.problem(
                "/data",
                "missing: an apictl 4.x project's api.yaml has type, version and data (3.x projects, Meta-information/api.yaml, are not supported: export again with apictl 4.x)",
            );
            return project;
        };
        let d = &mut api.definition;
        d.name = text(data, "name").trim().to_string();
        if let Err(e) = validate::name("name", &d.name) {
            self.problem("/data/name", rule(e));
        }
        d.version = text(data, "version").to_string();
        if let Err(e) = validate::version("version", &d.version) {
            self.problem("/data/version", rule(e));
        }
        let (context, context_at) = match &options.context {
            Some(c) => (c.clone(), "--context".to_string()),
            None => {
                // WSO2 may keep the version in the context (`/pizzashack/1.0.0`,
                // `/pizzashack/{version}`): Gatehouse adds it itself.
                let raw = text(data, "context");
                let context = raw
                    .strip_suffix("/{version}")
                    .or_else(|| raw.strip_suffix(&format!("/{}", d.version)))
                    .unwrap_or(raw);
                (context.to_string(), at("/data/context"))
            }
        };
        if let Err(e) = validate::context("context", &context) {
            self.problems
                .push(Problem::new(context_at.clone(), rule(e)));
        }
        d.context = context;
        d.description = text(data, "description").chars().take(10_000).collect();
        d.tags = strings(data.get("tags"));
        d.is_default_version = data
            .get("isDefaultVersion")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        d.subscription_tiers = if options.subscription_tiers.is_empty() {
            strings(data.get("policies"))
        } else {
            options.subscription_tiers.clone()
        };
        d.api_throttling_tier = text(data, "apiThrottlingPolicy").to_string();
        for (field, pointer) in [
            ("definition.name", "/data/name"),
            ("definition.version", "/data/version"),
            ("definition.subscription_tiers", "/data/policies"),
            (
                "definition.api_throttling_tier",
                "/data/apiThrottlingPolicy",
            ),
            ("definition.endpoints", "/data/endpointConfig"),
            ("definition.cors", "/data/corsConfiguration"),
        ] {
            api.field_pointers.insert(field.into(), at(pointer));
        }
        api.field_pointers
            .insert("definition.context".into(), context_at);

        let kind = text(data, "type");
        if !kind.is_empty() && !kind.eq_ignore_ascii_case("HTTP") {
            self.problem(
                "/data/type",
                format!("{kind} APIs cannot be represented: Gatehouse routes HTTP (REST) APIs"),
            );
        }
        for (i, scheme) in strings(data.get("securityScheme")).iter().enumerate() {
            match scheme.as_str() {
                "oauth2" | "oauth_basic_auth_api_key_mandatory" => {}
                other => self.problem(
                    &format!("/data/securityScheme/{i}"),
                    format!(
                        "{other} cannot be represented: the gateway accepts OAuth2 bearer tokens only (no API keys, basic auth or mutual TLS)"
                    ),
                ),
            }
        }
        if let Some(tps) = data.get("maxTps").filter(|v| !v.is_null()) {
            let empty = tps
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_null));
            if !empty {
                self.problem(
                    "/data/maxTps",
                    "backend rate limits (maxTps) cannot be represented: use an API-level throttling tier",
                );
            }
        }

        let declared: BTreeSet<String> = data
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("scope").and_then(|s| s.get("name")))
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        self.operations(data, &declared, &mut api);
        api.definition.endpoints = self.endpoints(data, options);
        self.cors_and_cache(data, &mut api);

        let status = text(data, "lifeCycleStatus");
        project.lifecycle = match status.to_ascii_uppercase().as_str() {
            "" | "CREATED" => lifecycle::State::Created,
            "PROTOTYPED" => lifecycle::State::Prototyped,
            "PUBLISHED" => lifecycle::State::Published,
            "BLOCKED" => lifecycle::State::Blocked,
            "DEPRECATED" => lifecycle::State::Deprecated,
            "RETIRED" => lifecycle::State::Retired,
            other => {
                self.problem(
                    "/data/lifeCycleStatus",
                    format!("{other} is not one of WSO2's lifecycle states"),
                );
                lifecycle::State::Created
            }
        };
        if let Some(why) = options.too_many_resources(api.definition.resources.len()) {
            self.problem("/data/operations", why);
        }
        project.api = api;
        project
    }

    fn operations(&mut self, data: &Value, declared: &BTreeSet<String>, api: &mut ImportedApi) {
        let Some(operations) = data.get("operations").and_then(Value::as_array) else {
            return;
        };
        for (i, op) in operations.iter().enumerate() {
            let pointer = format!("/data/operations/{i}");
            let target = text(op, "target");
            if let Err(e) = validate::path_template("target", target) {
                self.problem(
                    &child(&pointer, "target"),
                    format!("Gatehouse cannot route this path template: {}", rule(e)),
                );
            }
            let method = match validate::http_method("verb", text(op, "verb")) {
                Ok(m) => m,
                Err(e) => {
                    self.problem(&child(&pointer, "verb"), rule(e));
                    String::new()
                }
            };
            let auth_disabled = text(op, "authType").eq_ignore_ascii_case("None");
            let scopes = strings(op.get("scopes"));
            for (j, scope) in scopes.iter().enumerate() {
                if !declared.contains(scope) {
                    self.problem(
                        &format!("{pointer}/scopes/{j}"),
                        format!("scope {scope} is not declared in /data/scopes"),
                    );
                }
            }
            if let Some(policies) = op.get("operationPolicies") {
                let used = ["request", "response", "fault"].iter().any(|flow| {
                    policies
                        .get(flow)
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                });
                if used {
                    self.problem(
                        &child(&pointer, "operationPolicies"),
                        "operation policies (mediation) cannot be represented",
                    );
                }
            }
            api.definition.resources.push(Resource {
                method,
                path: target.to_string(),
                auth_disabled,
                scopes: if auth_disabled { Vec::new() } else { scopes },
                throttling_tier: text(op, "throttlingPolicy").to_string(),
            });
            api.resource_pointers.push(at(&pointer));
        }
    }

    /// The URLs of one side (`production` or `sandbox`) of an endpoint configuration.
    fn urls(&mut self, config: &Value, side: &str) -> (Vec<String>, bool) {
        let key = format!("{side}_endpoints");
        let pointer = format!("/data/endpointConfig/{key}");
        let mut urls = Vec::new();
        let mut failover = false;
        match config.get(&key) {
            Some(Value::Array(list)) => {
                urls.extend(list.iter().map(|e| text(e, "url").to_string()))
            }
            Some(one @ Value::Object(_)) => urls.push(text(one, "url").to_string()),
            Some(Value::Null) | None => {}
            Some(_) => self.problem(&pointer, "expected {url: ...} or a list of them"),
        }
        if let Some(Value::Array(list)) = config.get(format!("{side}_failovers")) {
            failover = true;
            urls.extend(list.iter().map(|e| text(e, "url").to_string()));
        }
        urls.retain(|u| !u.is_empty());
        for url in &urls {
            if let Err(e) = validate::endpoint_url("url", url) {
                self.problem(&pointer, rule(e));
            }
        }
        (urls, failover)
    }

    fn endpoints(&mut self, data: &Value, options: &ImportOptions) -> Option<Endpoints> {
        let config = data.get("endpointConfig").filter(|c| c.is_object());
        let kind = config.map(|c| text(c, "endpoint_type")).unwrap_or("http");
        if !matches!(kind, "http" | "load_balance" | "failover" | "") {
            self.problem(
                "/data/endpointConfig/endpoint_type",
                format!(
                    "{kind} endpoints cannot be represented: Gatehouse calls HTTP endpoints (single, load-balanced or failover)"
                ),
            );
        }
        let mut group = |side: &str, given: &[String]| -> Option<EndpointGroup> {
            let (urls, failover) = if !given.is_empty() {
                (given.to_vec(), false)
            } else if let Some(config) = config {
                self.urls(config, side)
            } else {
                (Vec::new(), false)
            };
            let mode = if failover || kind == "failover" {
                endpoint_group::Mode::Failover
            } else {
                endpoint_group::Mode::LoadBalance
            };
            (!urls.is_empty()).then_some(EndpointGroup {
                mode: mode as i32,
                urls,
            })
        };
        let production = group("production", &options.production_urls);
        let sandbox = group("sandbox", &options.sandbox_urls);
        let timeout_ms = config
            .and_then(|c| c.get("production_endpoints"))
            .and_then(|e| e.get("config"))
            .and_then(|c| c.get("actionDuration"))
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map_or(0, |ms| ms.min(u64::from(validate::MAX_TIMEOUT_MS)) as u32);
        let endpoints = Endpoints {
            production,
            sandbox,
            timeout_ms,
        };
        (endpoints != Endpoints::default()).then_some(endpoints)
    }

    fn cors_and_cache(&mut self, data: &Value, api: &mut ImportedApi) {
        if let Some(cors) = data.get("corsConfiguration").filter(|c| c.is_object()) {
            let enabled = cors
                .get("corsConfigurationEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if enabled {
                api.definition.cors = Some(CorsPolicy {
                    enabled,
                    allow_origins: strings(cors.get("accessControlAllowOrigins")),
                    allow_methods: strings(cors.get("accessControlAllowMethods")),
                    allow_headers: strings(cors.get("accessControlAllowHeaders")),
                    allow_credentials: cors
                        .get("accessControlAllowCredentials")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    max_age_seconds: 0,
                });
            }
        }
        if data
            .get("responseCachingEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            let ttl = data
                .get("cacheTimeout")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            api.definition.cache = Some(ResponseCache {
                enabled: true,
                ttl_seconds: ttl.min(u64::from(u32::MAX)) as u32,
            });
        }
    }
}

fn rule(error: gatehouse_domain::DomainError) -> String {
    match error {
        gatehouse_domain::DomainError::InvalidArgument { rule, .. } => rule,
        other => other.to_string(),
    }
}
