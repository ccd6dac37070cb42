//! Migration and GitOps for Gatehouse: APIs from the documents teams already have, and
//! the whole configuration as one file.
//!
//! | module | what it does |
//! |---|---|
//! | [`openapi`] | an OpenAPI 3.0 / 3.1 document (YAML or JSON) → an API definition; an API → the OpenAPI document of the gateway's view of it |
//! | [`apictl`] | a WSO2 `apictl export api` project (`api.yaml` and its OpenAPI definition) → an API definition and lifecycle state |
//! | [`config`] | the declarative configuration file (`gatehouse.yaml`): its format, export from a state, parsing with file, line and field in every error |
//! | [`plan`] | a file against a state: the commands that make the state match it, checked all at once on a scratch copy, and the changes object by object, field by field |
//! | [`document`] | YAML/JSON parsing and JSON pointers, shared by the importers |
//!
//! Nothing here does I/O: control calls it with the documents an admin sent and the
//! state it folded, and runs the commands it returns through its executor.
//!
//! # Reporting
//!
//! An import is all or nothing: everything in a document that Gatehouse cannot
//! represent is a [`Problem`] naming its JSON pointer, and one problem means nothing is
//! imported. Declarative files are read by people, so their errors name the file, the
//! line and the field instead ([`config::ConfigError`]).

pub mod apictl;
pub mod config;
pub mod document;
pub mod openapi;
pub mod plan;

mod locate;

/// Something in an imported document that Gatehouse cannot represent, or that is
/// wrong: where it is (a JSON pointer into the document, RFC 6901; empty for the whole
/// document) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

impl Problem {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// Why an import produced nothing: every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} cannot be imported:\n{}", .document, .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ImportError {
    /// The document's name (a file name, a URL, `api.yaml`).
    pub document: String,
    pub problems: Vec<Problem>,
}
