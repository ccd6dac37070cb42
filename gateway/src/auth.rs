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
//! its client (`gatehouse_tokens::check_revocation`), and the set of signing keys — a
//! cached token verified under another set of keys (one was added or retired) is verified
//! again. Refused tokens are never cached.
//!
//! # Shared state
//!
//! [`TokenCache`]: 16 shards of `RwLock<HashMap<token, claims>>`. A hit takes one read
//! lock and clones an `Arc`; a miss verifies without any lock held and takes the write
//! lock only to insert. Each shard holds at most [`MAX_CACHED_PER_SHARD`] tokens: when
//! full, expired entries are dropped, and if that is not enough the shard is emptied
//! (cached tokens are only a shortcut: they are verified again on their next use).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_tokens::{AccessClaims, TokenError, Verifier, check_revocation};
use http::HeaderValue;

use crate::errors::GatewayError;
use crate::table::RoutingTable;

const SHARDS: usize = 16;

/// Tokens remembered per shard (16 shards).
pub const MAX_CACHED_PER_SHARD: usize = 8192;

struct Cached {
    claims: Arc<AccessClaims>,
    keys_generation: u64,
    /// Unix second after which the token is expired (its `exp` plus the leeway).
    valid_until: i64,
}

/// Verified tokens, by token string.
pub struct TokenCache {
    hasher: foldhash::fast::RandomState,
    shards: Vec<RwLock<HashMap<Box<str>, Cached, foldhash::fast::RandomState>>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl TokenCache {
    fn shard(
        &self,
        token: &str,
    ) -> &RwLock<HashMap<Box<str>, Cached, foldhash::fast::RandomState>> {
        &self.shards[(self.hasher.hash_one(token) as usize) % SHARDS]
    }

    fn get(&self, token: &str, keys_generation: u64, now: i64) -> Option<Arc<AccessClaims>> {
        let shard = self.shard(token).read().unwrap_or_else(|e| e.into_inner());
        let cached = shard.get(token)?;
        (cached.keys_generation == keys_generation && now <= cached.valid_until)
            .then(|| cached.claims.clone())
    }

    fn insert(&self, token: &str, cached: Cached, now: i64) {
        let mut shard = self.shard(token).write().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= MAX_CACHED_PER_SHARD {
            shard.retain(|_, c| c.valid_until >= now);
            if shard.len() >= MAX_CACHED_PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(token.into(), cached);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired tokens (called periodically).
    pub fn sweep(&self) {
        let now = unix_now();
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, c| c.valid_until >= now);
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The token in `Authorization: Bearer <token>`.
pub fn bearer(header: Option<&HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verifies tokens for the gateway.
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

    /// The claims of the request's bearer token, or the 401 to answer.
    pub fn authenticate(
        &self,
        table: &RoutingTable,
        authorization: Option<&HeaderValue>,
    ) -> Result<Arc<AccessClaims>, GatewayError> {
        let token = bearer(authorization).ok_or_else(GatewayError::missing_credentials)?;
        let now = unix_now();
        let claims = match self.cache.get(token, table.keys_generation, now) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verifier.verify(token, &table.keys).map_err(describe)?);
                self.cache.insert(
                    token,
                    Cached {
                        claims: claims.clone(),
                        keys_generation: table.keys_generation,
                        valid_until: claims
                            .exp
                            .saturating_add(self.verifier.leeway_seconds() as i64),
                    },
                    now,
                );
                claims
            }
        };
        check_revocation(&claims, &table.state).map_err(describe)?;
        Ok(claims)
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
