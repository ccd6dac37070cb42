//! The claims of a Gatehouse access token.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{KEY_TYPE_PRODUCTION, KEY_TYPE_SANDBOX};

/// Which keys a token was issued to: the `key_type` claim, parsed.
///
/// The claim stays a string on the wire ([`AccessClaims::key_type`]); readers that act on
/// it parse it once into this enum rather than comparing strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `PRODUCTION`: the API's production endpoints.
    Production,
    /// `SANDBOX`: the API's sandbox endpoints.
    Sandbox,
}

impl KeyType {
    /// The claim's value: [`KEY_TYPE_PRODUCTION`] or [`KEY_TYPE_SANDBOX`].
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Production => KEY_TYPE_PRODUCTION,
            KeyType::Sandbox => KEY_TYPE_SANDBOX,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `key_type` claim that is neither `PRODUCTION` nor `SANDBOX` (admin tokens carry an
/// empty one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type {0:?}")]
pub struct UnknownKeyType(pub String);

impl FromStr for KeyType {
    type Err = UnknownKeyType;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            KEY_TYPE_PRODUCTION => Ok(KeyType::Production),
            KEY_TYPE_SANDBOX => Ok(KeyType::Sandbox),
            other => Err(UnknownKeyType(other.to_string())),
        }
    }
}

/// The payload of an access token.
///
/// The registered claims (RFC 7519 §4.1) are all present: a token lacking one is not a
/// Gatehouse token and fails verification as malformed. The application claims are
/// empty in tokens of admin clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AccessClaims {
    /// The token endpoint that issued the token.
    pub iss: String,
    /// The application's owner, or the client id of an admin client.
    pub sub: String,
    /// [`API_AUDIENCE`](crate::API_AUDIENCE) or [`ADMIN_AUDIENCE`](crate::ADMIN_AUDIENCE).
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Unique token id (a UUID); what a revocation names.
    pub jti: String,
    /// Granted scopes, space-separated (RFC 6749 §3.3).
    pub scope: String,
    /// The consumer key the token was issued to.
    pub client_id: String,
    #[serde(default)]
    pub application_id: String,
    #[serde(default)]
    pub application_name: String,
    /// `PRODUCTION` or `SANDBOX`; empty for admin clients.
    #[serde(default)]
    pub key_type: String,
    /// The application's throttling tier.
    #[serde(default)]
    pub application_tier: String,
}

impl AccessClaims {
    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The `key_type` claim, parsed.
    pub fn parsed_key_type(&self) -> Result<KeyType, UnknownKeyType> {
        self.key_type.parse()
    }
}

/// `time` as a JWT NumericDate (`exp`, `nbf`, `iat`): whole seconds since the Unix
/// epoch, 0 for a time before it.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, as a JWT NumericDate ([`unix_seconds`]).
pub fn unix_now() -> i64 {
    unix_seconds(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces() {
        let claims = AccessClaims {
            iss: String::new(),
            sub: String::new(),
            aud: String::new(),
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: String::new(),
            scope: "default  read:users apim:admin".into(),
            client_id: String::new(),
            application_id: String::new(),
            application_name: String::new(),
            key_type: String::new(),
            application_tier: String::new(),
        };
        assert_eq!(
            claims.scopes().collect::<Vec<_>>(),
            ["default", "read:users", "apim:admin"]
        );
        assert!(claims.has_scope("read:users"));
        assert!(!claims.has_scope("read"));
        assert!(!claims.has_scope(""));
    }

    #[test]
    fn key_types_parse_from_the_claim_and_back() {
        for key_type in [KeyType::Production, KeyType::Sandbox] {
            assert_eq!(key_type.as_str().parse(), Ok(key_type));
            assert_eq!(key_type.to_string(), key_type.as_str());
        }
        assert_eq!(KeyType::Sandbox.as_str(), "SANDBOX");
        assert_eq!(
            "".parse::<KeyType>(),
            Err(UnknownKeyType(String::new())),
            "admin tokens have no key type"
        );
        assert!(
            "sandbox".parse::<KeyType>().is_err(),
            "the claim is case-sensitive"
        );
    }
}
