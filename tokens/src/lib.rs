//! Gatehouse's access tokens: what they say, how token-service signs them, and how
//! everyone else checks them.
//!
//! An access token is a JWT (RFC 7519) signed with RS256 or ES256 by token-service's
//! active signing key; its header names the key (`kid`). The public halves of the keys
//! are on the event log ([`SigningKey`](gatehouse_proto::events::SigningKey) records), so
//! control and every gateway verify tokens locally, without asking token-service.
//!
//! - [`AccessClaims`]: the claims of a token; [`KeyType`]: its `key_type` claim, parsed.
//! - [`SigningKeyPair`]: a private signing key (token-service only): generate, store as
//!   PEM, publish its public JWK, sign.
//! - [`VerificationKeys`] + [`Verifier`]: the verification path — the keys built once from
//!   the published records, then [`Verifier::verify`] per request. This is on the
//!   gateway's hot path: it parses the header once, looks the key up by `kid` in a hash
//!   map, checks the algorithm against the key's own (so `none`, HMAC and RSA/EC
//!   confusion are refused before any crypto), then verifies the signature and the
//!   time, issuer and audience claims.
//! - [`check_revocation`]: the log's say on a verified token (revoked `jti`, revoked
//!   client).
//! - [`PublishedKeys`], [`VerifiedTokens`]: what control's admin API and token-service
//!   remember between calls — the key set of the published keys, and tokens verified
//!   already (an ES256 check costs more than the rest of an admin call).
//!
//! # Shared state
//!
//! [`VerificationKeys`] and [`Verifier`] are immutable once built and `Send + Sync`: a
//! reader keeps them behind an `Arc` (or an `ArcSwap`) and builds a new
//! [`VerificationKeys`] when the published keys change, rather than locking one on
//! every request. The two caches of `cache.rs` each hold one `std::sync::Mutex` (see
//! there).

mod cache;
mod claims;
mod signing;
mod verify;

pub use cache::{PublishedKeys, VerifiedTokens};
pub use claims::{AccessClaims, KeyType, UnknownKeyType, unix_now, unix_seconds};
pub use signing::{KeyError, SigningKeyPair};
pub use verify::{TokenError, VerificationKeys, Verifier, check_revocation, is_published};

/// `aud` of tokens issued to admin clients: accepted by control's admin API only.
pub const ADMIN_AUDIENCE: &str = "gatehouse-admin";

/// `aud` of tokens issued to applications: accepted by the gateways only.
pub const API_AUDIENCE: &str = "gatehouse-apis";

/// token-service's default `iss` (WSO2's token endpoint URL).
pub const DEFAULT_ISSUER: &str = "https://localhost:9443/oauth2/token";

/// The scope every application token may carry, whatever it subscribed to.
pub const DEFAULT_SCOPE: &str = "default";

/// `key_type` claim of production keys.
pub const KEY_TYPE_PRODUCTION: &str = "PRODUCTION";

/// `key_type` claim of sandbox keys.
pub const KEY_TYPE_SANDBOX: &str = "SANDBOX";

/// The admin scopes, named like WSO2 API Manager's. Control requires one of them on
/// each admin RPC; token-service grants them to admin clients only.
pub mod scopes {
    /// Create APIs and new API versions, update them.
    pub const API_CREATE: &str = "apim:api_create";
    /// Lifecycle transitions (publish, block, deprecate, retire).
    pub const API_PUBLISH: &str = "apim:api_publish";
    /// Read APIs.
    pub const API_VIEW: &str = "apim:api_view";
    /// Delete APIs.
    pub const API_DELETE: &str = "apim:api_delete";
    /// Throttling policies.
    pub const TIER_MANAGE: &str = "apim:tier_manage";
    /// Applications and their keys.
    pub const APP_MANAGE: &str = "apim:app_manage";
    /// Subscribe applications to APIs.
    pub const SUBSCRIBE: &str = "apim:subscribe";
    /// Block and unblock subscriptions.
    pub const SUBSCRIPTION_BLOCK: &str = "apim:subscription_block";
    /// Everything else: gateways, event history, signing-key rotation.
    pub const ADMIN: &str = "apim:admin";
}

/// Every admin scope: what the first admin client gets, and what an admin client that
/// asks for no scope in particular is granted.
pub const ADMIN_SCOPES: &[&str] = &[
    scopes::API_CREATE,
    scopes::API_PUBLISH,
    scopes::API_VIEW,
    scopes::API_DELETE,
    scopes::TIER_MANAGE,
    scopes::APP_MANAGE,
    scopes::SUBSCRIBE,
    scopes::SUBSCRIPTION_BLOCK,
    scopes::ADMIN,
];
