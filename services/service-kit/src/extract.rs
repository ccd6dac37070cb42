//! Extractors whose rejections are [`ApiError`]s.
//!
//! axum's own `Json` and `Path` reject with `text/plain` bodies. Handlers use
//! these wrappers instead, so a malformed body or a non-numeric id produces
//! the same JSON error shape as everything else.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::ApiError;

/// A JSON *object* request body deserialized into `T`, like [`axum::Json`]
/// as an extractor but rejecting with an [`ApiError`]:
///
/// * 415 unless `Content-Type` is `application/json` (or `application/*+json`);
/// * 400 for malformed JSON;
/// * 422 when the JSON is not an object, or does not fit `T` (e.g. a string
///   where a number belongs).
///
/// Insisting on an object closes a serde quirk: a derived struct also
/// deserializes from an array of its field values (`["Ada", "a@b.c"]`).
///
/// To turn *missing* fields into per-field validation errors instead of a 422
/// "invalid body", make them `Option`s in `T` and check them in a validation
/// step (see [`crate::Validator`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(e.body_text())
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(match serde_json::from_slice::<IgnoredAny>(&bytes) {
                Ok(_) => ApiError::InvalidBody("expected a JSON object".into()),
                Err(e) => {
                    ApiError::BadRequest(format!("Failed to parse the request body as JSON: {e}"))
                }
            });
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// `application/json` or `application/<anything>+json`, parameters ignored.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

/// A numeric resource id taken from the route's single path parameter
/// (`/users/{id}`). Anything but plain decimal digits fitting a `u64` is a
/// 400 with a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub u64);

impl<S> FromRequestParts<S> for Id
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        parse_id(&raw).map(Id)
    }
}

/// Parses a decimal id. Stricter than `u64::from_str`, which accepts `+5`.
pub fn parse_id(raw: &str) -> Result<u64, ApiError> {
    let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u64>() {
        Ok(id) if digits_only => Ok(id),
        _ => {
            let shown: String = raw.chars().take(40).collect();
            let ellipsis = if shown.len() < raw.len() { "…" } else { "" };
            Err(ApiError::bad_request(format!(
                "invalid id {:?}: expected a non-negative integer",
                format!("{shown}{ellipsis}")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_id_accepts_only_plain_digits() {
        assert_eq!(parse_id("0").unwrap(), 0);
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in [
            "",
            "+5",
            "-1",
            "1.0",
            "abc",
            " 1",
            "99999999999999999999999",
        ] {
            let err = parse_id(bad).unwrap_err();
            assert!(
                matches!(err, ApiError::BadRequest(_)),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn json_content_types() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json_content_type(&headers)
        };
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(accepts(json), "{json}");
        }
        for other in ["text/json", "application/jsonx", "text/plain"] {
            assert!(!accepts(other), "{other}");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn parse_id_truncates_long_input_in_message() {
        let long = "x".repeat(500);
        let message = parse_id(&long).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
        assert!(message.contains('…'));
    }
}
