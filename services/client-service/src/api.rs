//! HTTP handlers and the OpenAPI document describing them.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use service_kit::openapi::{
    self, create_operation, error_response, get_by_id_operation, list_operation, object,
};
use service_kit::{ApiError, Id, JsonBody, created, found};

use crate::SERVICE;
use crate::model::{MAX_EMAIL_CHARS, MAX_NAME_CHARS, NewUser, User};
use crate::store::AppState;

/// This service's own routes, state applied (shared routes are added by
/// [`service_kit::service_router`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user))
        .with_state(state)
}

async fn list_users(State(state): State<AppState>) -> Json<Vec<User>> {
    Json(state.read().list())
}

async fn get_user(State(state): State<AppState>, Id(id): Id) -> Result<Json<User>, ApiError> {
    found("user", id, state.read().get(id))
}

async fn create_user(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let valid = body.validate()?;
    let user = state.write().insert(valid).map_err(|taken| {
        ApiError::conflict(format!(
            "email is already used by user {}",
            taken.existing_id
        ))
    })?;
    tracing::info!(user.id, "user created");
    Ok(created(format!("/users/{}", user.id), user))
}

/// `POST /users`: the shared create operation, and 409 for an email in use.
fn create_user_operation() -> Value {
    let mut operation = create_operation("Create a user", "createUser", "user", "NewUser", "User");
    operation["responses"]["409"] = error_response("Email already in use");
    operation
}

/// The OpenAPI 3.0 document served at `/openapi.json`.
pub fn openapi() -> Value {
    let paths = json!({
        "/users": {
            "get": list_operation("List users", "listUsers", "All users, by id", "User"),
            "post": create_user_operation()
        },
        "/users/{id}": {
            "get": get_by_id_operation("Get a user", "getUser", "user", "User")
        }
    });
    let user = json!({
        "id": { "type": "integer", "format": "int64", "example": 1 },
        "name": { "type": "string", "example": "Ada Lovelace" },
        "email": { "type": "string", "format": "email", "example": "ada@example.com" }
    });
    let new_user = json!({
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "description": "Trimmed; no control characters"
        },
        "email": {
            "type": "string",
            "format": "email",
            "maxLength": MAX_EMAIL_CHARS,
            "description": "Exactly one '@', text on both sides, dotted domain; unique (case-insensitive)"
        }
    });
    let schemas = json!({
        "User": object(&["id", "name", "email"], user),
        "NewUser": object(&["name", "email"], new_user),
    });
    openapi::document(SERVICE, paths, schemas)
}
