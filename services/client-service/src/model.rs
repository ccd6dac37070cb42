//! Wire types and the rules a new user must satisfy.
//!
//! Request bodies deserialize into [`NewUser`], whose fields are all
//! `Option`s: a missing field is then reported like any other broken rule
//! (`{"field":"email","message":"is required"}`) instead of as an opaque serde
//! error. [`NewUser::validate`] checks every rule, reports all failures at
//! once, and on success yields a [`ValidUser`] — the only input the store
//! accepts, so unvalidated data cannot reach it.

use serde::{Deserialize, Serialize};
use service_kit::{ApiError, Validator, required_text};

/// Longest accepted name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest accepted email address, in characters (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// A stored user, as returned by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
}

/// Body of `POST /users`, before validation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewUser {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// A [`NewUser`] that passed validation: trimmed and within every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidUser {
    name: String,
    email: String,
}

impl ValidUser {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    /// Attaches an id, making the stored form.
    pub fn into_user(self, id: u64) -> User {
        User {
            id,
            name: self.name,
            email: self.email,
        }
    }
}

impl NewUser {
    /// Checks every rule; `Err` is a 422 listing each invalid field.
    pub fn validate(self) -> Result<ValidUser, ApiError> {
        let mut v = Validator::default();
        let name = v.field("name", validate_name(self.name));
        let email = v.field("email", validate_email(self.email));
        v.build(|| {
            Some(ValidUser {
                name: name?,
                email: email?,
            })
        })
    }
}

/// Required; trimmed non-empty, at most [`MAX_NAME_CHARS`], no control
/// characters. Returns the trimmed name.
fn validate_name(name: Option<String>) -> Result<String, String> {
    let name = required_text(name, Some(MAX_NAME_CHARS))?;
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name)
}

/// Required; a pragmatic shape check rather than full RFC 5322: at most
/// [`MAX_EMAIL_CHARS`], no whitespace, exactly one `@` with text on both
/// sides, and a dotted domain (`example.com`, not `localhost` or `a..b`).
/// Returns the trimmed address.
fn validate_email(email: Option<String>) -> Result<String, String> {
    let email = required_text(email, Some(MAX_EMAIL_CHARS))?;
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    let Some((local, domain)) = email.split_once('@').filter(|(_, d)| !d.contains('@')) else {
        return Err("must contain exactly one '@'".into());
    };
    if local.is_empty() {
        return Err("must have text before the '@'".into());
    }
    if domain.is_empty() {
        return Err("must have text after the '@'".into());
    }
    if domain.split('.').count() < 2 || domain.split('.').any(str::is_empty) {
        return Err("must have a domain like example.com after the '@'".into());
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_accepts_plain_input() {
        let user = NewUser {
            name: Some("  Ada Lovelace ".into()),
            email: Some(" ada@example.com\n".into()),
        }
        .validate()
        .unwrap();
        assert_eq!(user.name(), "Ada Lovelace");
        assert_eq!(user.email(), "ada@example.com");
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(validate_name(Some("é".repeat(MAX_NAME_CHARS))).is_ok());
        assert!(validate_name(Some("é".repeat(MAX_NAME_CHARS + 1))).is_err());
    }

    #[test]
    fn email_shapes() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(validate_email(Some(ok.into())).is_ok(), "{ok}");
        }
        for bad in [
            "plain",
            "a@b@c.com",
            "@example.com",
            "a@",
            "a@localhost",
            "a@.com",
            "a@example.",
            "a@exa..mple.com",
            "a b@example.com",
        ] {
            assert!(validate_email(Some(bad.into())).is_err(), "{bad}");
        }
    }
}
