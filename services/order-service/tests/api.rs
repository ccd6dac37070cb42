//! End-to-end tests of the orders API: the router in-process via
//! `tower::ServiceExt::oneshot` (wrapped by `gatehouse_testkit::service::TestClient`,
//! which also asserts every reply is JSON with `X-Backend: order-service`),
//! plus one test of the real binary. The cases both backends share (JSON errors, health,
//! OpenAPI, trace context, the binary's life) are the test kit's `check_*` functions.

use axum::http::{StatusCode, header};
use gatehouse_testkit::service::{
    TestClient, check_a_traceparent_request_is_served, check_a_wrong_method_is_json_405,
    check_an_unknown_id_is_json_404, check_every_documented_operation_is_routed,
    check_health_is_up, check_malformed_json_is_json_400, check_non_numeric_ids_are_json_400,
    check_the_binary_serves_its_healthcheck_and_stops_on_sigterm, check_the_openapi_document_lists,
    check_unknown_routes_are_json_404,
};
use order_service::{AppState, Catalogue, OrderBook, router, router_with_state};
use serde_json::{Value, json};

fn client() -> TestClient {
    TestClient::new(router(), "order-service")
}

fn line(sku: &str, quantity: i64) -> Value {
    json!({ "sku": sku, "quantity": quantity })
}

#[tokio::test]
async fn list_returns_seeded_orders_in_id_order() {
    let reply = client().get("/orders").await;
    assert_eq!(reply.status, StatusCode::OK);
    let orders = reply.body.as_array().unwrap();
    let ids: Vec<u64> = orders.iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        orders[0],
        json!({
            "id": 1,
            "user_id": 1,
            "items": [
                { "sku": "BOOK-001", "name": "The Rust Programming Language", "quantity": 1, "unit_price": 39.99 },
                { "sku": "STICKER-004", "name": "Sticker pack", "quantity": 2, "unit_price": 4.0 }
            ],
            "total": 47.99
        })
    );
}

#[tokio::test]
async fn list_of_empty_book_is_empty_array() {
    let app = router_with_state(AppState::new(Catalogue::seeded(), OrderBook::empty()));
    let reply = TestClient::new(app, "order-service").get("/orders").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!([]));
}

#[tokio::test]
async fn get_by_id_returns_the_order() {
    let reply = client().get("/orders/2").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["id"], 2);
    assert_eq!(reply.body["user_id"], 2);
    assert_eq!(
        reply.body["items"],
        json!([
            { "sku": "MUG-002", "name": "Ferris mug", "quantity": 2, "unit_price": 12.5 }
        ])
    );
    assert_eq!(reply.body["total"], 25.0);
}

#[tokio::test]
async fn unknown_id_is_404_json() {
    check_an_unknown_id_is_json_404(&client(), "/orders/42", "order 42 not found").await;
}

#[tokio::test]
async fn non_numeric_id_is_400_json() {
    check_non_numeric_ids_are_json_400(&client(), "/orders").await;
}

#[tokio::test]
async fn items_lists_the_catalogue_by_sku() {
    let reply = client().get("/items").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!([
            { "sku": "BOOK-001", "name": "The Rust Programming Language", "price": 39.99 },
            { "sku": "MUG-002", "name": "Ferris mug", "price": 12.5 },
            { "sku": "STICKER-004", "name": "Sticker pack", "price": 4.0 },
            { "sku": "TEE-003", "name": "Gatehouse t-shirt", "price": 19.99 }
        ])
    );
}

#[tokio::test]
async fn create_returns_201_with_location_and_get_finds_it() {
    let client = client();
    let reply = client
        .post_json(
            "/orders",
            &json!({ "user_id": 3, "items": [line("TEE-003", 3), line(" MUG-002 ", 1)] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "id": 3,
            "user_id": 3,
            "items": [
                { "sku": "TEE-003", "name": "Gatehouse t-shirt", "quantity": 3, "unit_price": 19.99 },
                { "sku": "MUG-002", "name": "Ferris mug", "quantity": 1, "unit_price": 12.5 }
            ],
            "total": 72.47
        })
    );
    assert_eq!(reply.headers[header::LOCATION], "/orders/3");

    let fetched = client.get("/orders/3").await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, reply.body);
    assert_eq!(client.get("/orders").await.len(), 3);
}

