//! The API aggregate: creation, new versions, updates, lifecycle and deletion.
//!
//! # Rules
//!
//! An API is one version of a context (`/client` 1.0.0): context + version are unique,
//! and a new version is a new API with its own id, copied from its source. Name, context
//! and version never change afterwards. At most one version of a context is the default
//! (the fold moves the flag). The lifecycle follows [`crate::lifecycle`]; an API a
//! gateway serves (PUBLISHED or PROTOTYPED) needs a production endpoint and resources,
//! and a RETIRED one cannot change. An API with subscriptions cannot be deleted.
//!
//! Creating, deleting and taking the default flag read other APIs or subscriptions, so
//! they guard the whole log; other updates and lifecycle changes guard the API's own
//! subject.

use gatehouse_proto::events::{
    Api, ApiCreated, ApiDefinition, ApiDeleted, ApiLifecycleChanged, ApiUpdated, EndpointGroup,
    event_envelope::Event, lifecycle, throttle_policy::Level,
};

use crate::command::{AggregateKind, Consistency, Decision, PendingEvent, check_new_id};
use crate::policy::{self, require_tier};
use crate::record::Record;
use crate::{DomainError, State, lifecycle as lc, validate};

/// Cache TTL used when caching is enabled without one (WSO2's default, 300 s).
pub const DEFAULT_CACHE_TTL_SECONDS: u32 = 300;

/// Creates an API under `api_id`, in CREATED, with its definition checked and defaulted.
pub(crate) fn create(state: &State, api_id: String, definition: ApiDefinition) -> Decision {
    check_new_id("api_id", &api_id)?;
    let definition = normalize_definition(state, definition)?;
    created(state, api_id, definition, "")
}

/// Creates `api_id` as a copy of `source_api_id` at `new_version`, optionally the
/// default version of the context.
pub(crate) fn create_version(
    state: &State,
    api_id: String,
    source_api_id: &str,
    new_version: String,
    make_default: bool,
) -> Decision {
    check_new_id("api_id", &api_id)?;
    validate::required("source_api_id", source_api_id)?;
    let source = Api::existing(state, source_api_id)?;
    validate::version("new_version", &new_version)?;
    let mut definition = source.definition.clone().unwrap_or_default();
    definition.version = new_version;
    definition.is_default_version = make_default;
    created(state, api_id, definition, source_api_id)
}

/// The creation of a new API — a first one, or a new version of `source_api_id` — once
/// its context + version and its id are known to be free. A reused id would replace the
/// API that has it, subscriptions and all.
fn created(
    state: &State,
    api_id: String,
    definition: ApiDefinition,
    source_api_id: &str,
) -> Decision {
    ensure_unique(state, &definition)?;
    if state.api(&api_id).is_some() {
        return Err(DomainError::already_exists("API", &api_id));
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Api,
        api_id,
        Consistency::log(state),
        Event::ApiCreated(ApiCreated {
            definition: Some(definition),
            source_api_id: source_api_id.to_string(),
        }),
    )])
}

/// Replaces an API's definition; name, context and version stay as they are.
pub(crate) fn update(
    state: &State,
    api_id: &str,
    mut definition: ApiDefinition,
    expected_version: Option<u64>,
) -> Decision {
    let api = existing(state, api_id, expected_version)?;
    let current = api.definition.clone().unwrap_or_default();
    for (field, given, fixed) in [
        ("definition.name", &mut definition.name, &current.name),
        (
            "definition.context",
            &mut definition.context,
            &current.context,
        ),
        (
            "definition.version",
            &mut definition.version,
            &current.version,
        ),
    ] {
        if given.is_empty() {
            given.clone_from(fixed);
        } else if given != fixed {
            return Err(DomainError::invalid(
                field,
                format!(
                    "cannot change from {fixed:?} to {given:?}; create a new API or version instead"
                ),
            ));
        }
    }
    if api.lifecycle() == lifecycle::State::Retired {
        return Err(DomainError::FailedPrecondition(format!(
            "API {api_id} is RETIRED and can no longer be changed"
        )));
    }
    let definition = normalize_definition(state, definition)?;
    // Taking the default-version flag changes the other versions of the context too.
    let consistency = if definition.is_default_version && !current.is_default_version {
        Consistency::log(state)
    } else {
        api.unchanged()
    };
    if lc::accepts_subscriptions(api.lifecycle()) {
        ready_to_serve(&definition, api.lifecycle())?;
    }
    let updated = Event::ApiUpdated(ApiUpdated {
        definition: Some(definition),
    });
    Ok(vec![api.next_event(consistency, updated)])
}

