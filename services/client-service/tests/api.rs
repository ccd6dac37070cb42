//! End-to-end tests of the users API: the router in-process via
//! `tower::ServiceExt::oneshot` (wrapped by `gatehouse_testkit::service::TestClient`,
//! which also asserts every reply is JSON with `X-Backend: client-service`),
//! plus one test of the real binary. The cases both backends share (JSON errors, health,
//! OpenAPI, trace context, the binary's life) are the test kit's `check_*` functions.

use axum::http::{StatusCode, header};
use client_service::{AppState, UserStore, router, router_with_state};
use gatehouse_testkit::service::{
    TestClient, check_a_traceparent_request_is_served, check_a_wrong_method_is_json_405,
    check_an_unknown_id_is_json_404, check_every_documented_operation_is_routed,
    check_health_is_up, check_malformed_json_is_json_400, check_non_numeric_ids_are_json_400,
    check_the_binary_serves_its_healthcheck_and_stops_on_sigterm, check_the_openapi_document_lists,
    check_unknown_routes_are_json_404,
};
use serde_json::{Value, json};

fn client() -> TestClient {
    TestClient::new(router(), "client-service")
}

#[tokio::test]
async fn list_returns_seeded_users_in_id_order() {
    let reply = client().get("/users").await;
    assert_eq!(reply.status, StatusCode::OK);
    let users = reply.body.as_array().unwrap();
    let ids: Vec<u64> = users.iter().map(|u| u["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        users[0],
        json!({ "id": 1, "name": "Ada Lovelace", "email": "ada@example.com" })
    );
}

#[tokio::test]
async fn list_of_empty_store_is_empty_array() {
    let app = router_with_state(AppState::new(UserStore::empty()));
    let reply = TestClient::new(app, "client-service").get("/users").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!([]));
}

#[tokio::test]
async fn get_by_id_returns_the_user() {
    let reply = client().get("/users/2").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({ "id": 2, "name": "Alan Turing", "email": "alan@example.com" })
    );
}

#[tokio::test]
async fn unknown_id_is_404_json() {
    check_an_unknown_id_is_json_404(&client(), "/users/42", "user 42 not found").await;
}

#[tokio::test]
async fn non_numeric_id_is_400_json() {
    check_non_numeric_ids_are_json_400(&client(), "/users").await;
}

#[tokio::test]
async fn create_returns_201_with_location_and_get_finds_it() {
    let client = client();
    let reply = client
        .post_json(
            "/users",
            &json!({ "name": "  Barbara Liskov ", "email": "barbara@example.com" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({ "id": 4, "name": "Barbara Liskov", "email": "barbara@example.com" })
    );
    assert_eq!(reply.headers[header::LOCATION], "/users/4");

    let fetched = client.get("/users/4").await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, reply.body);
    assert_eq!(client.get("/users").await.len(), 4);

    let second = client
        .post_json(
            "/users",
            &json!({ "name": "Edsger Dijkstra", "email": "edsger@example.com" }),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["id"], 5);
    assert_eq!(second.headers[header::LOCATION], "/users/5");
}

#[tokio::test]
async fn create_rejects_each_validation_rule_with_field_error() {
    let long_name = "n".repeat(101);
    let long_email = format!("{}@example.com", "a".repeat(250));
    let ok = "valid@example.com";
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "name missing",
            json!({ "email": ok }),
            "name",
            "is required",
        ),
        (
            "name null",
            json!({ "name": null, "email": ok }),
            "name",
            "is required",
        ),
        (
            "name blank",
            json!({ "name": " \t ", "email": ok }),
            "name",
            "must not be empty",
        ),
        (
            "name too long",
            json!({ "name": long_name, "email": ok }),
            "name",
            "must be at most 100 characters",
        ),
        (
            "name control char",
            json!({ "name": "Bad\u{0007}Name", "email": ok }),
            "name",
            "must not contain control characters",
        ),
        (
            "email missing",
            json!({ "name": "Ok" }),
            "email",
            "is required",
        ),
        (
            "email blank",
            json!({ "name": "Ok", "email": "" }),
            "email",
            "must not be empty",
        ),
        (
            "email too long",
            json!({ "name": "Ok", "email": long_email }),
            "email",
            "must be at most 254 characters",
        ),
        (
            "email whitespace",
            json!({ "name": "Ok", "email": "a b@example.com" }),
            "email",
            "must not contain whitespace",
        ),
        (
            "email without @",
            json!({ "name": "Ok", "email": "nobody.example.com" }),
            "email",
            "must contain exactly one '@'",
        ),
        (
            "email with two @",
            json!({ "name": "Ok", "email": "a@b@example.com" }),
            "email",
            "must contain exactly one '@'",
        ),
        (
            "email without local part",
            json!({ "name": "Ok", "email": "@example.com" }),
            "email",
            "must have text before the '@'",
        ),
        (
            "email without domain",
            json!({ "name": "Ok", "email": "someone@" }),
            "email",
            "must have text after the '@'",
        ),
        (
            "email with undotted domain",
            json!({ "name": "Ok", "email": "someone@localhost" }),
            "email",
            "must have a domain like example.com after the '@'",
        ),
    ];
    let client = client();
    for (case, body, field, message) in cases {
        let reply = client.post_json("/users", &body).await;
        reply.assert_field_errors(&[(field, message)], case);
        assert_eq!(reply.body["message"], "1 invalid field", "{case}");
    }
    // Nothing invalid was stored.
    assert_eq!(client.get("/users").await.len(), 3);
}

