//! The shared skeleton of the services' hand-written OpenAPI 3.0 documents.
//!
//! Each service writes its own `paths` and `schemas` with `serde_json::json!`;
//! [`document`] adds the `info` block, the shared routes (`/health`,
//! `/openapi.json`) and the shared schemas (`Error`, `FieldError`, `Health`).
//! Hand-written rather than derived: two tiny services do not justify a
//! code-generation dependency, and the gateway only needs the document to be
//! accurate, which the services' tests check route by route.

use serde_json::{Map, Value, json};

use crate::ServiceInfo;

/// The OpenAPI version the documents declare.
pub const OPENAPI_VERSION: &str = "3.0.3";

/// Builds the full document from a service's own `paths` and `schemas` (both
/// JSON objects).
///
/// # Panics
/// If `paths` or `schemas` is not a JSON object — a programming error caught
/// by the services' tests.
pub fn document(info: ServiceInfo, paths: Value, schemas: Value) -> Value {
    let mut all_paths = into_object(paths, "paths");
    all_paths.insert(
        "/health".into(),
        json!({ "get": {
            "summary": "Liveness probe",
            "operationId": "health",
            "responses": { "200": json_response("Service is up", "Health") }
        }}),
    );
    all_paths.insert(
        "/openapi.json".into(),
        json!({ "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": { "200": {
                "description": "OpenAPI 3.0 document",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }}
        }}),
    );

    let mut all_schemas = into_object(schemas, "schemas");
    let error = json!({
        "error": { "type": "string", "description": "Stable kind, e.g. `not found`" },
        "message": { "type": "string", "description": "Human-readable detail" },
        "fields": {
            "type": "array",
            "description": "Present only when `error` is `validation failed`",
            "items": { "$ref": "#/components/schemas/FieldError" }
        }
    });
    let field_error = json!({
        "field": { "type": "string", "example": "items[0].quantity" },
        "message": { "type": "string" }
    });
    let health = json!({ "status": { "type": "string", "enum": ["UP"] } });
    all_schemas.insert("Error".into(), object(&["error", "message"], error));
    all_schemas.insert(
        "FieldError".into(),
        object(&["field", "message"], field_error),
    );
    all_schemas.insert("Health".into(), object(&["status"], health));

    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "paths": all_paths,
        "components": { "schemas": all_schemas },
    })
}

/// An object schema: its `required` fields and its `properties` (a JSON object of
/// property name to schema).
pub fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// A `200`-style response object whose JSON body is `#/components/schemas/{schema}`.
pub fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref(schema) } }
    })
}

/// A response object whose JSON body is an array of `schema`.
pub fn json_array_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": {
            "type": "array",
            "items": schema_ref(schema)
        }}}
    })
}

/// An error response object (body: the shared `Error` schema).
pub fn error_response(description: &str) -> Value {
    json_response(description, "Error")
}

/// A `GET` operation that answers every record of a collection: 200 with a JSON array
/// of `schema` (`description` says which, in what order).
pub fn list_operation(summary: &str, operation_id: &str, description: &str, schema: &str) -> Value {
    json!({
        "summary": summary,
        "operationId": operation_id,
        "responses": { "200": json_array_response(description, schema) }
    })
}

/// The `POST` operation that creates a `schema` record (a `noun`, e.g. `user`) from a
/// JSON `body_schema`: 201 with the new record and its `Location`, and the answers
/// [`JsonBody`](crate::JsonBody) and validation give a bad body (400, 415, 422). A
/// service adds the errors of its own rules to `responses`.
pub fn create_operation(
    summary: &str,
    operation_id: &str,
    noun: &str,
    body_schema: &str,
    schema: &str,
) -> Value {
    json!({
        "summary": summary,
        "operationId": operation_id,
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": schema_ref(body_schema) } }
        },
        "responses": {
            "201": {
                "description": format!("Created; `Location` is the new {noun}'s URL"),
                "headers": { "Location": { "schema": { "type": "string" } } },
                "content": { "application/json": { "schema": schema_ref(schema) } }
            },
            "400": error_response("Malformed JSON"),
            "415": error_response("Body is not application/json"),
            "422": error_response("Invalid fields (see `fields`) or wrongly typed body")
        }
    })
}

/// The `GET /{records}/{id}` operation of a `schema` record (a `noun`): 200 with it,
/// 400 for an id that is not a number ([`Id`](crate::Id)), 404 for an unknown one.
pub fn get_by_id_operation(summary: &str, operation_id: &str, noun: &str, schema: &str) -> Value {
    json!({
        "summary": summary,
        "operationId": operation_id,
        "parameters": [id_parameter(&format!("{schema} id"))],
        "responses": {
            "200": json_response(&format!("The {noun}"), schema),
            "400": error_response("Id is not a non-negative integer"),
            "404": error_response(&format!("No such {noun}"))
        }
    })
}

/// `{"$ref": "#/components/schemas/{schema}"}`.
pub fn schema_ref(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

/// The `{id}` path parameter every by-id route uses.
pub fn id_parameter(description: &str) -> Value {
    json!({
        "name": "id",
        "in": "path",
        "required": true,
        "description": description,
        "schema": { "type": "integer", "format": "int64", "minimum": 0 }
    })
}

fn into_object(value: Value, what: &str) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("OpenAPI {what} must be a JSON object, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_merges_shared_parts() {
        let info = ServiceInfo {
            name: "x",
            version: "1.2.3",
            title: "X",
            description: "d",
        };
        let doc = document(
            info,
            json!({ "/x": { "get": {} } }),
            json!({ "X": { "type": "object" } }),
        );
        assert_eq!(doc["openapi"], OPENAPI_VERSION);
        assert_eq!(doc["info"]["version"], "1.2.3");
        for path in ["/x", "/health", "/openapi.json"] {
            assert!(doc["paths"].get(path).is_some(), "missing {path}");
        }
        for schema in ["X", "Error", "FieldError", "Health"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "missing {schema}"
            );
        }
    }
}