/// Moves an API to `target`, if the lifecycle allows it from where it is.
pub(crate) fn change_lifecycle(
    state: &State,
    api_id: &str,
    target: lifecycle::State,
    expected_version: Option<u64>,
) -> Decision {
    let api = existing(state, api_id, expected_version)?;
    if target == lifecycle::State::Unspecified {
        return Err(DomainError::invalid(
            "target",
            "must be one of CREATED, PROTOTYPED, PUBLISHED, BLOCKED, DEPRECATED, RETIRED",
        ));
    }
    let from = api.lifecycle();
    if !lc::can_transition(from, target) {
        let allowed: Vec<&str> = lc::allowed_transitions(from)
            .iter()
            .map(|s| lc::name(*s))
            .collect();
        return Err(DomainError::FailedPrecondition(format!(
            "API {api_id} cannot go from {} to {}; allowed from {}: {}",
            lc::name(from),
            lc::name(target),
            lc::name(from),
            if allowed.is_empty() {
                "none (final state)".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    if matches!(
        target,
        lifecycle::State::Published | lifecycle::State::Prototyped
    ) {
        ready_to_serve(&api.definition.clone().unwrap_or_default(), target)?;
    }
    let changed = Event::ApiLifecycleChanged(ApiLifecycleChanged {
        from: from as i32,
        to: target as i32,
    });
    Ok(vec![api.next_event(api.unchanged(), changed)])
}

/// Deletes an API that has no subscriptions.
pub(crate) fn delete(state: &State, api_id: &str) -> Decision {
    let api = existing(state, api_id, None)?;
    let subscriptions = state.subscriptions_of_api(api_id).count();
    if subscriptions > 0 {
        return Err(DomainError::FailedPrecondition(format!(
            "API {api_id} has {subscriptions} subscription(s); remove them before deleting it"
        )));
    }
    // "Only without subscriptions" reads other aggregates: guard the whole log.
    let deleted = Event::ApiDeleted(ApiDeleted {});
    Ok(vec![api.next_event(Consistency::log(state), deleted)])
}

/// The API `api_id`, at `expected_version` if the caller gave one.
fn existing<'s>(
    state: &'s State,
    api_id: &str,
    expected_version: Option<u64>,
) -> Result<&'s Api, DomainError> {
    validate::required("api_id", api_id)?;
    let api = Api::existing(state, api_id)?;
    if let Some(expected) = expected_version
        && expected != api.aggregate_version
    {
        return Err(DomainError::VersionMismatch {
            kind: "api",
            id: api_id.to_string(),
            expected,
            actual: api.aggregate_version,
        });
    }
    Ok(api)
}

/// Context + version are free.
fn ensure_unique(state: &State, definition: &ApiDefinition) -> Result<(), DomainError> {
    if let Some(other) = state.api_by_context_version(&definition.context, &definition.version) {
        return Err(DomainError::AlreadyExists(format!(
            "an API with context {} and version {} already exists ({})",
            definition.context, definition.version, other.id
        )));
    }
    Ok(())
}

/// A gateway can serve an API only with resources and a production endpoint.
fn ready_to_serve(definition: &ApiDefinition, target: lifecycle::State) -> Result<(), DomainError> {
    let has_endpoint = definition
        .endpoints
        .as_ref()
        .and_then(|e| e.production.as_ref())
        .is_some_and(|g| !g.urls.is_empty());
    if !has_endpoint {
        return Err(DomainError::FailedPrecondition(format!(
            "API {} {} needs at least one production endpoint URL to be {}",
            definition.name,
            definition.version,
            lc::name(target)
        )));
    }
    if definition.resources.is_empty() {
        return Err(DomainError::FailedPrecondition(format!(
            "API {} {} needs at least one resource to be {}",
            definition.name,
            definition.version,
            lc::name(target)
        )));
    }
    Ok(())
}

/// Checks every field of a definition and fills defaults: methods upper-cased,
/// subscription tiers default to `Unlimited`, an enabled cache without TTL gets 300 s.
pub fn normalize_definition(
    state: &State,
    mut d: ApiDefinition,
) -> Result<ApiDefinition, DomainError> {
    d.name = d.name.trim().to_string();
    validate::name("definition.name", &d.name)?;
    validate::context("definition.context", &d.context)?;
    validate::version("definition.version", &d.version)?;
    if d.description.len() > 10_000 {
        return Err(DomainError::invalid(
            "definition.description",
            "must be at most 10000 bytes",
        ));
    }

    let mut seen = Vec::new();
    for (i, r) in d.resources.iter_mut().enumerate() {
        r.method = validate::http_method(&format!("definition.resources[{i}].method"), &r.method)?;
        validate::path_template(&format!("definition.resources[{i}].path"), &r.path)?;
        for scope in &r.scopes {
            validate::scope(&format!("definition.resources[{i}].scopes"), scope)?;
        }
        if !r.throttling_tier.is_empty() {
            let field = format!("definition.resources[{i}].throttling_tier");
            require_tier(state, &field, Level::Api, &r.throttling_tier)?;
        }
        let key = (r.method.clone(), r.path.clone());
        if seen.contains(&key) {
            return Err(DomainError::invalid(
                format!("definition.resources[{i}]"),
                format!("{} {} is declared twice", r.method, r.path),
            ));
        }
        seen.push(key);
    }

    if let Some(endpoints) = d.endpoints.as_ref() {
        check_group(
            "definition.endpoints.production",
            endpoints.production.as_ref(),
        )?;
        check_group("definition.endpoints.sandbox", endpoints.sandbox.as_ref())?;
        if endpoints.timeout_ms > validate::MAX_TIMEOUT_MS {
            return Err(DomainError::invalid(
                "definition.endpoints.timeout_ms",
                format!("must be at most {}", validate::MAX_TIMEOUT_MS),
            ));
        }
    }

    if d.max_request_body_bytes > validate::MAX_REQUEST_BODY_BYTES {
        return Err(DomainError::invalid(
            "definition.max_request_body_bytes",
            format!(
                "must be at most {} (1 GiB); 0 uses the gateway's default",
                validate::MAX_REQUEST_BODY_BYTES
            ),
        ));
    }

    if d.subscription_tiers.is_empty() {
        d.subscription_tiers.push(policy::UNLIMITED.to_string());
    }
    let mut tiers: Vec<String> = Vec::new();
    for tier in &d.subscription_tiers {
        require_tier(
            state,
            "definition.subscription_tiers",
            Level::Subscription,
            tier,
        )?;
        if !tiers.contains(tier) {
            tiers.push(tier.clone());
        }
    }
    d.subscription_tiers = tiers;

    if !d.api_throttling_tier.is_empty() {
        let field = "definition.api_throttling_tier";
        require_tier(state, field, Level::Api, &d.api_throttling_tier)?;
    }

    if let Some(cors) = d.cors.as_mut() {
        for origin in &cors.allow_origins {
            validate::cors_origin("definition.cors.allow_origins", origin)?;
        }
        // The CORS rule browsers enforce: credentials are never shared with "any origin"
        // (a gateway that did so would hand every site its users' cookies).
        if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
            return Err(DomainError::invalid(
                "definition.cors.allow_credentials",
                "cannot be true while definition.cors.allow_origins holds \"*\": list the origins that may send credentials",
            ));
        }
        for method in cors.allow_methods.iter_mut() {
            *method = validate::http_method("definition.cors.allow_methods", method)?;
        }
        for header in &cors.allow_headers {
            let ok = !header.is_empty()
                && header
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c) || c == '*');
            if !ok {
                return Err(DomainError::invalid(
                    "definition.cors.allow_headers",
                    format!("{header:?} is not a header name"),
                ));
            }
        }
    }
    if let Some(cache) = d.cache.as_mut()
        && cache.enabled
        && cache.ttl_seconds == 0
    {
        cache.ttl_seconds = DEFAULT_CACHE_TTL_SECONDS;
    }
    d.tags = d
        .tags
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    Ok(d)
}

fn check_group(field: &str, group: Option<&EndpointGroup>) -> Result<(), DomainError> {
    if let Some(group) = group {
        for url in &group.urls {
            validate::endpoint_url(&format!("{field}.urls"), url)?;
        }
    }
    Ok(())
}
