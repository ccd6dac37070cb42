//! The claims of a Gatehouse access token.

use serde::{Deserialize, Serialize};

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
}
