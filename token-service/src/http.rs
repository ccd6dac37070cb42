//! The HTTPS endpoints (axum): the OAuth2 token endpoint (RFC 6749 §4.4, client
//! credentials), revocation (RFC 7009), introspection (RFC 7662) and the JWKS.
//!
//! Every request is checked in the same order: the guard's limits ([`crate::guard`]:
//! body size and read time, a form of bounded parameters, none repeated — then, around
//! the secret check, failure budgets and the bounded argon2 pool), at most one
//! client authentication method (`invalid_request`), the client authenticates with its
//! secret by HTTP Basic (id and secret form-urlencoded, RFC 6749 §2.3.1) or by the
//! `client_id`/`client_secret` form fields (`invalid_client`, 401, with
//! `WWW-Authenticate`), then the endpoint's own rules apply. Errors are the JSON of
//! RFC 6749 §5.2, `{"error", "error_description"}`; token responses and errors carry
//! `Cache-Control: no-store` and `Pragma: no-cache`.
//!
//! # Shared state
//!
//! The handlers share the [`Authority`] through axum's `State` (an `Arc`), and the
//! [`Guard`] through an `Extension` (an `Arc`; its own shared state is described
//! there): nothing else is shared between requests.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_node::commands::CallContext;
use serde_json::json;

use crate::authority::{Authority, IssueError};
use crate::form::Params as Form;
use crate::guard::{FormRequest, Guard};

/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "gatehouse";

/// The grant type Gatehouse issues tokens for.
const CLIENT_CREDENTIALS: &str = gatehouse_domain::keys::CLIENT_CREDENTIALS;

/// The HTTPS application, its client-authenticating endpoints behind `guard`.
pub fn router(authority: Arc<Authority>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/jwks", get(jwks))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(guard))
        .with_state(authority)
}

/// An OAuth2 error response (RFC 6749 §5.2).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// `Retry-After`, in seconds.
    retry_after: Option<u64>,
    /// Whether the connection closes after the answer (`Connection: close`).
    close: bool,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            retry_after: None,
            close: false,
        }
    }

    /// The same error, telling the client when to retry.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The same error, closing the connection after it.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    pub(crate) fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }

    pub(crate) fn unavailable(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = no_store(
            self.status,
            json!({"error": self.error, "error_description": self.description}),
        );
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="gatehouse""#),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A JSON response that no cache may keep.
fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `application/x-www-form-urlencoded` decoding of one Basic credential (§2.3.1).
fn form_decode(value: &str) -> Option<String> {
    let plus = value.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The client id and secret of the request, from the Authorization header or the form.
fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<(String, String), OAuthError> {
    let form_id = form.get("client_id");
    let form_secret = form.get("client_secret");
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok((id.to_string(), secret.to_string())),
            (Some(_), None) => Err(OAuthError::invalid_client(
                "client authentication failed: client_secret is required",
            )),
            _ => Err(OAuthError::invalid_client(
                "client authentication failed: no client credentials (use HTTP Basic)",
            )),
        };
    };
    if form_id.is_some() || form_secret.is_some() {
        return Err(OAuthError::invalid_request(
            "use one client authentication method: HTTP Basic or the client_id and client_secret parameters, not both",
        ));
    }
    let malformed =
        || OAuthError::invalid_client("client authentication failed: malformed Basic credentials");
    let value = authorization.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "client authentication failed: use HTTP Basic",
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if id.is_empty() || secret.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// A scope parameter's tokens (RFC 6749 §3.3): printable ASCII except `"` and `\`,
/// separated by single spaces.
fn parse_scope(scope: &str) -> Result<Vec<&str>, OAuthError> {
    let tokens: Vec<&str> = scope.split(' ').collect();
    let valid = |t: &&str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    if tokens.iter().all(valid) {
        Ok(tokens)
    } else {
        Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "malformed scope: space-separated tokens of printable ASCII without '\"' or '\\'",
        ))
    }
}

fn call_context(headers: &HeaderMap, actor: &str) -> CallContext {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    CallContext {
        actor: actor.to_string(),
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    }
}

