//! HTTP handlers and the OpenAPI document describing them.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use service_kit::openapi::{self, create_operation, get_by_id_operation, list_operation, object};
use service_kit::{ApiError, Id, JsonBody, created, found};

use crate::SERVICE;
use crate::model::{Item, MAX_LINES, NewOrder, Order, QUANTITY_RANGE};
use crate::store::AppState;

/// This service's own routes, state applied (shared routes are added by
/// [`service_kit::service_router`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/orders", get(list_orders).post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/items", get(list_items))
        .with_state(state)
}

async fn list_orders(State(state): State<AppState>) -> Json<Vec<Order>> {
    Json(state.orders().list())
}

async fn get_order(State(state): State<AppState>, Id(id): Id) -> Result<Json<Order>, ApiError> {
    found("order", id, state.orders().get(id))
}

async fn create_order(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let valid = body.validate(state.catalogue())?;
    let order = state.orders_mut().insert(valid);
    tracing::info!(order.id, order.user_id, "order created");
    Ok(created(format!("/orders/{}", order.id), order))
}

async fn list_items(State(state): State<AppState>) -> Json<Vec<Item>> {
    Json(state.catalogue().list())
}

/// The OpenAPI 3.0 document served at `/openapi.json`.
pub fn openapi() -> Value {
    let paths = json!({
        "/orders": {
            "get": list_operation("List orders", "listOrders", "All orders, by id", "Order"),
            "post": create_operation("Place an order", "createOrder", "order", "NewOrder", "Order")
        },
        "/orders/{id}": {
            "get": get_by_id_operation("Get an order", "getOrder", "order", "Order")
        },
        "/items": {
            "get": list_operation("List the item catalogue", "listItems", "All items, by sku", "Item")
        }
    });
    let price = json!({
        "type": "number",
        "format": "double",
        "description": "Currency units with at most two decimals",
        "example": 19.99
    });
    let item = json!({
        "sku": { "type": "string", "example": "TEE-003" },
        "name": { "type": "string", "example": "Gatehouse t-shirt" },
        "price": price
    });
    let order_line = json!({
        "sku": { "type": "string" },
        "name": { "type": "string" },
        "quantity": { "type": "integer", "format": "int32" },
        "unit_price": price
    });
    let order = json!({
        "id": { "type": "integer", "format": "int64", "example": 1 },
        "user_id": { "type": "integer", "format": "int64", "example": 1 },
        "items": { "type": "array", "items": openapi::schema_ref("OrderLine") },
        "total": price
    });
    let new_order_line = json!({
        "sku": { "type": "string", "minLength": 1, "description": "A sku from GET /items; unique within the order" },
        "quantity": {
            "type": "integer",
            "minimum": QUANTITY_RANGE.start(),
            "maximum": QUANTITY_RANGE.end()
        }
    });
    let new_order = json!({
        "user_id": { "type": "integer", "format": "int64", "minimum": 1 },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_LINES,
            "items": openapi::schema_ref("NewOrderLine")
        }
    });
    let schemas = json!({
        "Item": object(&["sku", "name", "price"], item),
        "OrderLine": object(&["sku", "name", "quantity", "unit_price"], order_line),
        "Order": object(&["id", "user_id", "items", "total"], order),
        "NewOrderLine": object(&["sku", "quantity"], new_order_line),
        "NewOrder": object(&["user_id", "items"], new_order),
    });
    openapi::document(SERVICE, paths, schemas)
}
