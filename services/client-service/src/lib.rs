//! `client-service`: a small users API, one of the two demo backends behind
//! the Gatehouse gateway (formerly fronted by WSO2 APIM).
//!
//! | route                | answer                                            |
//! |----------------------|---------------------------------------------------|
//! | `GET /users`         | 200, every user, by id                            |
//! | `GET /users/{id}`    | 200 user; 404 unknown id; 400 non-numeric id      |
//! | `POST /users`        | 201 + `Location`; 422 invalid fields; 409 email taken |
//! | `GET /health`        | 200 `{"status":"UP"}`                             |
//! | `GET /openapi.json`  | OpenAPI 3.0 document of all of the above          |
//!
//! # Design
//!
//! The crate is a library with a thin binary (`src/main.rs`): [`router`]
//! returns a ready-to-serve [`axum::Router`], so the gateway's tests and an
//! all-in-one launcher can run the service in-process, and this crate's tests
//! drive it with `tower::ServiceExt::oneshot` without opening sockets.
//!
//! * [`model`]: the wire types and the validation of a new user. Validation
//!   turns an untrusted [`model::NewUser`] into a [`model::ValidUser`], so the
//!   store can only ever receive checked data.
//! * [`store`]: the in-memory [`UserStore`] behind [`AppState`].
//! * [`api`]: the handlers and the OpenAPI document.
//!
//! Errors, JSON extractors, `/health`, `/openapi.json`, fallbacks, the
//! `X-Backend: client-service` header, request logging and the process
//! plumbing come from the shared `service-kit` crate, so this service and
//! `order-service` behave identically at the edges.

pub mod api;
pub mod model;
pub mod store;

use axum::Router;
use service_kit::ServiceInfo;

pub use store::{AppState, UserStore};

/// Name, version and description of this service.
pub const SERVICE: ServiceInfo = ServiceInfo {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    title: "Gatehouse demo client service",
    description: "In-memory users API used as a demo backend behind the Gatehouse gateway.",
};

/// The complete service with freshly seeded data.
pub fn router() -> Router {
    router_with_state(AppState::seeded())
}

/// The complete service over the given state; keep a clone of `state` to
/// inspect or pre-load data from tests or a launcher.
pub fn router_with_state(state: AppState) -> Router {
    service_kit::service_router(SERVICE, api::routes(state), &api::openapi())
}
