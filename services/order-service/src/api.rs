//! HTTP handlers and the OpenAPI document describing them.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use service_kit::openapi::{
    self, error_response, id_parameter, json_array_response, json_response, object,
};
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
            "get": {
                "summary": "List orders",
                "operationId": "listOrders",
                "responses": { "200": json_array_response("All orders, by id", "Order") }
            },
            "post": {
                "summary": "Place an order",
                "operationId": "createOrder",
                "requestBody": {
                    "required": true,
                    "content": { "application/json": { "schema": openapi::schema_ref("NewOrder") } }
                },
                "responses": {
                    "201": {
                        "description": "Created; `Location` is the new order's URL",
                        "headers": { "Location": { "schema": { "type": "string" } } },
                        "content": { "application/json": { "schema": openapi::schema_ref("Order") } }
                    },
                    "400": error_response("Malformed JSON"),
                    "415": error_response("Body is not application/json"),
                    "422": error_response("Invalid fields (see `fields`) or wrongly typed body")
                }
            }
        },
        "/orders/{id}": {
            "get": {
                "summary": "Get an order",
                "operationId": "getOrder",
                "parameters": [id_parameter("Order id")],
                "responses": {
                    "200": json_response("The order", "Order"),
                    "400": error_response("Id is not a non-negative integer"),
                    "404": error_response("No such order")
                }
            }
        },
        "/items": {
            "get": {
                "summary": "List the item catalogue",
                "operationId": "listItems",
                "responses": { "200": json_array_response("All items, by sku", "Item") }
            }
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
