//! Verifying access tokens: control's admin API and the gateways' request path.

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_domain::State;
use gatehouse_proto::events::SigningKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::AccessClaims;
use crate::signing::parse_alg;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed Gatehouse JWT")]
    Malformed,
    #[error("the token's header has no key id (kid)")]
    MissingKid,
    #[error("the token is signed with an unknown key {0:?}")]
    UnknownKid(String),
    #[error("signing algorithm {0:?} is not the algorithm of the token's key")]
    AlgorithmNotAllowed(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the client the token was issued to has been revoked")]
    ClientRevoked,
}

/// Whether a published key still verifies tokens at `now`: it is active, or it was
/// deactivated and its `retire_after` is still ahead. These are the keys of the JWKS.
pub fn is_published(key: &SigningKey, now: SystemTime) -> bool {
    if key.active {
        return true;
    }
    let Some(retire_after) = key.retire_after else {
        return false;
    };
    retire_after.seconds > crate::unix_seconds(now)
}

/// The public keys tokens are checked against, by `kid`.
///
/// Built once from the published [`SigningKey`] records (rebuild it when they change).
/// Each entry pairs the key with its algorithm: a token must be signed with exactly that
/// algorithm.
#[derive(Default)]
pub struct VerificationKeys {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for VerificationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl VerificationKeys {
    /// The keys of `records`. A record whose algorithm is not RS256/ES256, or whose JWK
    /// cannot be used with it, is skipped with a warning.
    pub fn new<'a>(records: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        let mut keys = HashMap::new();
        for record in records {
            match decoding_key(record) {
                Ok(entry) => {
                    keys.insert(record.kid.clone(), entry);
                }
                Err(reason) => {
                    tracing::warn!(kid = %record.kid, alg = %record.alg, reason, "skipping unusable signing key");
                }
            }
        }
        VerificationKeys { keys }
    }

    /// Whether there is a key `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn decoding_key(record: &SigningKey) -> Result<(DecodingKey, Algorithm), String> {
    let alg = parse_alg(&record.alg).map_err(|e| e.to_string())?;
    let jwk: Jwk = serde_json::from_str(&record.public_jwk).map_err(|e| format!("bad JWK: {e}"))?;
    if let Some(jwk_alg) = jwk.common.key_algorithm
        && Algorithm::try_from(jwk_alg).ok() != Some(alg)
    {
        return Err(format!("the JWK's alg {jwk_alg:?} is not {}", record.alg));
    }
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => {}
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256)
            if p.curve == EllipticCurve::P256 => {}
        _ => return Err(format!("the JWK is not a {} key", record.alg)),
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad JWK: {e}"))?;
    Ok((key, alg))
}

/// The header members that matter for picking the key.
#[derive(Deserialize)]
struct KeyHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks tokens for one issuer and one audience.
///
/// Immutable once built; the `jsonwebtoken` validations are prepared once per algorithm
/// so that [`verify`](Self::verify) allocates nothing for them.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    rs256: Validation,
    es256: Validation,
}

impl Verifier {
    /// Default clock-skew allowance on `exp` and `nbf`.
    pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

    /// Accepts tokens with this `iss` and this `aud`, with the default leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();
        let leeway = Self::DEFAULT_LEEWAY_SECONDS;
        Verifier {
            rs256: validation(Algorithm::RS256, &issuer, &audience, leeway),
            es256: validation(Algorithm::ES256, &issuer, &audience, leeway),
            issuer,
            audience,
            leeway_seconds: leeway,
        }
    }

    /// The same verifier with another clock-skew allowance.
    pub fn with_leeway(self, leeway_seconds: u64) -> Self {
        Verifier {
            rs256: validation(
                Algorithm::RS256,
                &self.issuer,
                &self.audience,
                leeway_seconds,
            ),
            es256: validation(
                Algorithm::ES256,
                &self.issuer,
                &self.audience,
                leeway_seconds,
            ),
            leeway_seconds,
            ..self
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway_seconds(&self) -> u64 {
        self.leeway_seconds
    }

    /// The claims of `token` if it is a JWT signed by one of `keys` with that key's
    /// algorithm, currently valid (`exp`, `nbf`, with the leeway), from this issuer and
    /// for this audience. Revocation is [`check_revocation`]'s job.
    pub fn verify(&self, token: &str, keys: &VerificationKeys) -> Result<AccessClaims, TokenError> {
        let header = token.split('.').next().ok_or(TokenError::Malformed)?;
        if token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: KeyHeader =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let (key, alg) = keys
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
        let expected = crate::signing::alg_name(*alg);
        if header.alg != expected {
            return Err(TokenError::AlgorithmNotAllowed(header.alg));
        }
        let validation = match alg {
            Algorithm::ES256 => &self.es256,
            _ => &self.rs256,
        };
        match jsonwebtoken::decode::<AccessClaims>(token, key, validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed(expected.into()),
                _ => TokenError::Malformed,
            }),
        }
    }
}

fn validation(alg: Algorithm, issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v
}

/// What the log says about a verified token: refused if its `jti` was revoked, or if
/// the client it was issued to has been revoked since (revoking keys revokes their live
/// tokens). A client the state does not know (yet) does not refuse the token: its
/// signature already proves token-service issued it.
pub fn check_revocation(claims: &AccessClaims, state: &State) -> Result<(), TokenError> {
    if state.revoked_token(&claims.jti).is_some() {
        return Err(TokenError::Revoked);
    }
    if let Some(client) = state.client(&claims.client_id)
        && (client.revoked || client.revoked_at.is_some_and(|at| at.seconds >= claims.iat))
    {
        return Err(TokenError::ClientRevoked);
    }
    Ok(())
}
