//! The key manager's aggregates: OAuth2 clients (application keys and admin clients),
//! token signing keys and revoked tokens. token-service decides these commands; control
//! and the gateways only fold their events.

use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{
    Application, ClientRegistered, ClientRevoked, ClientSecretRegenerated, OAuthClient, SigningKey,
    SigningKeyDeactivated, SigningKeyPublished, TokenRevoked, event_envelope::Event,
    o_auth_client::KeyType,
};

use crate::command::{AggregateKind, Consistency, Decision, PendingEvent, check_new_id};
use crate::record::Record;
use crate::{DomainError, State, validate};

/// The only grant type Gatehouse issues tokens for (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// Token lifetime when a client does not set one (WSO2's default, one hour).
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u32 = 3600;

/// Longest token lifetime accepted (one year).
pub const MAX_TOKEN_LIFETIME_SECONDS: u32 = 365 * 24 * 3600;

/// Signing algorithms token-service may use.
pub const SIGNING_ALGORITHMS: &[&str] = &["RS256", "ES256"];

/// Registers client credentials: an application's keys of one type, or an admin client.
pub(crate) fn register_client(state: &State, mut client: OAuthClient) -> Decision {
    check_new_id("client_id", &client.client_id)?;
    if state.client(&client.client_id).is_some() {
        return Err(DomainError::already_exists("client", &client.client_id));
    }
    validate::required("secret_hash", &client.secret_hash)?;
    if client.grant_types.is_empty() {
        client.grant_types.push(CLIENT_CREDENTIALS.to_string());
    }
    for grant in &client.grant_types {
        if grant != CLIENT_CREDENTIALS {
            return Err(DomainError::invalid(
                "grant_types",
                format!("unsupported grant type {grant:?}; only {CLIENT_CREDENTIALS} is offered"),
            ));
        }
    }
    if client.token_lifetime_seconds == 0 {
        client.token_lifetime_seconds = DEFAULT_TOKEN_LIFETIME_SECONDS;
    }
    if client.token_lifetime_seconds > MAX_TOKEN_LIFETIME_SECONDS {
        return Err(DomainError::invalid(
            "token_lifetime_seconds",
            format!("must be at most {MAX_TOKEN_LIFETIME_SECONDS}"),
        ));
    }
    if client.application_id.is_empty() {
        // An admin client.
        if client.admin_scopes.is_empty() {
            return Err(DomainError::invalid(
                "admin_scopes",
                "an admin client needs at least one scope",
            ));
        }
        for scope in &client.admin_scopes {
            validate::scope("admin_scopes", scope)?;
        }
    } else {
        if !client.admin_scopes.is_empty() {
            return Err(DomainError::invalid(
                "admin_scopes",
                "only admin clients (without an application) have admin scopes",
            ));
        }
        let app = Application::existing(state, &client.application_id)?;
        if client.key_type() == KeyType::Unspecified {
            return Err(DomainError::invalid(
                "key_type",
                "must be PRODUCTION or SANDBOX",
            ));
        }
        if let Some(existing) = state.client_of(&client.application_id, client.key_type()) {
            return Err(DomainError::AlreadyExists(format!(
                "application {} already has {} keys (consumer key {}); regenerate the secret or revoke them first",
                app.name,
                client.key_type().as_str_name(),
                existing.client_id
            )));
        }
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Client,
        client.client_id.clone(),
        Consistency::log(state),
        Event::ClientRegistered(ClientRegistered {
            client: Some(client),
        }),
    )])
}

/// The client `client_id`, revoked or not.
fn live_client<'s>(state: &'s State, client_id: &str) -> Result<&'s OAuthClient, DomainError> {
    validate::required("client_id", client_id)?;
    OAuthClient::existing(state, client_id)
}

/// Replaces the secret of live client credentials.
pub(crate) fn regenerate_secret(state: &State, client_id: &str, secret_hash: String) -> Decision {
    let client = live_client(state, client_id)?;
    if client.revoked {
        return Err(DomainError::FailedPrecondition(format!(
            "client {client_id} is revoked; generate new keys instead"
        )));
    }
    validate::required("secret_hash", &secret_hash)?;
    let regenerated = Event::ClientSecretRegenerated(ClientSecretRegenerated { secret_hash });
    Ok(vec![client.next_event(client.unchanged(), regenerated)])
}

/// Revokes client credentials; revoking revoked ones changes nothing.
pub(crate) fn revoke_client(state: &State, client_id: &str) -> Decision {
    let client = live_client(state, client_id)?;
    if client.revoked {
        return Ok(Vec::new());
    }
    let revoked = Event::ClientRevoked(ClientRevoked {});
    Ok(vec![client.next_event(client.unchanged(), revoked)])
}

/// Publishes a new active signing key and deactivates the active ones.
pub(crate) fn publish_signing_key(
    state: &State,
    key: SigningKey,
    retire_previous_after: Option<Timestamp>,
) -> Decision {
    check_new_id("kid", &key.kid)?;
    if state.signing_key(&key.kid).is_some() {
        return Err(DomainError::already_exists("signing key", &key.kid));
    }
    if !SIGNING_ALGORITHMS.contains(&key.alg.as_str()) {
        return Err(DomainError::invalid(
            "alg",
            format!("must be one of {}", SIGNING_ALGORITHMS.join(", ")),
        ));
    }
    validate::required("public_jwk", &key.public_jwk)?;
    let mut events = vec![PendingEvent::first(
        AggregateKind::SigningKey,
        key.kid.clone(),
        Consistency::aggregate(0),
        Event::SigningKeyPublished(SigningKeyPublished { key: Some(key) }),
    )];
    for previous in state.signing_keys().filter(|k| k.active) {
        // A key's record keeps no version, but its history is fixed: published at 1,
        // deactivated once (only active keys are) at 2.
        events.push(PendingEvent::next(
            AggregateKind::SigningKey,
            &previous.kid,
            1,
            Consistency::aggregate(previous.last_sequence),
            Event::SigningKeyDeactivated(SigningKeyDeactivated {
                retire_after: retire_previous_after,
            }),
        ));
    }
    Ok(events)
}

/// Records a revoked token once.
pub(crate) fn revoke_token(
    state: &State,
    jti: String,
    expires_at: Option<Timestamp>,
    client_id: String,
) -> Decision {
    check_new_id("jti", &jti)?;
    if state.revoked_token(&jti).is_some() {
        return Ok(Vec::new());
    }
    Ok(vec![PendingEvent::first(
        AggregateKind::Token,
        jti,
        Consistency::aggregate(0),
        Event::TokenRevoked(TokenRevoked {
            expires_at,
            client_id,
        }),
    )])
}
