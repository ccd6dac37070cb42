//! Consumer secrets: generated here, shown once, stored only as an argon2id hash.
//!
//! - [`generate_client_id`] / [`generate_secret`]: random, URL-safe (so HTTP Basic needs
//!   no escaping and a consumer key is a valid log subject token).
//! - [`hash_secret`]: argon2id with a random per-secret salt and OWASP's moderate
//!   parameters (m = 19 MiB, t = 2, p = 1); the PHC string is all that enters the log.
//! - [`SecretChecker`]: verification on the bounded argon2 pool ([`crate::pool`]),
//!   with a short-lived cache of successes. Only successes enter the cache, so no
//!   stream of wrong secrets (nor of unknown client ids) grows it; it is bounded by
//!   [`CACHE_CAPACITY`] all the same.
//!
//! # Shared state
//!
//! [`SecretChecker`] is shared by every request handler (through the `Authority`). Its
//! cache is a `std::sync::Mutex<HashMap>`: each critical section is one lookup or one
//! insert, never held across an `.await`, so a sync mutex is cheaper than tokio's. The
//! slow argon2 computation itself runs on the pool's threads, outside the lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::pool::{Argon2Pool, Busy};

/// argon2id memory cost in KiB (OWASP: 19 MiB with t = 2).
const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// How long a verified (client id, secret) pair is trusted without re-hashing.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Entries kept at most; past it, expired entries go, then everything.
pub const CACHE_CAPACITY: usize = 10_000;

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the secret: {0}")]
pub struct HashError(String);

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new consumer key: 20 random bytes, base64url (27 characters).
pub fn generate_client_id() -> String {
    random_token(20)
}

/// A new consumer secret: 32 random bytes, base64url (43 characters).
pub fn generate_secret() -> String {
    random_token(32)
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST, T_COST, P_COST, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `secret`'s argon2id hash with a fresh 16-byte salt. Slow (tens of
/// milliseconds): call it from a blocking context.
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt[..]);
    argon2()
        .hash_password_with_salt(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `secret` matches the PHC string `phc` (argon2's comparison is constant time).
/// Slow: call it from a blocking context.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    argon2().verify_password(secret.as_bytes(), phc).is_ok()
}

/// A hash nobody's secret matches, checked when the client is unknown so that the
/// answer takes as long as for a known client with a wrong secret.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&generate_secret()).expect("argon2 hashes a decoy secret"))
}

struct CacheEntry {
    /// The PHC string the secret was verified against: a regenerated secret changes
    /// it, which invalidates the entry.
    phc: String,
    until: Instant,
}

/// Verifies client secrets against their stored hashes, remembering recent successes.
///
/// The cache key is SHA-256 of (client id, secret), so the cache never holds a secret
/// in clear; an entry is only used while the client's stored hash is the one it was
/// checked against. Failures are never cached.
#[derive(Clone)]
pub struct SecretChecker {
    cache: Arc<Mutex<HashMap<[u8; 32], CacheEntry>>>,
    pool: Argon2Pool,
}

impl SecretChecker {
    /// A checker computing on `pool`.
    pub fn new(pool: Argon2Pool) -> Self {
        SecretChecker {
            cache: Arc::default(),
            pool,
        }
    }

    /// Computes the decoy hash now rather than on the first unknown client.
    pub async fn warm_up(&self) {
        let _ = tokio::task::spawn_blocking(decoy_hash).await;
    }

    fn key(client_id: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(client_id.as_bytes());
        h.update([0u8]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    /// Whether `secret` was verified as `client_id`'s secret recently, against the
    /// stored hash `phc` it still has: no argon2, one SHA-256.
    pub fn remembered(&self, client_id: &str, secret: &str, phc: Option<&str>) -> bool {
        let Some(phc) = phc else { return false };
        let key = Self::key(client_id, secret);
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&key)
            .is_some_and(|entry| entry.phc == phc && entry.until > Instant::now())
    }

    /// How many successes are remembered.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `secret` is the secret of `client_id`, whose stored hash is `phc`
    /// (`None`: no such client — a decoy hash is checked so that it takes as long).
    /// A remembered success answers at once; anything else is checked on the argon2
    /// pool, [`Busy`] if it is full.
    pub async fn check(
        &self,
        client_id: &str,
        secret: &str,
        phc: Option<&str>,
    ) -> Result<bool, Busy> {
        if self.remembered(client_id, secret, phc) {
            return Ok(true);
        }
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| decoy_hash());
        let ok = self.pool.verify(secret, phc).await? && known;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_CAPACITY {
                let now = Instant::now();
                cache.retain(|_, e| e.until > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(
                Self::key(client_id, secret),
                CacheEntry {
                    phc: phc.to_string(),
                    until: Instant::now() + CACHE_TTL,
                },
            );
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_are_url_safe_and_long() {
        let id = generate_client_id();
        let secret = generate_secret();
        assert_eq!(id.len(), 27);
        assert_eq!(secret.len(), 43);
        for s in [&id, &secret] {
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
        }
        assert_ne!(generate_secret(), secret);
    }

    #[test]
    fn hash_is_argon2id_phc_with_a_salt_and_verifies() {
        let phc = hash_secret("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert_ne!(hash_secret("s3cret").unwrap(), phc, "salted");
        assert!(verify_secret("s3cret", &phc));
        assert!(!verify_secret("s3cret ", &phc));
        assert!(!verify_secret("s3cret", "not a phc string"));
    }

    #[tokio::test]
    async fn checker_caches_successes_for_the_same_hash_only() {
        let checker = SecretChecker::new(Argon2Pool::new(1, 4));
        let phc = hash_secret("right").unwrap();
        assert!(!checker.remembered("c1", "right", Some(&phc)));
        assert_eq!(checker.check("c1", "right", Some(&phc)).await, Ok(true));
        assert!(checker.remembered("c1", "right", Some(&phc)));
        assert_eq!(checker.check("c1", "wrong", Some(&phc)).await, Ok(false));
        assert_eq!(checker.check("c1", "right", Some(&phc)).await, Ok(true));
        // Another client with the same secret is not a cache hit.
        assert_eq!(checker.check("c2", "right", None).await, Ok(false));
        // After regeneration the old secret no longer matches, cache or not.
        let new_phc = hash_secret("new").unwrap();
        assert!(!checker.remembered("c1", "right", Some(&new_phc)));
        assert_eq!(
            checker.check("c1", "right", Some(&new_phc)).await,
            Ok(false)
        );
        assert_eq!(checker.check("c1", "new", Some(&new_phc)).await, Ok(true));
    }

    #[tokio::test]
    async fn wrong_secrets_and_unknown_clients_grow_no_cache() {
        let checker = SecretChecker::new(Argon2Pool::new(2, 8));
        let phc = hash_secret("right").unwrap();
        assert_eq!(checker.check("c1", "right", Some(&phc)).await, Ok(true));
        assert_eq!(checker.cached(), 1);
        for i in 0..8 {
            assert_eq!(
                checker.check("c1", &format!("wrong-{i}"), Some(&phc)).await,
                Ok(false)
            );
            assert_eq!(
                checker.check(&format!("unknown-{i}"), "right", None).await,
                Ok(false)
            );
        }
        assert_eq!(checker.cached(), 1);
    }
}
