//! The gateway's own answers, in WSO2 API Manager's JSON shape and codes.
//!
//! Every refusal the gateway makes itself (not the backend's answers, which pass through
//! untouched) is a [`GatewayError`]: an HTTP status plus WSO2's body
//!
//! ```json
//! {"code":900901,"message":"Invalid Credentials","description":"..."}
//! ```
//!
//! so clients written against WSO2 keep recognising them. The codes are WSO2's
//! (`org.wso2.carbon.apimgt.gateway.handlers.security.APISecurityConstants` and the
//! throttle handler's constants), listed in [`codes`]; where WSO2 answers with the bare
//! HTTP status (404, 405, 413), the code is that status.
//!
//! A refusal says what the client did wrong, never what the gateway knows of the
//! backends: a backend failure (503 101503, 504 101504) is a generic description, and
//! its details (endpoint, error chain, timeout) go to the log line and the upstream
//! span only.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::GatewayBody;

/// WSO2's error codes, as the gateway uses them.
pub mod codes {
    /// A token that is not valid: bad signature, expired, wrong issuer or audience,
    /// revoked, or keys of the wrong type for the API's endpoints.
    pub const INVALID_CREDENTIALS: u32 = 900_901;
    /// No `Authorization: Bearer ...` header on a secured resource.
    pub const MISSING_CREDENTIALS: u32 = 900_902;
    /// The subscription exists but is blocked (or blocked for production keys).
    pub const SUBSCRIPTION_BLOCKED: u32 = 900_907;
    /// The token's application is not subscribed to the API.
    pub const RESOURCE_FORBIDDEN: u32 = 900_908;
    /// The token has none of the scopes the resource requires.
    pub const SCOPE_NOT_ALLOWED: u32 = 900_910;
    /// Throttled by the API's tier.
    pub const API_THROTTLED: u32 = 900_800;
    /// Throttled by the resource's tier.
    pub const RESOURCE_THROTTLED: u32 = 900_802;
    /// Throttled by the application's tier.
    pub const APPLICATION_THROTTLED: u32 = 900_803;
    /// Throttled by the subscription's tier.
    pub const SUBSCRIPTION_THROTTLED: u32 = 900_804;
    /// The API is BLOCKED by its publisher.
    pub const API_BLOCKED: u32 = 700_700;
    /// No backend endpoint could be reached.
    pub const BACKEND_UNREACHABLE: u32 = 101_503;
    /// The backend did not answer within the API's timeout.
    pub const BACKEND_TIMEOUT: u32 = 101_504;
    /// No API or resource matches the request.
    pub const NO_MATCHING_RESOURCE: u32 = 404;
    /// The path matches a resource, the method does not.
    pub const METHOD_NOT_ALLOWED: u32 = 405;
    /// A CORS preflight from an origin the API does not allow.
    pub const CORS_ORIGIN_NOT_ALLOWED: u32 = 403;
    /// The gateway has no configuration yet (WSO2's code for an unavailable back end).
    pub const NOT_READY: u32 = BACKEND_UNREACHABLE;
    /// A request path the gateway does not accept (see [`crate::paths`]).
    pub const BAD_REQUEST: u32 = 400;
    /// A request body that did not arrive in time.
    pub const REQUEST_TIMEOUT: u32 = 408;
    /// A request body larger than the API accepts.
    pub const REQUEST_TOO_LARGE: u32 = 413;
    /// More request header fields than the gateway accepts.
    pub const HEADER_FIELDS_TOO_LARGE: u32 = 431;
}

/// A refusal made by the gateway, rendered as WSO2's JSON error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: StatusCode,
    pub code: u32,
    pub message: &'static str,
    pub description: String,
    /// Seconds, sent as `Retry-After` (throttling, maintenance).
    pub retry_after: Option<u64>,
    /// `Allow` header of a 405.
    pub allow: Option<String>,
    /// `Vary` header, for an answer that depends on a request header (CORS: `Origin`).
    pub vary: Option<&'static str>,
}

impl GatewayError {
    fn new(status: StatusCode, code: u32, message: &'static str, description: String) -> Self {
        GatewayError {
            status,
            code,
            message,
            description,
            retry_after: None,
            allow: None,
            vary: None,
        }
    }