#[tokio::test]
async fn create_accepts_quantity_bounds() {
    let reply = client()
        .post_json(
            "/orders",
            &json!({ "user_id": 1, "items": [line("BOOK-001", 1), line("STICKER-004", 1000)] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["total"], 4039.99);
}

#[tokio::test]
async fn create_rejects_each_validation_rule_with_field_error() {
    let ok_items = json!([line("BOOK-001", 1)]);
    let too_many: Vec<Value> = (0..101).map(|_| line("BOOK-001", 1)).collect();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "user_id missing",
            json!({ "items": ok_items }),
            "user_id",
            "is required",
        ),
        (
            "user_id null",
            json!({ "user_id": null, "items": ok_items }),
            "user_id",
            "is required",
        ),
        (
            "user_id zero",
            json!({ "user_id": 0, "items": ok_items }),
            "user_id",
            "must be greater than 0",
        ),
        (
            "user_id negative",
            json!({ "user_id": -5, "items": ok_items }),
            "user_id",
            "must be greater than 0",
        ),
        (
            "items missing",
            json!({ "user_id": 1 }),
            "items",
            "is required",
        ),
        (
            "items empty",
            json!({ "user_id": 1, "items": [] }),
            "items",
            "must not be empty",
        ),
        (
            "items too many",
            json!({ "user_id": 1, "items": too_many }),
            "items",
            "must have at most 100 entries",
        ),
        (
            "sku missing",
            json!({ "user_id": 1, "items": [{ "quantity": 1 }] }),
            "items[0].sku",
            "is required",
        ),
        (
            "sku blank",
            json!({ "user_id": 1, "items": [line("  ", 1)] }),
            "items[0].sku",
            "must not be empty",
        ),
        (
            "sku unknown",
            json!({ "user_id": 1, "items": [line("BOOK-001", 1), line("NOPE-9", 1)] }),
            "items[1].sku",
            "unknown sku \"NOPE-9\"; see GET /items",
        ),
        (
            "sku duplicated",
            json!({ "user_id": 1, "items": [line("BOOK-001", 1), line("MUG-002", 1), line("BOOK-001", 2)] }),
            "items[2].sku",
            "duplicates items[0].sku",
        ),
        (
            "quantity missing",
            json!({ "user_id": 1, "items": [{ "sku": "BOOK-001" }] }),
            "items[0].quantity",
            "is required",
        ),
        (
            "quantity zero",
            json!({ "user_id": 1, "items": [line("BOOK-001", 0)] }),
            "items[0].quantity",
            "must be between 1 and 1000",
        ),
        (
            "quantity negative",
            json!({ "user_id": 1, "items": [line("BOOK-001", -3)] }),
            "items[0].quantity",
            "must be between 1 and 1000",
        ),
        (
            "quantity too large",
            json!({ "user_id": 1, "items": [line("BOOK-001", 1001)] }),
            "items[0].quantity",
            "must be between 1 and 1000",
        ),
    ];
    let client = client();
    for (case, body, field, message) in cases {
        let reply = client.post_json("/orders", &body).await;
        reply.assert_field_errors(&[(field, message)], case);
    }
    // Nothing invalid was stored.
    assert_eq!(client.get("/orders").await.len(), 2);
}

#[tokio::test]
async fn create_reports_all_invalid_fields_at_once() {
    let reply = client()
        .post_json(
            "/orders",
            &json!({
                "user_id": 0,
                "items": [line("", 5), line("MUG-002", 0), { "sku": "NOPE" }]
            }),
        )
        .await;
    reply.assert_field_errors(
        &[
            ("user_id", "must be greater than 0"),
            ("items[0].sku", "must not be empty"),
            ("items[1].quantity", "must be between 1 and 1000"),
            ("items[2].sku", "unknown sku \"NOPE\"; see GET /items"),
            ("items[2].quantity", "is required"),
        ],
        "several lines",
    );
    assert_eq!(reply.body["message"], "5 invalid fields");
}

#[tokio::test]
async fn malformed_json_is_400_json() {
    check_malformed_json_is_json_400(&client(), "/orders", &["{\"user_id\": 1,", "", "[1,"]).await;
}

#[tokio::test]
async fn wrongly_typed_json_is_422_json() {
    let cases = [
        (
            json!({ "user_id": "1", "items": [] }),
            "user_id: invalid type",
        ),
        (
            json!({ "user_id": 1.5, "items": [] }),
            "user_id: invalid type",
        ),
        (
            json!({ "user_id": 1, "items": { "sku": "BOOK-001" } }),
            "items: invalid type",
        ),
        (
            json!({ "user_id": 1, "items": [{ "sku": 1, "quantity": 1 }] }),
            "items[0].sku",
        ),
    ];
    for (body, expected) in cases {
        let reply = client().post_json("/orders", &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.body["error"], "invalid body", "{body}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let reply = client().post_json("/orders", &json!([1, []])).await;
    assert_eq!(
        reply.body,
        json!({ "error": "invalid body", "message": "expected a JSON object" })
    );
}

#[tokio::test]
async fn wrong_content_type_is_415_json() {
    let body = r#"{"user_id":1,"items":[{"sku":"BOOK-001","quantity":1}]}"#;
    for content_type in [None, Some("text/plain"), Some("multipart/form-data")] {
        let reply = client()
            .send("POST", "/orders", content_type.map(|ct| (ct, body)))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(reply.body["error"], "unsupported media type");
    }
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    check_unknown_routes_are_json_404(
        &client(),
        &["/", "/users", "/orders/1/items", "/items/BOOK-001"],
    )
    .await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    check_a_wrong_method_is_json_405(&client(), "PUT", "/items").await;
}

#[tokio::test]
async fn traceparent_request_is_served() {
    check_a_traceparent_request_is_served(router(), "/orders/1", "order-service").await;
}

#[tokio::test]
async fn health_is_up() {
    check_health_is_up(&client()).await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    check_the_openapi_document_lists(
        &client(),
        env!("CARGO_PKG_VERSION"),
        &[
            ("GET", "/orders"),
            ("POST", "/orders"),
            ("GET", "/orders/{id}"),
            ("GET", "/items"),
            ("GET", "/health"),
            ("GET", "/openapi.json"),
        ],
    )
    .await;
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    check_every_documented_operation_is_routed(&client()).await;
}

#[test]
fn healthcheck_subcommand_against_real_binary() {
    check_the_binary_serves_its_healthcheck_and_stops_on_sigterm(env!(
        "CARGO_BIN_EXE_order-service"
    ));
}
