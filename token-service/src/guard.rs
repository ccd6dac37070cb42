//! The guard in front of the endpoints that authenticate clients (`/oauth2/token`,
//! `/oauth2/revoke`, `/oauth2/introspect`): what a request must get past before it
//! costs anything, in this order.
//!
//! 1. **The body** ([`FormRequest`], an axum extractor): it must be declared a form
//!    (`application/x-www-form-urlencoded`, else 400 before any byte is read); a
//!    `Content-Length` over `--max-body-bytes` is answered 413 before any byte is
//!    read, and a body without one is read only up to the cap (413 as soon as it is
//!    passed); the whole body must arrive within `--body-read-timeout-seconds` (408,
//!    the connection closed). Then one linear parse ([`crate::form`]): at most
//!    `--max-form-parameters` (400, parsing stops there), none repeated (400).
//! 2. **The failure budgets** ([`crate::budget`]), unless the secret is one the client
//!    proved recently (no argon2 needed): a client id or address in backoff is answered
//!    429 `slow_down` with `Retry-After`, before argon2.
//! 3. **The argon2 pool** ([`crate::pool`]): full, the answer is 503
//!    `temporarily_unavailable` with `Retry-After: 1`, at once.
//! 4. The outcome is recorded: a wrong secret or an unknown client id spends both
//!    budgets; a success clears the client id's.
//!
//! Every refusal is an RFC 6749 §5.2 JSON error with `Cache-Control: no-store`. 429
//! carries `slow_down` (RFC 8628's registered code for "retry later, more slowly")
//! rather than `invalid_client`: the credentials were not checked, and saying they
//! were wrong would be false.
//!
//! # Shared state
//!
//! One [`Guard`] behind an `Arc`, installed in the router as an axum `Extension` and
//! shared by every request: its limits are immutable; its failure budgets are the
//! [`FailureBudgets`]' own mutexes (see there). The source address comes with each
//! request (`ConnectInfo`, inserted by [`crate::tls::serve`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use gatehouse_proto::events::OAuthClient;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::authority::{AuthError, Authority};
use crate::budget::{BudgetConfig, FailureBudgets, Throttled};
use crate::form::{self, FormError, Params};
use crate::http::OAuthError;
use crate::limits::EdgeLimits;

/// The guard: the limits, and the failure budgets they configure.
#[derive(Debug)]
pub struct Guard {
    limits: EdgeLimits,
    budgets: FailureBudgets,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body must be application/x-www-form-urlencoded")]
    NotForm,
    #[error("the body is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the body was not received within {} s", after.as_secs())]
    Timeout { after: Duration },
    #[error("the body could not be read: {0}")]
    Read(String),
    #[error(transparent)]
    Form(#[from] FormError),
}

/// Why a client was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Guard {
    pub fn new(limits: &EdgeLimits) -> Guard {
        Guard {
            limits: limits.clone(),
            budgets: FailureBudgets::new(BudgetConfig::from(limits)),
        }
    }

    pub fn limits(&self) -> &EdgeLimits {
        &self.limits
    }

    pub fn budgets(&self) -> &FailureBudgets {
        &self.budgets
    }

