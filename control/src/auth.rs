//! Admin authentication: every `ControlPlane` RPC needs `authorization: Bearer <JWT>`
//! issued by token-service to an admin client and carrying the RPC's admin scope.
//!
//! Tokens are verified locally: the public signing keys are events on the log, so
//! control's own fold has them, and no call to token-service is made per request. An
//! admin token has audience `gatehouse-admin` (application tokens, audience
//! `gatehouse-apis`, are refused here), a known `kid`, a valid signature under that key's
//! algorithm, `exp`/`nbf` within a small leeway, control's configured issuer, and is
//! neither revoked nor from a revoked client. `apim:admin` grants every scope.

use std::sync::Arc;

use gatehouse_node::commands::CallContext;
use gatehouse_node::read_model::ReadModel;
use gatehouse_tokens::{
    ADMIN_AUDIENCE, VerificationKeys, Verifier, check_revocation, is_published, scopes,
};
use tonic::{Request, Status};

/// Verifies admin tokens against the keys in control's fold.
pub struct AdminAuth {
    verifier: Verifier,
    model: Arc<ReadModel>,
}

impl AdminAuth {
    pub fn new(issuer: String, model: Arc<ReadModel>) -> Self {
        AdminAuth {
            verifier: Verifier::new(issuer, ADMIN_AUDIENCE.to_string()),
            model,
        }
    }

    /// The caller of `request`, if it holds `scope` (or `apim:admin`); its client id
    /// becomes the actor of every event the call causes.
    pub fn authorize<T>(&self, request: &Request<T>, scope: &str) -> Result<CallContext, Status> {
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
        let claims = {
            let state = self.model.read();
            let now = std::time::SystemTime::now();
            let keys = VerificationKeys::new(state.signing_keys().filter(|k| is_published(k, now)));
            let claims = self
                .verifier
                .verify(token, &keys)
                .map_err(|e| Status::unauthenticated(format!("invalid admin token: {e}")))?;
            check_revocation(&claims, &state)
                .map_err(|e| Status::unauthenticated(format!("invalid admin token: {e}")))?;
            claims
        };
        if !claims.has_scope(scope) && !claims.has_scope(scopes::ADMIN) {
            return Err(Status::permission_denied(format!(
                "the token of client {} lacks the scope {scope} needed for this call",
                claims.client_id
            )));
        }
        // The events this call causes continue its trace from control's own span.
        let (traceparent, tracestate) = gatehouse_node::telemetry::current_traceparent();
        Ok(CallContext {
            actor: claims.client_id,
            traceparent,
            tracestate,
        })
    }
}
