//! `order-service`: a small orders API with an item catalogue, one of the two
//! demo backends behind the Gatehouse gateway (formerly fronted by WSO2 APIM).
//!
//! | route                | answer                                             |
//! |----------------------|----------------------------------------------------|
//! | `GET /orders`        | 200, every order, by id                            |
//! | `GET /orders/{id}`   | 200 order; 404 unknown id; 400 non-numeric id      |
//! | `POST /orders`       | 201 + `Location`; 422 invalid fields               |
//! | `GET /items`         | 200, the catalogue (sku, name, price), by sku      |
//! | `GET /health`        | 200 `{"status":"UP"}`                              |
//! | `GET /openapi.json`  | OpenAPI 3.0 document of all of the above           |
//!
//! # Design
//!
//! Same shape as `client-service`: a library whose [`router`] is the whole
//! service (embeddable in-process by the gateway's tests or a launcher) and a
//! thin binary.
//!
//! * [`model`]: wire types, [`model::Price`] (integer cents on the inside, a
//!   decimal number on the wire) and the validation of a new order against
//!   the catalogue.
//! * [`store`]: the immutable [`Catalogue`] and the mutable [`OrderBook`],
//!   both behind [`AppState`].
//! * [`api`]: the handlers and the OpenAPI document.
//!
//! An order's prices are copied from the catalogue when it is placed, so the
//! order stays correct if the catalogue ever changes. Orders only check that
//! `user_id` is positive: users live in `client-service`, and a backend
//! calling another backend would blur what the gateway tests observe.
//!
//! Errors, extractors, `/health`, `/openapi.json`, fallbacks, the
//! `X-Backend: order-service` header, request logging and the process
//! plumbing come from the shared `service-kit` crate.

pub mod api;
pub mod model;
pub mod store;

use axum::Router;
use service_kit::ServiceInfo;

pub use store::{AppState, Catalogue, OrderBook};

/// Name, version and description of this service.
pub const SERVICE: ServiceInfo = ServiceInfo {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    title: "Gatehouse demo order service",
    description: "In-memory orders and item catalogue used as a demo backend behind the Gatehouse gateway.",
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
