//! Input rules shared by the aggregates. Each check returns a
//! [`DomainError::InvalidArgument`] that names the field and the rule it breaks.

use crate::DomainError;

/// HTTP methods a resource may declare.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Longest name (API, application, policy) accepted.
pub const MAX_NAME_LEN: usize = 100;

/// Longest upstream timeout accepted, in milliseconds.
pub const MAX_TIMEOUT_MS: u32 = 300_000;

/// Largest per-API request body limit accepted, in bytes (1 GiB): a gateway streams
/// bodies, but an API that needs more is better served by an upload endpoint of its own.
pub const MAX_REQUEST_BODY_BYTES: u32 = 1 << 30;

/// Any value, as long as there is one.
pub(crate) fn required(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// A display name: not blank, at most [`MAX_NAME_LEN`] characters, no control characters.
pub fn name(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A name that is also used as a log subject token: letters, digits, `_` and `-`.
pub(crate) fn token_name(field: &str, value: &str) -> Result<(), DomainError> {
    name(field, value)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(DomainError::invalid(
            field,
            "may contain only letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

/// `/client`, `/shop/orders`: starts with `/`, segments of URL-safe characters, no
/// `..`, no trailing `/`.
pub fn context(field: &str, value: &str) -> Result<(), DomainError> {
    if !value.starts_with('/') {
        return Err(DomainError::invalid(field, "must start with '/'"));
    }
    if value.contains("..") {
        return Err(DomainError::invalid(field, "must not contain '..'"));
    }
    if value.len() == 1 {
        return Err(DomainError::invalid(
            field,
            "must have at least one segment after '/'",
        ));
    }
    for segment in value[1..].split('/') {
        if segment.is_empty() {
            return Err(DomainError::invalid(
                field,
                "must not contain empty segments or end with '/'",
            ));
        }
        if !segment.chars().all(is_segment_char) {
            return Err(DomainError::invalid(
                field,
                format!("segment {segment:?} may contain only letters, digits and '-._~'"),
            ));
        }
    }
    Ok(())
}

/// `1.0.0`, `v2`, `2024-01`: starts with a letter or digit, then letters, digits, `.`,
/// `_` or `-`; at most 30 characters.
pub fn version(field: &str, value: &str) -> Result<(), DomainError> {
    let mut chars = value.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid_first || !valid_rest || value.len() > 30 || value.contains("..") {
        return Err(DomainError::invalid(
            field,
            "must be a version like 1.0.0 or v2: a letter or digit, then letters, digits, '.', '_' or '-' (at most 30)",
        ));
    }
    Ok(())
}

/// `/users`, `/users/{id}`, `/files/*`, `/`: literal segments, `{param}` segments and an
/// optional trailing `*` that matches the rest of the path.
pub fn path_template(field: &str, value: &str) -> Result<(), DomainError> {
    if !value.starts_with('/') {
        return Err(DomainError::invalid(field, "must start with '/'"));
    }
    if value == "/" {
        return Ok(());
    }
    if value.contains("..") {
        return Err(DomainError::invalid(field, "must not contain '..'"));
    }
    let segments: Vec<&str> = value[1..].split('/').collect();
    let mut params: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if segment.is_empty() {
            return Err(DomainError::invalid(
                field,
                "must not contain empty segments or end with '/'",
            ));
        }
        if *segment == "*" {
            if !last {
                return Err(DomainError::invalid(
                    field,
                    "'*' may only be the last segment",
                ));
            }
            continue;
        }
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(param) = inner.strip_suffix('}') else {
                return Err(DomainError::invalid(
                    field,
                    format!("segment {segment:?} opens '{{' without closing it"),
                ));
            };
            let mut chars = param.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(DomainError::invalid(
                    field,
                    format!(
                        "parameter {segment:?} must be {{name}} with a letter, then letters, digits or '_'"
                    ),
                ));
            }
            if params.contains(&param) {
                return Err(DomainError::invalid(
                    field,
                    format!("parameter {{{param}}} appears twice"),
                ));
            }
            params.push(param);
            continue;
        }
        if !segment
            .chars()
            .all(|c| is_segment_char(c) || "!$&'()+,;=:@".contains(c))
        {
            return Err(DomainError::invalid(
                field,
                format!(
                    "segment {segment:?} has a character not allowed in a URL path (or a misplaced '{{', '}}' or '*')"
                ),
            ));
        }
    }
    Ok(())
}

/// Upper-cases `value` and checks it is a known HTTP method.
pub fn http_method(field: &str, value: &str) -> Result<String, DomainError> {
    let upper = value.trim().to_ascii_uppercase();
    if HTTP_METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "unknown HTTP method {value:?}; expected one of {}",
                HTTP_METHODS.join(", ")
            ),
        ))
    }
}