    /// 401 / 900902.
    pub fn missing_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            codes::MISSING_CREDENTIALS,
            "Missing Credentials",
            "Invalid Credentials. Make sure your API invocation call has a header: 'Authorization : Bearer ***'"
                .to_string(),
        )
    }

    /// 401 / 900901, with the reason (never the token itself).
    pub fn invalid_credentials(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_CREDENTIALS,
            "Invalid Credentials",
            format!(
                "Invalid Credentials. Make sure you have provided the correct security credentials ({reason})"
            ),
        )
    }

    /// 403 / 900908.
    pub fn not_subscribed(api: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            codes::RESOURCE_FORBIDDEN,
            "Resource forbidden",
            format!(
                "User is NOT authorized to access the Resource. API Subscription validation failed for {api}."
            ),
        )
    }

    /// 401 / 900907.
    pub fn subscription_blocked(api: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            codes::SUBSCRIPTION_BLOCKED,
            "The requested API is temporarily blocked",
            format!("The subscription of this application to {api} is blocked."),
        )
    }

    /// 403 / 900910.
    pub fn scope_not_allowed(resource: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            codes::SCOPE_NOT_ALLOWED,
            "The access token does not allow you to access the requested resource",
            format!(
                "User is NOT authorized to access the Resource: {resource}. Scope validation failed."
            ),
        )
    }

    /// 429 with `Retry-After`; `code` is one of the throttling codes.
    pub fn throttled(code: u32, tier: &str, retry_after: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            "Message throttled out",
            format!(
                "You have exceeded your quota ({tier}). You can access the API again in {retry_after} seconds."
            ),
        );
        error.retry_after = Some(retry_after);
        error
    }

    /// 503 / 700700.
    pub fn api_blocked(api: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::API_BLOCKED,
            "API blocked",
            format!(
                "{api} has been blocked temporarily. Please try again later or contact the system administrators."
            ),
        )
    }

    /// 503 / 101503, with WSO2's generic description: which endpoint failed, and how,
    /// is for the log and the trace, not the client.
    pub fn backend_unreachable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::BACKEND_UNREACHABLE,
            "Error connecting to the back end",
            "Error connecting to the back end".to_string(),
        )
    }

    /// 504 / 101504, generic like [`backend_unreachable`](Self::backend_unreachable).
    pub fn backend_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::BACKEND_TIMEOUT,
            "Connection timed out",
            "The back end did not answer in time".to_string(),
        )
    }

    /// 400 / 400: a request path the gateway refuses (see [`crate::paths`]).
    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "Bad Request",
            format!("The request is not accepted: {reason}"),
        )
    }

    /// 413 / 413: a request body larger than the API's limit of `limit` bytes.
    pub fn request_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::REQUEST_TOO_LARGE,
            "Request Entity Too Large",
            format!("The request body is larger than this API accepts ({limit} bytes)"),
        )
    }

    /// 408 / 408: a request body that arrived too slowly.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::REQUEST_TIMEOUT,
            "Request Timeout",
            "The request body did not arrive in time".to_string(),
        )
    }

    /// 431 / 431: more header fields than `max`.
    pub fn header_fields_too_large(max: u32) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large",
            format!("The request has more than {max} header fields"),
        )
    }

    /// 404 / 404.
    pub fn no_matching_resource() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::NO_MATCHING_RESOURCE,
            "Not Found",
            "No matching resource found for given API Request".to_string(),
        )
    }

    /// 405 / 405 with `Allow`.
    pub fn method_not_allowed(allow: String) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            format!("Method not allowed for given API resource (allowed: {allow})"),
        );
        error.allow = Some(allow);
        error
    }

    /// 403 / 403 with `Vary: Origin`: a CORS preflight from an origin the API does not
    /// allow.
    pub fn cors_origin_not_allowed() -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            codes::CORS_ORIGIN_NOT_ALLOWED,
            "Forbidden",
            "CORS request from this origin is not allowed".to_string(),
        );
        error.vary = Some("Origin");
        error
    }

    /// 503 / 101503 with `Retry-After: 1` while the gateway has no configuration at
    /// all yet.
    pub fn not_ready() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::NOT_READY,
            "Gateway not ready",
            "The gateway has not received its configuration yet".to_string(),
        );
        error.retry_after = Some(1);
        error
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        /// WSO2's field order: code, message, description.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            code: u32,
            message: &'a str,
            description: &'a str,
        }
        serde_json::to_string(&Body {
            code: self.code,
            message: self.message,
            description: &self.description,
        })
        .unwrap_or_default()
    }

    /// The whole response.
    pub fn into_response(self) -> Response<GatewayBody> {
        let mut response = Response::new(GatewayBody::full(Bytes::from(self.body())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow.as_deref()
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            headers.insert(header::ALLOW, value);
        }
        if let Some(vary) = self.vary {
            headers.insert(header::VARY, HeaderValue::from_static(vary));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_wso2_shaped() {
        let body: serde_json::Value =
            serde_json::from_str(&GatewayError::missing_credentials().body()).unwrap();
        assert_eq!(body["code"], 900902);
        assert_eq!(body["message"], "Missing Credentials");
        assert!(body["description"].as_str().unwrap().contains("Bearer"));
        assert_eq!(body.as_object().unwrap().len(), 3);
        assert!(
            GatewayError::missing_credentials()
                .body()
                .starts_with(r#"{"code":900902,"message":"Missing Credentials","description":"#),
            "WSO2's field order"
        );
    }

    #[test]
    fn a_refused_cors_origin_is_403_and_varies_by_origin() {
        let response = GatewayError::cors_origin_not_allowed().into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::VARY], "Origin");
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn backend_failures_say_nothing_of_the_backend() {
        for error in [
            GatewayError::backend_unreachable(),
            GatewayError::backend_timeout(),
        ] {
            let body: serde_json::Value = serde_json::from_str(&error.body()).unwrap();
            let description = body["description"].as_str().unwrap();
            assert!(!description.contains("http"), "{description}");
            assert!(!description.contains(':'), "no error chain: {description}");
        }
        assert_eq!(GatewayError::backend_unreachable().code, 101503);
        assert_eq!(GatewayError::backend_timeout().code, 101504);
    }

    #[test]
    fn a_too_large_body_is_413_in_wso2_shape() {
        let response = GatewayError::request_too_large(1024).into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            GatewayError::request_too_large(1024)
                .body()
                .starts_with(r#"{"code":413,"message":"Request Entity Too Large","description":"#)
        );
    }

    #[test]
    fn throttled_carries_retry_after() {
        let response =
            GatewayError::throttled(codes::API_THROTTLED, "10PerMin", 42).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
    }
}
