//! Importing documents nobody here wrote (the OpenAPI Initiative's examples in
//! `../shared/openapi`), the seed's own backend's document, a WSO2 apictl project, and
//! bad input: the resources each import yields, or the problems at their JSON pointers.

use std::path::PathBuf;

use gatehouse_domain::{Command, State, handle};
use gatehouse_gitops::openapi::{self, ExportOptions, ImportOptions};
use gatehouse_gitops::{ImportError, apictl};
use gatehouse_proto::events::{ApiDefinition, endpoint_group, lifecycle};

/// `../shared/openapi` from the repository root.
fn shared(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/openapi");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn with_context(context: &str) -> ImportOptions {
    ImportOptions {
        context: Some(context.into()),
        max_resources: 1000,
        ..Default::default()
    }
}

/// (method, path) of every resource.
fn routes(definition: &ApiDefinition) -> Vec<(String, String)> {
    definition
        .resources
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

/// The domain accepts the definition as a new API (the same check control makes).
fn accepted(definition: &ApiDefinition) {
    let command = Command::CreateApi {
        api_id: "api".into(),
        definition: definition.clone(),
    };
    handle(&State::new(), command).unwrap_or_else(|e| panic!("refused: {e}"));
}

fn problems(e: &ImportError) -> Vec<&str> {
    e.problems.iter().map(|p| p.pointer.as_str()).collect()
}

#[test]
fn petstore_becomes_an_api_with_its_paths_methods_and_server() {
    let imported = openapi::import_text(
        "v3.0-petstore.yaml",
        &shared("v3.0-petstore.yaml"),
        &with_context("/pets"),
    )
    .unwrap();
    let d = &imported.definition;
    assert_eq!(
        (d.name.as_str(), d.version.as_str(), d.context.as_str()),
        ("Swagger Petstore", "1.0.0", "/pets")
    );
    assert_eq!(
        routes(d),
        pairs(&[
            ("GET", "/pets"),
            ("POST", "/pets"),
            ("GET", "/pets/{petId}")
        ])
    );
    assert!(
        d.resources
            .iter()
            .all(|r| !r.auth_disabled && r.scopes.is_empty())
    );
    let production = d.endpoints.as_ref().unwrap().production.as_ref().unwrap();
    assert_eq!(production.urls, ["http://petstore.swagger.io/v1"]);
    assert_eq!(imported.resource_pointers[2], "/paths/~1pets~1{petId}/get");
    accepted(d);
}

#[test]
fn petstore_expanded_keeps_delete_and_the_path_template() {
    let imported = openapi::import_text(
        "v3.0-petstore-expanded.yaml",
        &shared("v3.0-petstore-expanded.yaml"),
        &with_context("/petstore"),
    )
    .unwrap();
    assert_eq!(
        routes(&imported.definition),
        pairs(&[
            ("GET", "/pets"),
            ("POST", "/pets"),
            ("GET", "/pets/{id}"),
            ("DELETE", "/pets/{id}")
        ])
    );
    accepted(&imported.definition);
}

#[test]
fn link_example_keeps_templates_of_several_parameters_and_has_no_backend() {
    let imported = openapi::import_text(
        "v3.0-link-example.yaml",
        &shared("v3.0-link-example.yaml"),
        &with_context("/bitbucket"),
    )
    .unwrap();
    assert_eq!(
        routes(&imported.definition),
        pairs(&[
            ("GET", "/2.0/repositories/{username}"),
            ("GET", "/2.0/repositories/{username}/{slug}"),
            ("GET", "/2.0/repositories/{username}/{slug}/pullrequests"),
            (
                "GET",
                "/2.0/repositories/{username}/{slug}/pullrequests/{pid}"
            ),
            (
                "POST",
                "/2.0/repositories/{username}/{slug}/pullrequests/{pid}/merge"
            ),
            ("GET", "/2.0/users/{username}"),
        ])
    );
    assert_eq!(imported.definition.endpoints, None, "no servers: none");
    accepted(&imported.definition);
}

#[test]
fn webhooks_only_are_reported_at_their_pointer() {
    let e = openapi::import_text(
        "v3.1-webhook-example.yaml",
        &shared("v3.1-webhook-example.yaml"),
        &with_context("/hooks"),
    )
    .unwrap_err();
    assert_eq!(problems(&e), ["/webhooks/newPet"], "{e}");
    assert!(e.to_string().contains("v3.1-webhook-example.yaml"), "{e}");
}

#[test]
fn client_services_own_document_imports_as_the_seeds_api() {
    let text = serde_json::to_string_pretty(&client_service::api::openapi()).unwrap();
    let imported = openapi::import_text("openapi.json", &text, &with_context("/client")).unwrap();
    let r = routes(&imported.definition);
    for route in [
        ("GET", "/users"),
        ("POST", "/users"),
        ("GET", "/users/{id}"),
        ("GET", "/health"),
    ] {
        assert!(
            r.contains(&(route.0.into(), route.1.into())),
            "{route:?} in {r:?}"
        );
    }
    accepted(&imported.definition);
}

#[test]
fn security_requirements_become_authentication_and_scopes() {
    let doc = r##"
openapi: 3.1.0
info: {title: Secured, version: "2"}
x-gatehouse-context: /secured
servers: [{url: "https://{host}/api", variables: {host: {default: backend.example}}}]
security: [{oauth: []}]
components:
  securitySchemes:
    oauth: {type: oauth2, flows: {clientCredentials: {tokenUrl: https://t, scopes: {a: "", b: ""}}}}
    bearer: {type: http, scheme: bearer}
paths:
  /open: {get: {security: [], responses: {}}}
  /any: {get: {responses: {}}}
  /either: {get: {security: [{oauth: [a]}, {oauth: [b]}], responses: {}}}
  /bearer: {get: {security: [{bearer: []}], responses: {}}}
  /wso2: {get: {x-auth-type: None, responses: {}}, post: {x-scope: a, x-throttling-tier: 10KPerMin, responses: {}}}
"##;
    let imported = openapi::import_text("secured.yaml", doc, &ImportOptions::default()).unwrap();
    let d = &imported.definition;
    assert_eq!(d.context, "/secured");
    let find = |m: &str, p: &str| {
        d.resources
            .iter()
            .find(|r| r.method == m && r.path == p)
            .unwrap_or_else(|| panic!("{m} {p}"))
    };
    assert!(find("GET", "/open").auth_disabled);
    assert!(!find("GET", "/any").auth_disabled && find("GET", "/any").scopes.is_empty());
    assert_eq!(find("GET", "/either").scopes, ["a", "b"]);
    assert!(!find("GET", "/bearer").auth_disabled);
    assert!(find("GET", "/wso2").auth_disabled);
    assert_eq!(find("POST", "/wso2").scopes, ["a"]);
    assert_eq!(find("POST", "/wso2").throttling_tier, "10KPerMin");
    assert_eq!(
        d.endpoints
            .as_ref()
            .unwrap()
            .production
            .as_ref()
            .unwrap()
            .urls,
        ["https://backend.example/api"]
    );
    accepted(d);
}

#[test]
fn what_cannot_be_represented_is_reported_at_every_pointer_and_nothing_is_imported() {
    let doc = r##"
openapi: 3.0.3
info: {title: Bad, version: "1"}
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-Key}
    oauth: {type: oauth2, flows: {clientCredentials: {tokenUrl: https://t, scopes: {}}}}
paths:
  /files/{name}.json: {get: {responses: {}}}
  /trailing/: {get: {responses: {}}}
  /ok:
    trace: {responses: {}}
    get: {security: [{key: []}], responses: {}}
    put: {security: [{oauth: [a, b]}], responses: {}}
    post: {security: [{}, {oauth: []}], responses: {}}
    delete:
      responses: {"200": {$ref: "#/components/responses/Missing"}}
      callbacks: {onDone: {}}
  /other: {$ref: "other.yaml#/paths/~1x"}
"##;
    let e = openapi::import_text("bad.yaml", doc, &ImportOptions::default()).unwrap_err();
    let at = problems(&e);
    for expected in [
        "/x-gatehouse-context",
        "/paths/~1files~1{name}.json",
        "/paths/~1trailing~1",
        "/paths/~1ok/trace",
        "/paths/~1ok/get/security/0/key",
        "/paths/~1ok/put/security/0/oauth",
        "/paths/~1ok/post/security",
        "/paths/~1ok/delete/responses/200/$ref",
        "/paths/~1ok/delete/callbacks/onDone",
        "/paths/~1other/$ref",
    ] {
        assert!(at.contains(&expected), "{expected} not in {at:#?}");
    }
}

#[test]
fn malformed_documents_name_the_line() {
    let e = openapi::import_text(
        "broken.yaml",
        "openapi: 3.0.0\ninfo: [\n",
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(e.problems[0].message.starts_with("broken.yaml:"), "{e}");
    let e = openapi::import_text(
        "old.json",
        r#"{"swagger": "2.0"}"#,
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert_eq!(problems(&e), ["/swagger"]);
}

#[test]
fn too_many_operations_are_refused() {
    let mut options = with_context("/pets");
    options.max_resources = 2;
    let e = openapi::import_text(
        "v3.0-petstore.yaml",
        &shared("v3.0-petstore.yaml"),
        &options,
    )
    .unwrap_err();
    assert_eq!(problems(&e), ["/paths"]);
    assert!(e.to_string().contains("--max-import-resources"), "{e}");
}

#[test]
fn an_export_describes_the_gateway_and_imports_back_to_the_same_resources() {
    let imported = openapi::import_text(
        "openapi.json",
        &serde_json::to_string(&client_service::api::openapi()).unwrap(),
        &with_context("/client"),
    )
    .unwrap();
    let mut definition = imported.definition;
    definition.resources[0].scopes = vec!["read:users".into(), "admin".into()];
    definition.resources[1].auth_disabled = true;
    let exported = openapi::export(
        &definition,
        &ExportOptions {
            gateway_url: "https://localhost:8243".into(),
            token_url: "https://localhost:9443/oauth2/token".into(),
        },
    );
    assert_eq!(
        exported["servers"][0]["url"],
        "https://localhost:8243/client/0.1.0"
    );
    let flow =
        &exported["components"]["securitySchemes"]["gatehouse"]["flows"]["clientCredentials"];
    assert_eq!(flow["tokenUrl"], "https://localhost:9443/oauth2/token");
    assert!(flow["scopes"]["read:users"].is_string());
    let users = &exported["paths"]["/users/{id}"]["get"];
    assert_eq!(users["parameters"][0]["name"], "id");
    let back = openapi::import("export", &exported, &ImportOptions::default()).unwrap();
    assert_eq!(back.definition.context, "/client");
    let mut expected = definition.resources.clone();
    let mut got = back.definition.resources.clone();
    for list in [&mut expected, &mut got] {
        for r in list.iter_mut() {
            r.scopes.sort();
        }
        list.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    }
    assert_eq!(got, expected);
}

fn pizza(file: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/PizzaShackAPI-1.0.0");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

#[test]
fn an_apictl_project_maps_operations_scopes_tiers_endpoints_and_lifecycle() {
    let swagger = pizza("Definitions/swagger.yaml");
    let project = apictl::import(
        "PizzaShackAPI-1.0.0",
        &pizza("api.yaml"),
        Some(("Definitions/swagger.yaml", &swagger)),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(project.lifecycle, lifecycle::State::Published);
    let d = &project.api.definition;
    assert_eq!(
        (d.name.as_str(), d.context.as_str(), d.version.as_str()),
        ("PizzaShackAPI", "/pizzashack", "1.0.0")
    );
    assert!(d.is_default_version);
    assert_eq!(d.subscription_tiers, ["Gold", "Unlimited"]);
    assert_eq!(d.api_throttling_tier, "10KPerMin");
    assert_eq!(
        routes(d),
        pairs(&[
            ("GET", "/menu"),
            ("POST", "/order"),
            ("GET", "/order/{orderId}"),
            ("GET", "/health")
        ])
    );
    assert_eq!(d.resources[0].scopes, ["read:menu"]);
    assert_eq!(d.resources[1].scopes, ["write:order"]);
    assert_eq!(d.resources[1].throttling_tier, "20KPerMin");
    assert!(d.resources[3].auth_disabled);
    let endpoints = d.endpoints.as_ref().unwrap();
    assert_eq!(
        endpoints.production.as_ref().unwrap().urls,
        ["https://localhost:9443/am/sample/pizzashack/v1/api/"]
    );
    assert_eq!(
        endpoints.sandbox.as_ref().unwrap().urls,
        ["https://localhost:9443/am/sample/pizzashack/v1/api/sandbox"]
    );
    assert_eq!(endpoints.timeout_ms, 30_000);
    assert!(d.cors.as_ref().unwrap().enabled);
    assert_eq!(d.cache.as_ref().unwrap().ttl_seconds, 120);
    assert_eq!(d.tags, ["pizza"]);
    accepted(d);
}

#[test]
fn what_an_apictl_project_cannot_bring_is_reported_in_api_yaml() {
    let text = pizza("api.yaml")
        .replace("type: HTTP", "type: GRAPHQL")
        .replace("    - oauth_basic_auth_api_key_mandatory", "    - api_key")
        .replace("endpoint_type: http", "endpoint_type: awslambda")
        .replace(
            "        - write:order\n      usedProductIds",
            "        - write:everything\n      usedProductIds",
        );
    let e = apictl::import("p", &text, None, &ImportOptions::default()).unwrap_err();
    let at = problems(&e);
    for expected in [
        "api.yaml#/data/type",
        "api.yaml#/data/securityScheme/1",
        "api.yaml#/data/endpointConfig/endpoint_type",
        "api.yaml#/data/operations/1/scopes/0",
    ] {
        assert!(at.contains(&expected), "{expected} not in {at:#?}");
    }
    let e = apictl::import("p", "id: {apiName: X}\n", None, &ImportOptions::default()).unwrap_err();
    assert_eq!(problems(&e), ["api.yaml#/data"]);
    let broken = pizza("Definitions/swagger.yaml")
        .replace("#/components/schemas/Order", "#/components/schemas/Ordr");
    let e = apictl::import(
        "p",
        &pizza("api.yaml"),
        Some(("Definitions/swagger.yaml", &broken)),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        problems(&e),
        [
            "Definitions/swagger.yaml#/paths/~1order/post/requestBody/content/application~1json/schema/$ref"
        ]
    );
    let _ = endpoint_group::Mode::Failover;
}
