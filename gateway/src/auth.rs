//! Authentication: Bearer JWTs, verified once and then remembered until they expire.
//!
//! A token is verified by `gatehouse_tokens::Verifier`: the key is picked by the token's
//! `kid` among the signing keys published on the log, the algorithm must be that key's
//! own (so `none`, HMAC and RSA/EC confusion are refused before any crypto), then the
//! signature, `exp`/`nbf` (with a small leeway), `iss` and `aud` (`gatehouse-apis`:
//! admin tokens are refused) are checked.
//!
//! A signature check (RSA or ECDSA) costs tens of microseconds, far more than the rest
//! of the request path, so verified claims are cached by the token string until the
//! token expires. What can change during a token's life is still checked on every
//! request against the current routing table: revocation of its `jti` and revocation of
//! its client (`RoutingTable::check_revocation`, `gatehouse_tokens::check_revocation`'s
//! rule on the table's compact sets), and the set of signing keys — a
//! cached token verified under another set of keys (one was added or retired) is verified
//! again. Refused tokens are never cached.
//!
//! The verified claims come with the key type parsed once ([`Caller`]), so no phase
//! compares key-type strings.
//!
//! # Shared state
//!
//! [`TokenCache`]: a [`ShardedMap`] of 16 shards, token string → [`Caller`]. A hit
//! takes one read lock and clones an `Arc`; a miss verifies without any lock held and
//! takes the write lock only to insert. Each shard holds at most
//! [`MAX_CACHED_PER_SHARD`] tokens: when full, expired entries are dropped, and if that
//! is not enough the shard is emptied (cached tokens are only a shortcut: they are
//! verified again on their next use).

use std::sync::Arc;

use gatehouse_tokens::{AccessClaims, KeyType, TokenError, Verifier, unix_now};
use http::HeaderValue;

use crate::errors::GatewayError;
use crate::shards::ShardedMap;
use crate::table::RoutingTable;

const SHARDS: usize = 16;

/// Tokens remembered per shard (16 shards).
pub const MAX_CACHED_PER_SHARD: usize = 8192;

/// Who makes a call: a verified token's claims, and its key type parsed once, when the
/// token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub claims: AccessClaims,
    /// Which endpoints the token's keys reach. A `key_type` claim other than `SANDBOX`
    /// counts as production, as it always has at this gateway: token-service issues
    /// only these two, and admin tokens (with an empty one) are refused by audience.
    pub key_type: KeyType,
}

impl Caller {
    /// The caller of a verified token.
    pub fn new(claims: AccessClaims) -> Caller {
        let key_type = claims.parsed_key_type().unwrap_or(KeyType::Production);
        Caller { claims, key_type }
    }
}

/// One verified token in the cache.
struct Cached {
    caller: Arc<Caller>,
    /// The routing table's `keys_generation` it was verified under.
    keys_generation: u64,
    /// Unix second after which the token is expired (its `exp` plus the leeway).
    valid_until: i64,
}

/// Verified tokens, by token string.
pub struct TokenCache {
    tokens: ShardedMap<Box<str>, Cached>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            tokens: ShardedMap::new(SHARDS),
        }
    }
}

impl TokenCache {
    fn get(&self, token: &str, keys_generation: u64, now: i64) -> Option<Arc<Caller>> {
        self.tokens.read(token, |cached| {
            cached
                .filter(|c| c.keys_generation == keys_generation && now <= c.valid_until)
                .map(|c| c.caller.clone())
        })
    }

    fn insert(&self, token: &str, cached: Cached, now: i64) {
        self.tokens
            .insert_bounded(token.into(), cached, MAX_CACHED_PER_SHARD, |_, c| {
                c.valid_until >= now
            });
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Drops expired tokens (called periodically).
    pub fn sweep(&self) {
        let now = unix_now();
        self.tokens.retain(|_, c| c.valid_until >= now);
    }
}

/// The token in `Authorization: Bearer <token>`.
pub fn bearer(header: Option<&HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verifies tokens for the gateway: the verifier (immutable) and the cache of verified
/// tokens (synchronised inside).
pub struct Authenticator {
    verifier: Verifier,
    cache: TokenCache,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Authenticator {
            verifier,
            cache: TokenCache::default(),
        }
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The caller of the request's bearer token, or the 401 to answer: 900902 without
    /// a bearer token, 900901 when it does not verify or is revoked.
    pub fn authenticate(
        &self,
        table: &RoutingTable,
        authorization: Option<&HeaderValue>,
    ) -> Result<Arc<Caller>, GatewayError> {
        let token = bearer(authorization).ok_or_else(GatewayError::missing_credentials)?;
        let now = unix_now();
        let caller = match self.cache.get(token, table.keys_generation, now) {
            Some(caller) => caller,
            None => {
                let claims = self.verifier.verify(token, &table.keys).map_err(describe)?;
                let valid_until = claims
                    .exp
                    .saturating_add(self.verifier.leeway_seconds() as i64);
                let caller = Arc::new(Caller::new(claims));
                let cached = Cached {
                    caller: caller.clone(),
                    keys_generation: table.keys_generation,
                    valid_until,
                };
                self.cache.insert(token, cached, now);
                caller
            }
        };
        table.check_revocation(&caller.claims).map_err(describe)?;
        Ok(caller)
    }
}

fn describe(error: TokenError) -> GatewayError {
    GatewayError::invalid_credentials(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&h("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(Some(&h("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(Some(&h("Basic abc"))), None);
        assert_eq!(bearer(Some(&h("Bearer"))), None);
        assert_eq!(bearer(Some(&h("Bearer "))), None);
        assert_eq!(bearer(None), None);
    }
}