#[tokio::test]
async fn create_reports_all_invalid_fields_at_once() {
    let reply = client().post_json("/users", &json!({})).await;
    reply.assert_field_errors(
        &[("name", "is required"), ("email", "is required")],
        "empty object",
    );
    assert_eq!(reply.body["message"], "2 invalid fields");
}

#[tokio::test]
async fn duplicate_email_is_409() {
    let client = client();
    let reply = client
        .post_json(
            "/users",
            &json!({ "name": "Ada Again", "email": "ADA@example.com" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.body,
        json!({ "error": "conflict", "message": "email is already used by user 1" })
    );
    assert_eq!(client.get("/users").await.len(), 3);
}

#[tokio::test]
async fn malformed_json_is_400_json() {
    check_malformed_json_is_json_400(&client(), "/users", &["{\"name\": \"Ada\",", "", "nope"])
        .await;
}

#[tokio::test]
async fn wrongly_typed_json_is_422_json() {
    let reply = client()
        .post_json(
            "/users",
            &json!({ "name": 7, "email": "seven@example.com" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["error"], "invalid body");
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.contains("name: invalid type"), "{message}");

    // serde alone would read a struct from an array of its field values.
    let reply = client()
        .post_json("/users", &json!(["Eve", "eve@example.com"]))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.body,
        json!({ "error": "invalid body", "message": "expected a JSON object" })
    );
}

#[tokio::test]
async fn wrong_content_type_is_415_json() {
    let body = r#"{"name":"Ada","email":"ada2@example.com"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let reply = client()
            .send("POST", "/users", content_type.map(|ct| (ct, body)))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(reply.body["error"], "unsupported media type");
    }
    // Media-type parameters are fine.
    let reply = client()
        .send(
            "POST",
            "/users",
            Some(("application/json; charset=utf-8", body)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    check_unknown_routes_are_json_404(&client(), &["/", "/nope", "/users/1/orders", "/users/"])
        .await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    check_a_wrong_method_is_json_405(&client(), "DELETE", "/users/1").await;
}

#[tokio::test]
async fn traceparent_request_is_served() {
    check_a_traceparent_request_is_served(router(), "/users/1", "client-service").await;
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
            ("GET", "/users"),
            ("POST", "/users"),
            ("GET", "/users/{id}"),
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
        "CARGO_BIN_EXE_client-service"
    ));
}
