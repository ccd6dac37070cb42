//! What a verifier remembers between calls: the keys of the published signing keys
//! (parsing a JWK is not free), and tokens verified already (an ECDSA or RSA signature
//! check costs more than the rest of an admin call).
//!
//! # Shared state
//!
//! - [`PublishedKeys`]: the last key set and the kids it was built from behind a
//!   `std::sync::Mutex`; comparing the kids and cloning an `Arc` is the whole critical
//!   section (a new set is built inside it, rarely: when a key is published or retired).
//! - [`VerifiedTokens`]: token string → claims, the key set they were verified under and
//!   when they expire, in a `std::sync::Mutex<HashMap>` (one lookup or insert per call;
//!   the signature is checked with no lock held). At most [`VerifiedTokens::MAX_TOKENS`]
//!   entries: when full, expired ones go, and if that is not enough all go (they are only
//!   a shortcut: a token is verified again on its next use). Refused tokens are never
//!   remembered, so garbage cannot fill it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use gatehouse_domain::State;

use crate::{AccessClaims, TokenError, VerificationKeys, Verifier, is_published};

/// The verification keys of a state's published signing keys, built again only when
/// that set changes.
#[derive(Default)]
pub struct PublishedKeys {
    last: Mutex<Option<(Vec<String>, Arc<VerificationKeys>)>>,
}

impl PublishedKeys {
    /// The keys tokens verify with at `now`: the signing keys of `state` that are
    /// published then ([`is_published`]).
    pub fn of(&self, state: &State, now: SystemTime) -> Arc<VerificationKeys> {
        let published: Vec<_> = state
            .signing_keys()
            .filter(|k| is_published(k, now))
            .collect();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kids, keys)) = last.as_ref()
            && kids.len() == published.len()
            && kids
                .iter()
                .zip(&published)
                .all(|(kid, key)| *kid == key.kid)
        {
            return keys.clone();
        }
        let kids = published.iter().map(|k| k.kid.clone()).collect();
        let keys = Arc::new(VerificationKeys::new(published));
        *last = Some((kids, keys.clone()));
        keys
    }
}

/// One remembered verification.
struct Verified {
    claims: Arc<AccessClaims>,
    /// The key set it was verified under: another set (a key published or retired)
    /// verifies it again.
    keys: Arc<VerificationKeys>,
    /// Unix second after which the token is expired (its `exp` plus the leeway).
    valid_until: i64,
}

/// Tokens one [`Verifier`] has verified, remembered until they expire.
///
/// What can change during a token's life is the caller's to check on every call:
/// revocation ([`crate::check_revocation`]). A change of the key set is checked here.
#[derive(Default)]
pub struct VerifiedTokens {
    tokens: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    /// Tokens remembered at most.
    pub const MAX_TOKENS: usize = 4096;

    /// The claims of `token` as `verifier` checks it against `keys` at Unix second
    /// `now`, from memory if it passed under the same keys before and has not expired.
    /// Use one `VerifiedTokens` per verifier.
    pub fn verify(
        &self,
        verifier: &Verifier,
        token: &str,
        keys: &Arc<VerificationKeys>,
        now: i64,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        {
            let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(verified) = tokens.get(token)
                && Arc::ptr_eq(&verified.keys, keys)
                && now <= verified.valid_until
            {
                return Ok(verified.claims.clone());
            }
        }
        let claims = Arc::new(verifier.verify(token, keys)?);
        let verified = Verified {
            claims: claims.clone(),
            keys: keys.clone(),
            valid_until: claims.exp.saturating_add(verifier.leeway_seconds() as i64),
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= Self::MAX_TOKENS && !tokens.contains_key(token) {
            tokens.retain(|_, verified| verified.valid_until >= now);
            if tokens.len() >= Self::MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), verified);
        Ok(claims)
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
