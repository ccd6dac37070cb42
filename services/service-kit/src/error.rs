//! The JSON error type every handler returns.
//!
//! Wire format (the `fields` key only appears for validation failures):
//!
//! ```json
//! {"error": "not found", "message": "user 42 not found"}
//! {"error": "validation failed", "message": "1 invalid field",
//!  "fields": [{"field": "email", "message": "must contain exactly one '@'"}]}
//! ```
//!
//! `error` is a short, stable, machine-matchable kind (one per HTTP status);
//! `message` is for humans and may change.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// One invalid field of a request body. `field` is a path into the body, e.g.
/// `email` or `items[2].quantity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error a handler (or an extractor) turns into a JSON response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is unusable (malformed JSON, non-numeric id, ...).
    #[error("{0}")]
    BadRequest(String),
    /// 404: the addressed resource or route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with existing state (e.g. duplicate email).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body exceeds the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not declared as `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the body is JSON but not of the expected shape (wrong types).
    #[error("{0}")]
    InvalidBody(String),
    /// 422: the body has the right shape but some values break the rules.
    #[error("{} invalid field{}", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Validation(Vec<FieldError>),
    /// 500: a bug or broken invariant on our side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidBody(_) | Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `error` value of the body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad request",
            Self::NotFound(_) => "not found",
            Self::MethodNotAllowed(_) => "method not allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload too large",
            Self::UnsupportedMediaType(_) => "unsupported media type",
            Self::InvalidBody(_) => "invalid body",
            Self::Validation(_) => "validation failed",
            Self::Internal(_) => "internal error",
        }
    }
}

/// The serialised body; kept separate so the enum stays ergonomic.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.kind(),
            message: self.to_string(),
            fields: match &self {
                Self::Validation(fields) => Some(fields),
                _ => None,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::JsonDataError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "expected a body with `Content-Type: application/json`".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(other.body_text())
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            // Only happens if a route is wired without the expected parameter.
            Self::Internal(rejection.body_text())
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}

/// Collects [`FieldError`]s so a client sees every problem at once rather than
/// one per round-trip.
///
/// ```
/// # use service_kit::Validator;
/// let mut v = Validator::default();
/// v.check(false, "name", "must not be empty");
/// assert!(v.finish().is_err());
/// ```
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Records an error for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.error(field, message);
        }
    }

    /// Records an error for `field`.
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records the error of `result`, if any, for `field`; returns its value.
    pub fn field<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(field, message)).ok()
    }

    /// `Ok(())` if nothing was recorded, else [`ApiError::Validation`].
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }

    /// Like [`finish`](Self::finish), then assembles the validated value from
    /// the `Option`s [`field`](Self::field) returned (use `?` on them inside
    /// `make`). A `None` without a recorded error is a bug: 500.
    pub fn build<T>(self, make: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        self.finish()?;
        make().ok_or_else(|| ApiError::Internal("validated value is incomplete".into()))
    }
}

/// A required text field: present, trimmed, not empty, and at most `max_chars`
/// characters (not bytes) when a limit is given. Returns the trimmed text, or the rule
/// it broke as a [`Validator::field`] message.
pub fn required_text(value: Option<String>, max_chars: Option<usize>) -> Result<String, String> {
    let value = value.ok_or("is required")?;
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(max) = max_chars
        && value.chars().count() > max
    {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_message_counts_fields() {
        let one = ApiError::Validation(vec![FieldError {
            field: "a".into(),
            message: "m".into(),
        }]);
        assert_eq!(one.to_string(), "1 invalid field");
        let two = ApiError::Validation(vec![
            FieldError {
                field: "a".into(),
                message: "m".into(),
            };
            2
        ]);
        assert_eq!(two.to_string(), "2 invalid fields");
        assert_eq!(two.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn validator_collects_all_errors() {
        let mut v = Validator::default();
        v.check(true, "ok", "never");
        v.check(false, "a", "bad a");
        assert_eq!(v.field::<u8>("b", Err("bad b".into())), None);
        let c = v.field::<u8>("c", Ok(7));
        assert_eq!(c, Some(7));
        match v.build(|| c) {
            Err(ApiError::Validation(fields)) => {
                let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
                assert_eq!(names, ["a", "b"]);
            }
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn validator_builds_when_clean() {
        let mut v = Validator::default();
        let a = v.field::<u8>("a", Ok(1));
        let b = v.field::<u8>("b", Ok(2));
        assert_eq!(v.build(|| Some(a? + b?)).unwrap(), 3);
        let incomplete = Validator::default().build(|| None::<u8>).unwrap_err();
        assert_eq!(incomplete.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
