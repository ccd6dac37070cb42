//! The one path normalisation, run before route matching (phase 3 of
//! [`crate::proxy`]), so that the path matched is exactly the path forwarded — and the
//! path a backend sees can only mean the resource the gateway authorised.
//!
//! Backends are lenient: many merge `//`, decode `%2F` into a segment separator, treat
//! `\` as `/`, cut `;jsessionid=...` parameters off a segment, or decode `%61dmin` to
//! `admin`. A gateway that matched the raw path would let `/ctx/1.0.0//admin` or
//! `/ctx/1.0.0/admin;x` match an open `/*` resource while the backend serves its
//! `/admin`. So [`normalize`] either refuses a path (400) or rewrites it into the one
//! form every such backend reads the same way:
//!
//! | in the path | what happens |
//! |---|---|
//! | `//` (empty segments) | merged into one `/` |
//! | `%41`…`%5A`, `%61`…`%7A`, `%30`…`%39`, `%2D`, `%2E`, `%5F`, `%7E` (encoded unreserved characters) | decoded (RFC 3986 §6.2.2.2: the same URI) |
//! | other `%XX` | kept, hex digits upper-cased |
//! | `.` or `..` segments, literal or encoded | refused |
//! | `%2F` (encoded `/`), `%5C` or `\` (backslash) | refused |
//! | `;` or `%3B` (path parameters, literal or encoded) | refused |
//! | `%00`…`%1F`, `%7F` (encoded control characters), or `%` not followed by two hex digits | refused |
//!
//! The query is not touched. A path that needs no change is returned as it is, without
//! allocating: valid calls pay one scan of their path.

use std::borrow::Cow;

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the path contains an encoded '/' (%2F)")]
    EncodedSlash,
    #[error("the path contains a backslash ('\\' or %5C)")]
    Backslash,
    #[error("the path contains ';' or %3B (path parameters are not accepted)")]
    PathParameter,
    #[error("the path contains a '.' or '..' segment")]
    DotSegment,
    #[error("the path contains an encoded control character")]
    EncodedControl,
    #[error("the path contains a '%' that does not start a percent-encoding")]
    BadEncoding,
}

/// The value of a hex digit.
fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986's unreserved characters: what percent-encoding never needs to hide.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The byte encoded at `bytes[i..i + 3]` (`bytes[i]` is `%`), and whether its hex
/// digits were already upper-case.
fn decode_at(bytes: &[u8], i: usize) -> Result<(u8, bool), PathRefusal> {
    let (Some(&high), Some(&low)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
        return Err(PathRefusal::BadEncoding);
    };
    let (Some(h), Some(l)) = (hex(high), hex(low)) else {
        return Err(PathRefusal::BadEncoding);
    };
    let byte = h << 4 | l;
    match byte {
        b'/' => Err(PathRefusal::EncodedSlash),
        b'\\' => Err(PathRefusal::Backslash),
        b';' => Err(PathRefusal::PathParameter),
        0x00..=0x1f | 0x7f => Err(PathRefusal::EncodedControl),
        _ => Ok((
            byte,
            !high.is_ascii_lowercase() && !low.is_ascii_lowercase(),
        )),
    }
}

/// The normal form of a request path, or why it is refused. See the module docs.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    let bytes = path.as_bytes();
    let mut changes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathRefusal::Backslash),
            b';' => return Err(PathRefusal::PathParameter),
            b'/' if bytes.get(i + 1) == Some(&b'/') => changes = true,
            b'%' => {
                let (byte, upper) = decode_at(bytes, i)?;
                changes |= unreserved(byte) || !upper;
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let normal = if changes {
        Cow::Owned(rewrite(bytes))
    } else {
        Cow::Borrowed(path)
    };
    if normal
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(PathRefusal::DotSegment);
    }
    Ok(normal)
}

/// `bytes` (already checked by [`normalize`]) with `//` merged, encoded unreserved
/// characters decoded, and other encodings upper-cased.
fn rewrite(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if out.ends_with('/') => {}
            b'%' => {
                let byte = hex(bytes[i + 1]).unwrap_or(0) << 4 | hex(bytes[i + 2]).unwrap_or(0);
                if unreserved(byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
            byte => {
                // Multi-byte UTF-8 passes through byte by byte, whole at the end.
                if byte.is_ascii() {
                    out.push(char::from(byte));
                } else {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii() {
                        i += 1;
                    }
                    out.push_str(&String::from_utf8_lossy(&bytes[start..i]));
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_owned()
    }

    #[test]
    fn a_normal_path_is_borrowed_unchanged() {
        for path in [
            "/",
            "/client/1.0.0/users",
            "/client/1.0.0/users/",
            "/a/b%20c/%C3%A9",
            "/x/a..b/...",
            "*",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn empty_segments_are_merged() {
        assert_eq!(ok("/ctx/1.0.0//admin"), "/ctx/1.0.0/admin");
        assert_eq!(ok("//ctx///1.0.0/admin//"), "/ctx/1.0.0/admin/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_and_other_encodings_upper_cased() {
        assert_eq!(ok("/ctx/1.0.0/%61dmin"), "/ctx/1.0.0/admin");
        assert_eq!(ok("/ctx/%31.0.0/%7Euser%2d%5F"), "/ctx/1.0.0/~user-_");
        assert_eq!(ok("/a/%c3%a9%20x"), "/a/%C3%A9%20x");
        assert_eq!(ok("/a/%2561"), "/a/%2561", "decoded once, never twice");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        use PathRefusal::*;
        for (path, refusal) in [
            ("/ctx/1.0.0/%2Fadmin", EncodedSlash),
            ("/ctx/1.0.0/a%2fb", EncodedSlash),
            ("/ctx/1.0.0/%5Cadmin", Backslash),
            ("/ctx/1.0.0/a%5cb", Backslash),
            ("/ctx/1.0.0/a\\b", Backslash),
            ("/ctx/1.0.0/admin;x=1", PathParameter),
            ("/ctx/1.0.0/admin;", PathParameter),
            ("/ctx/1.0.0/admin%3bx", PathParameter),
            ("/ctx/1.0.0/../admin", DotSegment),
            ("/ctx/1.0.0/./admin", DotSegment),
            ("/ctx/1.0.0/%2e%2E/admin", DotSegment),
            ("/ctx/1.0.0/.%2e", DotSegment),
            ("/ctx/1.0.0/users/..", DotSegment),
            ("/ctx/1.0.0//..//admin", DotSegment),
            ("/ctx/1.0.0/a%00b", EncodedControl),
            ("/ctx/1.0.0/a%0Ab", EncodedControl),
            ("/ctx/1.0.0/a%7f", EncodedControl),
            ("/ctx/1.0.0/a%", BadEncoding),
            ("/ctx/1.0.0/a%2", BadEncoding),
            ("/ctx/1.0.0/a%zz", BadEncoding),
        ] {
            assert_eq!(normalize(path), Err(refusal), "{path}");
        }
    }

    #[test]
    fn the_normal_form_is_a_fixed_point() {
        for path in ["/a//b", "/%61/%c3%a9", "//x//", "/ok"] {
            let once = ok(path);
            assert!(matches!(normalize(&once), Ok(Cow::Borrowed(p)) if p == once));
        }
    }
}
