//! Shared plumbing for Gatehouse's demo backends (`client-service`,
//! `order-service`).
//!
//! The two backends stand in for the services WSO2 APIM used to front. They are
//! deliberately small, but they are what the gateway's tests talk to, so they
//! must behave like well-mannered HTTP APIs: every response — including errors
//! produced by axum itself (bad JSON, unknown route, wrong method) — is JSON,
//! every response says which backend produced it, and the process starts, logs
//! and stops the same way in both.
//!
//! Everything the two services would otherwise duplicate lives here:
//!
//! * [`error`]: [`ApiError`], the one error type handlers return, rendered as
//!   `{"error": "...", "message": "...", "fields": [...]}`.
//! * [`extract`]: [`JsonBody`] and [`Id`], drop-in extractors whose rejections
//!   are [`ApiError`]s instead of axum's plain-text defaults.
//! * [`http`]: [`service_router`], which wraps a service's routes with
//!   `/health`, `/openapi.json`, JSON 404/405 fallbacks, the `X-Backend`
//!   header and request logging (including the W3C `traceparent`).
//! * [`openapi`]: the common skeleton of the hand-written OpenAPI documents.
//! * [`store`]: [`store::IdTable`], records under ids the store assigns, and
//!   [`store::Shared`], the lock handlers share a store behind.
//! * [`server`]: the binary's `main`: CLI/env parsing, tracing setup, binding,
//!   graceful shutdown, and the `healthcheck` subcommand.
//! * [`healthcheck`]: a dependency-free HTTP/1.1 probe for Docker health checks
//!   (slim images have no `curl`).
//!
//! A service crate is then a library exposing `router()` (so the gateway's tests
//! and an all-in-one launcher can embed it in-process) plus a three-line
//! `main.rs` calling [`server::run`]. What their tests share (in-process requests
//! that check these invariants, the real binary's life) is in `gatehouse-testkit`.

pub mod error;
pub mod extract;
pub mod healthcheck;
pub mod http;
pub mod openapi;
pub mod server;
pub mod store;

pub use error::{ApiError, FieldError, Validator, required_text};
pub use extract::{Id, JsonBody};
pub use http::{BACKEND_HEADER, created, found, service_router};

/// Static facts about a service, used for the `X-Backend` header, the OpenAPI
/// `info` block, the CLI's `--help`/`--version` and log fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Binary and package name, e.g. `client-service`. Also the value of the
    /// `X-Backend` response header.
    pub name: &'static str,
    /// Package version.
    pub version: &'static str,
    /// Human title for the OpenAPI document.
    pub title: &'static str,
    /// One-sentence description (OpenAPI `info.description`, CLI `about`).
    pub description: &'static str,
}
