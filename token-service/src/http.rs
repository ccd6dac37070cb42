//! The HTTPS endpoints (axum): the OAuth2 token endpoint (RFC 6749 §4.4, client
//! credentials), revocation (RFC 7009), introspection (RFC 7662) and the JWKS.
//!
//! Every request is checked in the same order: the body is a form
//! (`application/x-www-form-urlencoded`) with no parameter repeated and at most one
//! client authentication method (`invalid_request`), the client authenticates with its
//! secret by HTTP Basic (id and secret form-urlencoded, RFC 6749 §2.3.1) or by the
//! `client_id`/`client_secret` form fields (`invalid_client`, 401, with
//! `WWW-Authenticate`), then the endpoint's own rules apply. Errors are the JSON of
//! RFC 6749 §5.2, `{"error", "error_description"}`; token responses and errors carry
//! `Cache-Control: no-store` and `Pragma: no-cache`.
//!
//! # Shared state
//!
//! The handlers share the [`Authority`] through axum's `State` (an `Arc`): nothing
//! else is shared between requests.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_node::commands::CallContext;
use serde_json::json;

use crate::authority::{AuthError, Authority, IssueError};

/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "gatehouse";

/// The grant type Gatehouse issues tokens for.
const CLIENT_CREDENTIALS: &str = gatehouse_domain::keys::CLIENT_CREDENTIALS;

/// The HTTPS application.
pub fn router(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/jwks", get(jwks))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(authority)
}

/// An OAuth2 error response (RFC 6749 §5.2).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }

    fn unavailable(description: impl Into<String>) -> Self {
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
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="gatehouse""#),
            );
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

/// The parameters of a form body, each at most once; empty values count as absent
/// (RFC 6749 §3.1).
struct Form {
    params: Vec<(String, String)>,
}

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if params.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {name} is repeated"
                )));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Form { params })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
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

/// Authenticates the request's client.
async fn authenticate(
    authority: &Authority,
    (id, secret): (String, String),
) -> Result<gatehouse_proto::events::OAuthClient, OAuthError> {
    authority.authenticate(&id, &secret).await.map_err(|e| {
        tracing::info!(client_id = %id, reason = %e, "client authentication failed");
        match e {
            AuthError::Revoked => {
                OAuthError::invalid_client("client authentication failed: the client is revoked")
            }
            AuthError::UnknownClient | AuthError::WrongSecret => {
                OAuthError::invalid_client("client authentication failed")
            }
        }
    })
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    let credentials = client_credentials(&headers, &form)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let scope = form.get("scope").map(parse_scope).transpose()?;
    let client = authenticate(&authority, credentials).await?;
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

/// What revoke and introspect both take: an authenticated client, its `token`
/// parameter, and the request's headers (its trace context), with the authority.
struct TokenRequest {
    authority: Arc<Authority>,
    client: gatehouse_proto::events::OAuthClient,
    token: String,
    headers: HeaderMap,
}

impl FromRequest<Arc<Authority>> for TokenRequest {
    type Rejection = Response;

    async fn from_request(request: Request, authority: &Arc<Authority>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, authority)
            .await
            .map_err(IntoResponse::into_response)?;
        let authenticated = async {
            let form = Form::parse(&headers, &body)?;
            let credentials = client_credentials(&headers, &form)?;
            let token = form
                .get("token")
                .ok_or_else(|| OAuthError::invalid_request("token is required"))?
                .to_string();
            let client = authenticate(authority, credentials).await?;
            Ok::<_, OAuthError>((client, token))
        };
        let (client, token) = authenticated.await.map_err(IntoResponse::into_response)?;
        Ok(TokenRequest {
            authority: authority.clone(),
            client,
            token,
            headers,
        })
    }
}

/// `POST /oauth2/revoke`: RFC 7009. 200 whether or not there was anything to revoke.
async fn revoke(request: TokenRequest) -> Result<Response, OAuthError> {
    let TokenRequest {
        authority,
        client,
        token,
        headers,
    } = request;
    let ctx = call_context(&headers, &client.client_id);
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
async fn introspect(request: TokenRequest) -> Result<Response, OAuthError> {
    let body = match request.authority.live_claims(&request.token) {
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
        let form = Form { params: vec![] };
        assert_eq!(
            client_credentials(&headers, &form).unwrap(),
            ("my:id".to_string(), "s e+cret".to_string())
        );
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(Form::parse(&headers, b"grant_type=a&scope=x").is_ok());
        let error = Form::parse(&headers, b"grant_type=a&grant_type=b")
            .err()
            .unwrap();
        assert_eq!(error.error, "invalid_request");
    }
}