    /// The client `client_id` from `peer`, if `secret` is its secret: steps 2 to 4 of
    /// the module documentation.
    pub async fn authenticate(
        &self,
        authority: &Authority,
        peer: IpAddr,
        client_id: &str,
        secret: &str,
    ) -> Result<OAuthClient, Refusal> {
        if !authority.remembered(client_id, secret) {
            self.budgets.admit(peer, client_id, Instant::now())?;
        }
        match authority.authenticate(client_id, secret).await {
            Ok(client) => {
                self.budgets.succeeded(client_id);
                Ok(client)
            }
            Err(e @ (AuthError::WrongSecret | AuthError::UnknownClient)) => {
                let blocked = self.budgets.failed(peer, client_id, Instant::now());
                if !blocked.is_empty() {
                    tracing::warn!(%peer, client_id, ?blocked, "failure budget spent: backing off");
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the body of a request with these `headers` under the limits (step 1).
    pub async fn read_form(&self, headers: &HeaderMap, body: Body) -> Result<Params, BodyError> {
        if !is_form(headers) {
            return Err(BodyError::NotForm);
        }
        let bytes = read_body(headers, body, &self.limits).await?;
        Ok(form::parse(&bytes, self.limits.max_form_parameters())?)
    }
}

/// Whether the content type is `application/x-www-form-urlencoded` (parameters such as
/// a charset allowed).
pub fn is_form(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// The body, at most `--max-body-bytes` of it, within `--body-read-timeout-seconds`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &EdgeLimits,
) -> Result<Bytes, BodyError> {
    let max = limits.max_body_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(BodyError::TooLarge { max });
    }
    let after = limits.body_read_timeout();
    match tokio::time::timeout(after, Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyError::Timeout { after }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { max })
        }
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

/// A request to an endpoint that authenticates clients, past step 1: its headers, its
/// form, where it came from, and the guard for the next steps.
pub struct FormRequest {
    pub headers: HeaderMap,
    pub form: Params,
    pub peer: IpAddr,
    guard: Arc<Guard>,
}

impl FormRequest {
    /// Steps 2 to 4 for these credentials.
    pub async fn authenticate(
        &self,
        authority: &Authority,
        (id, secret): (String, String),
    ) -> Result<OAuthClient, OAuthError> {
        self.guard
            .authenticate(authority, self.peer, &id, &secret)
            .await
            .map_err(|refusal| {
                match refusal {
                    Refusal::Throttled(_) | Refusal::Auth(AuthError::Busy(_)) => {
                        tracing::debug!(client_id = %id, peer = %self.peer, reason = %refusal, "client authentication refused")
                    }
                    Refusal::Auth(reason) => {
                        tracing::info!(client_id = %id, %reason, "client authentication failed")
                    }
                }
                refusal.into()
            })
    }
}

impl<S: Send + Sync> FromRequest<S> for FormRequest {
    type Rejection = OAuthError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, OAuthError> {
        let guard = request
            .extensions()
            .get::<Arc<Guard>>()
            .cloned()
            .ok_or_else(|| OAuthError::server_error("the endpoint has no guard"))?;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let (parts, body) = request.into_parts();
        let form = guard.read_form(&parts.headers, body).await?;
        Ok(FormRequest {
            headers: parts.headers,
            form,
            peer,
            guard,
        })
    }
}

impl From<BodyError> for OAuthError {
    fn from(e: BodyError) -> Self {
        let status = match &e {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        };
        let close = matches!(e, BodyError::TooLarge { .. } | BodyError::Timeout { .. });
        let error = OAuthError::new(status, "invalid_request", e.to_string());
        // The rest of the body is not read: the connection cannot carry another request.
        if close { error.closing() } else { error }
    }
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Throttled(throttled) => OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                format!(
                    "too many failed authentications for this {}; retry after {} s",
                    throttled.what,
                    throttled.retry_after.as_secs()
                ),
            )
            .retry_after(throttled.retry_after.as_secs()),
            Refusal::Auth(AuthError::Busy(_)) => OAuthError::unavailable(
                "too many client authentications in progress; retry shortly",
            )
            .retry_after(1),
            Refusal::Auth(AuthError::Revoked) => {
                OAuthError::invalid_client("client authentication failed: the client is revoked")
            }
            Refusal::Auth(AuthError::UnknownClient | AuthError::WrongSecret) => {
                OAuthError::invalid_client("client authentication failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_headers(content_length: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        if let Some(length) = content_length {
            headers.insert(header::CONTENT_LENGTH, length.parse().unwrap());
        }
        headers
    }

    fn guard() -> Guard {
        Guard::new(&EdgeLimits {
            max_body_bytes: 64,
            max_form_parameters: 4,
            ..EdgeLimits::default()
        })
    }

    #[test]
    fn only_forms_are_forms() {
        assert!(is_form(&form_headers(None)));
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_form(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-URLEncoded".parse().unwrap(),
        );
        assert!(is_form(&headers));
    }

    #[tokio::test]
    async fn the_body_cap_holds_with_and_without_a_content_length() {
        let guard = guard();
        let small = "grant_type=client_credentials";
        let params = guard
            .read_form(&form_headers(None), Body::from(small))
            .await
            .unwrap();
        assert_eq!(params.get("grant_type"), Some("client_credentials"));
        // Declared too large: refused without polling the body (which would panic).
        let never_read = Body::from_stream(futures_never());
        assert_eq!(
            guard.read_form(&form_headers(Some("65")), never_read).await,
            Err(BodyError::TooLarge { max: 64 })
        );
        // Not declared: read up to the cap only.
        assert_eq!(
            guard
                .read_form(&form_headers(None), Body::from("a=1&".repeat(100)))
                .await,
            Err(BodyError::TooLarge { max: 64 })
        );
        assert_eq!(
            guard
                .read_form(&form_headers(None), Body::from("a=1&b=2&c=3&d=4&e=5"))
                .await,
            Err(BodyError::Form(FormError::TooManyParameters { max: 4 }))
        );
        assert_eq!(
            guard.read_form(&HeaderMap::new(), Body::from(small)).await,
            Err(BodyError::NotForm)
        );
    }

    /// A body stream that panics if it is polled.
    fn futures_never()
    -> impl tokio_stream::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        use tokio_stream::StreamExt;
        tokio_stream::iter([()])
            .map(|()| -> Result<Bytes, std::io::Error> { panic!("the body was read") })
    }

    #[test]
    fn refusals_are_rfc_6749_errors_with_retry_after() {
        use axum::response::IntoResponse;
        let throttled: OAuthError = Refusal::Throttled(Throttled {
            what: crate::budget::Subject::Client,
            retry_after: Duration::from_secs(4),
        })
        .into();
        let response = throttled.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "4");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let busy: OAuthError = Refusal::Auth(AuthError::Busy(crate::pool::Busy)).into();
        let response = busy.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let large: OAuthError = BodyError::TooLarge { max: 64 }.into();
        let response = large.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }
}