/// An absolute `http://` or `https://` URL with a host.
pub fn endpoint_url(field: &str, value: &str) -> Result<(), DomainError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{value:?} is not an http:// or https:// URL"),
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            format!("{value:?} must name a host and contain no whitespace"),
        ));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(DomainError::invalid(
            field,
            format!("{value:?} has an invalid port"),
        ));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(DomainError::invalid(
            field,
            format!("{value:?} must not carry a query or fragment"),
        ));
    }
    Ok(())
}

/// An OAuth2 scope token: printable ASCII without spaces, quotes or backslashes
/// (RFC 6749 §3.3).
pub fn scope(field: &str, value: &str) -> Result<(), DomainError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "{value:?} is not a valid OAuth2 scope (printable ASCII, no spaces, quotes or backslashes)"
            ),
        ))
    }
}

/// A CORS origin: `*` or `http(s)://host[:port]`.
pub(crate) fn cors_origin(field: &str, value: &str) -> Result<(), DomainError> {
    if value == "*" {
        return Ok(());
    }
    endpoint_url(field, value)?;
    let after_scheme = value.split_once("://").map_or("", |(_, r)| r);
    if after_scheme.contains('/') {
        return Err(DomainError::invalid(
            field,
            format!("origin {value:?} must be scheme://host[:port] without a path"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: DomainError) -> String {
        match e {
            DomainError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    /// Asserts that `check` accepts every value in `ok`, and refuses every value in
    /// `bad` with an INVALID_ARGUMENT that names the field it was given.
    fn sorts(check: fn(&str, &str) -> Result<(), DomainError>, ok: &[&str], bad: &[&str]) {
        for value in ok {
            assert!(check("f", value).is_ok(), "{value} should pass");
        }
        for value in bad {
            let refused = check("f", value).expect_err(value);
            assert_eq!(field_of(refused), "f", "{value}");
        }
    }

    #[test]
    fn contexts() {
        sorts(
            context,
            &["/client", "/shop/orders", "/a-b_c.d~e"],
            &["client", "/", "/a/../b", "/a//b", "/a/", "/a b", "/{x}"],
        );
    }

    #[test]
    fn versions() {
        sorts(
            version,
            &["1.0.0", "v2", "2024-01", "1_0"],
            &["", ".1", "1..0", "1 0", "1/0", "-1", &"1".repeat(31)],
        );
    }

    #[test]
    fn path_templates() {
        sorts(
            path_template,
            &[
                "/",
                "/users",
                "/users/{id}",
                "/users/{id}/orders/{order_id}",
                "/files/*",
                "/a:b",
            ],
            &[
                "users",
                "/users/",
                "//x",
                "/{id",
                "/{1d}",
                "/{}",
                "/*/x",
                "/{id}/{id}",
                "/a b",
                "/a/../b",
                "/a{b}",
            ],
        );
    }

    #[test]
    fn methods_are_normalised_and_checked() {
        assert_eq!(http_method("m", "get").unwrap(), "GET");
        assert_eq!(http_method("m", "DELETE").unwrap(), "DELETE");
        let err = http_method("m", "FETCH").unwrap_err();
        assert!(err.to_string().contains("unknown HTTP method"), "{err}");
    }

    #[test]
    fn endpoint_urls() {
        sorts(
            endpoint_url,
            &[
                "http://localhost:8001",
                "https://api.example.com/base",
                "http://[::1]:80",
                "http://client-service:8000",
            ],
            &[
                "ftp://x",
                "localhost:8001",
                "http://",
                "http://:80",
                "http://a b",
                "http://x:99999",
                "http://x/?q=1",
            ],
        );
    }

    #[test]
    fn required_values() {
        sorts(required, &["x", " "], &[""]);
    }

    #[test]
    fn names() {
        assert!(name("n", "ClientServiceAPI").is_ok());
        assert!(name("n", "  ").is_err());
        assert!(name("n", &"x".repeat(101)).is_err());
        assert!(token_name("n", "Gold-2").is_ok());
        assert!(token_name("n", "Gold 2").is_err());
        assert!(token_name("n", "a.b").is_err());
    }

    #[test]
    fn scopes_and_origins() {
        assert!(scope("s", "read:users").is_ok());
        assert!(scope("s", "two words").is_err());
        assert!(scope("s", "").is_err());
        assert!(cors_origin("o", "*").is_ok());
        assert!(cors_origin("o", "https://app.example.com").is_ok());
        assert!(cors_origin("o", "https://app.example.com/path").is_err());
    }
}