/// `POST /oauth2/token`: RFC 6749 §4.4.
async fn token(
    State(authority): State<Arc<Authority>>,
    request: FormRequest,
) -> Result<Response, OAuthError> {
    let form = &request.form;
    let credentials = client_credentials(&request.headers, form)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let scope = form.get("scope").map(parse_scope).transpose()?;
    let client = request.authenticate(&authority, credentials).await?;
    if grant_type != CLIENT_CREDENTIALS {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant type {grant_type:?} is not supported; use {CLIENT_CREDENTIALS}"),
        ));
    }
    let issued = authority
        .issue(&client, scope.as_deref())
        .map_err(|e| match e {
            IssueError::UnauthorizedClient => OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the client is not allowed the client_credentials grant",
            ),
            IssueError::InvalidScope(reason) => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", reason)
            }
            e @ IssueError::NoSigningKey => {
                tracing::error!(error = %e, "cannot issue tokens");
                OAuthError::server_error("no signing key available")
            }
            IssueError::Key(e) => {
                tracing::error!(error = %e, "cannot sign a token");
                OAuthError::server_error("cannot sign the token")
            }
        })?;
    tracing::info!(
        client_id = %client.client_id,
        jti = %issued.claims.jti,
        scope = %issued.scope,
        "access token issued"
    );
    Ok(no_store(
        StatusCode::OK,
        json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }),
    ))
}

/// What revoke and introspect both start with: an authenticated client and the `token`
/// parameter.
async fn authenticated_token_request(
    authority: &Authority,
    request: &FormRequest,
) -> Result<(gatehouse_proto::events::OAuthClient, String), OAuthError> {
    let credentials = client_credentials(&request.headers, &request.form)?;
    let token = request
        .form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?
        .to_string();
    let client = request.authenticate(authority, credentials).await?;
    Ok((client, token))
}

/// `POST /oauth2/revoke`: RFC 7009. 200 whether or not there was anything to revoke.
async fn revoke(
    State(authority): State<Arc<Authority>>,
    request: FormRequest,
) -> Result<Response, OAuthError> {
    let (client, token) = authenticated_token_request(&authority, &request).await?;
    let ctx = call_context(&request.headers, &client.client_id);
    match authority.revoke(&client.client_id, &token, &ctx).await {
        Ok(revoked) => {
            if revoked {
                tracing::info!(client_id = %client.client_id, "access token revoked");
            }
            let mut response = StatusCode::OK.into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a token revocation");
            Err(OAuthError::unavailable(
                "the revocation could not be recorded; retry",
            ))
        }
    }
}

/// `POST /oauth2/introspect`: RFC 7662.
async fn introspect(
    State(authority): State<Arc<Authority>>,
    request: FormRequest,
) -> Result<Response, OAuthError> {
    let (_client, token) = authenticated_token_request(&authority, &request).await?;
    let body = match authority.live_claims(&token) {
        Ok(c) => json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "token_type": "Bearer",
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "sub": c.sub,
            "aud": c.aud,
            "iss": c.iss,
            "jti": c.jti,
        }),
        Err(reason) => {
            tracing::debug!(%reason, "introspected token is not active");
            json!({"active": false})
        }
    };
    Ok(no_store(StatusCode::OK, body))
}

/// `GET /oauth2/jwks`: the public keys tokens verify with.
async fn jwks(State(authority): State<Arc<Authority>>) -> Response {
    let mut response = axum::Json(authority.jwks()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn health() -> Response {
    axum::Json(json!({"status": "UP"})).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let description = format!("no endpoint {method} {}", uri.path());
    json_error(StatusCode::NOT_FOUND, "not_found", description)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let description = format!("method {method} is not allowed on {}", uri.path());
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        description,
    )
}

/// An error in the OAuth2 body shape (`error`, `error_description`) for what is not an
/// OAuth2 endpoint: unknown routes and methods (cacheable, unlike [`OAuthError`]).
fn json_error(status: StatusCode, error: &str, description: String) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_syntax() {
        assert_eq!(parse_scope("a b:c").unwrap(), ["a", "b:c"]);
        for bad in ["a  b", " a", "a ", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(parse_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%3Aid:s+e%2Bcret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        let form = Form::default();
        assert_eq!(
            client_credentials(&headers, &form).unwrap(),
            ("my:id".to_string(), "s e+cret".to_string())
        );
    }
}
