//! Admin authentication: every `ControlPlane` RPC — and every `KeyManager` RPC, which
//! control forwards on an admin's behalf — needs `authorization: Bearer <JWT>` issued by
//! token-service to an admin client and carrying the RPC's admin scope.
//!
//! Tokens are verified locally: the public signing keys are events on the log, so
//! control's own fold has them, and no call to token-service is made per request. An
//! admin token has audience `gatehouse-admin` (application tokens, audience
//! `gatehouse-apis`, are refused here), a known `kid`, a valid signature under that key's
//! algorithm, `exp`/`nbf` within a small leeway, control's configured issuer, and is
//! neither revoked nor from a revoked client. `apim:admin` grants every scope.
//!
//! The verified client id is the call's [`Caller`]: the actor recorded on every event
//! the call causes (never a request field), and the owner that application rules
//! compare with ([`Caller::may_manage`]).

use std::sync::Arc;

use gatehouse_tokens::{
    ADMIN_AUDIENCE, AccessClaims, PublishedKeys, VerifiedTokens, Verifier, check_revocation,
    scopes, unix_now,
};
use tonic::{Request, Status};

use crate::commands::CallContext;
use crate::read_model::ReadModel;

/// The verified caller of an admin call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: AccessClaims,
    /// The call's context: the caller's client id as actor, and the trace.
    pub context: CallContext,
}

impl Caller {
    /// The caller's client id.
    pub fn id(&self) -> &str {
        &self.claims.client_id
    }

    /// Holds `apim:admin`: may act on anything, including other owners' applications.
    pub fn is_admin(&self) -> bool {
        self.claims.has_scope(scopes::ADMIN)
    }

    /// May see and change what `owner` owns: its own things, or anything for an admin.
    pub fn may_manage(&self, owner: &str) -> bool {
        self.is_admin() || self.id() == owner
    }

    /// The owner a new application gets: the caller, unless an admin names another.
    pub fn owner_of_new(&self, requested: &str) -> Result<String, Status> {
        if requested.is_empty() || requested == self.id() {
            Ok(self.id().to_string())
        } else if self.is_admin() {
            Ok(requested.to_string())
        } else {
            Err(Status::permission_denied(format!(
                "owner: only an apim:admin caller may create an application for another owner \
                 (leave it empty to own it yourself, {})",
                self.id()
            )))
        }
    }
}

/// Verifies admin tokens against the keys in control's fold.
///
/// A token's signature is checked once, then remembered until the token expires or the
/// published keys change ([`VerifiedTokens`]; an ES256 check costs more than the rest
/// of a write call); revocation is checked against the fold on every call.
pub struct AdminAuth {
    verifier: Verifier,
    model: Arc<ReadModel>,
    keys: PublishedKeys,
    verified: VerifiedTokens,
}

impl AdminAuth {
    pub fn new(issuer: String, model: Arc<ReadModel>) -> Self {
        AdminAuth {
            verifier: Verifier::new(issuer, ADMIN_AUDIENCE.to_string()),
            model,
            keys: PublishedKeys::default(),
            verified: VerifiedTokens::default(),
        }
    }

    /// The caller of `request`, if it holds `scope` (or `apim:admin`); its client id
    /// becomes the actor of every event the call causes.
    pub fn authorize<T>(&self, request: &Request<T>, scope: &str) -> Result<CallContext, Status> {
        Ok(self.caller(request, scope)?.context)
    }

    /// [`authorize`](Self::authorize), keeping the verified claims.
    pub fn caller<T>(&self, request: &Request<T>, scope: &str) -> Result<Caller, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let authorization = header("authorization");
        if authorization.is_empty() {
            return Err(Status::unauthenticated(
                "missing credentials: send the metadata `authorization: Bearer <admin token>` (get one from token-service's /oauth2/token with the admin client)",
            ));
        }
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
            })?;
        let invalid = |e| Status::unauthenticated(format!("invalid admin token: {e}"));
        let keys = self
            .keys
            .of(&self.model.read(), std::time::SystemTime::now());
        let claims = self
            .verified
            .verify(&self.verifier, token, &keys, unix_now())
            .map_err(invalid)?;
        check_revocation(&claims, &self.model.read()).map_err(invalid)?;
        let claims = AccessClaims::clone(&claims);
        if !claims.has_scope(scope) && !claims.has_scope(scopes::ADMIN) {
            return Err(Status::permission_denied(format!(
                "the token of client {} lacks the scope {scope} needed for this call",
                claims.client_id
            )));
        }
        // The events this call causes continue its trace from this node's own span (or,
        // with tracing off, from the caller's trace context).
        let (mut traceparent, mut tracestate) = crate::telemetry::current_traceparent();
        if traceparent.is_empty() {
            traceparent = header("traceparent");
            tracestate = header("tracestate");
        }
        Ok(Caller {
            context: CallContext {
                actor: claims.client_id.clone(),
                traceparent,
                tracestate,
            },
            claims,
        })
    }
}
