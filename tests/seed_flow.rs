//! The seed's flow, as the README tells it, with the clients a user has: curl for the
//! token endpoint, grpcurl for the admin API. control and token-service run as separate
//! processes sharing a real NATS JetStream log.

mod support;

use gatehouse_testkit::grpc::{grpcurl, grpcurl_ok};
use gatehouse_testkit::nats::NatsServer;
use serde_json::json;
use support::{ADMIN_ID, ADMIN_SECRET, ControlPlane, curl_json};

#[test]
fn admin_token_apis_app_keys_then_a_verifiable_application_token() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), &nats.url(), &[], &[]);
    let (https, admin_grpc) = (plane.https, plane.admin_target());
    let token_url = plane.token_url();

    // 1. An admin token, with curl.
    let admin = curl_json(&[
        "-d",
        "grant_type=client_credentials",
        "-u",
        &format!("{ADMIN_ID}:{ADMIN_SECRET}"),
        &token_url,
    ]);
    let admin_token = admin["access_token"]
        .as_str()
        .expect("admin access_token")
        .to_string();
    assert!(
        admin["scope"].as_str().unwrap().contains("apim:api_create"),
        "{admin}"
    );

    // 2. The publisher's and devportal's steps, with grpcurl.
    let call = |method: &str, body: serde_json::Value| {
        grpcurl_ok(&admin_grpc, &admin_token, method, &body.to_string())
    };
    let client_api = call(
        "CreateApi",
        json!({"definition": {"name": "ClientServiceAPI", "context": "/client", "version": "1.0.0",
            "resources": [{"method": "GET", "path": "/users", "scopes": ["read:users"]}],
            "endpoints": {"production": {"urls": ["http://localhost:8001"]}},
            "subscriptionTiers": ["Gold"]}}),
    );
    let order_api = call(
        "CreateApi",
        json!({"definition": {"name": "OrderServiceAPI", "context": "/orders", "version": "1.0.0",
            "resources": [{"method": "GET", "path": "/items"}, {"method": "GET", "path": "/orders"}],
            "endpoints": {"production": {"urls": ["http://localhost:8002"]}},
            "subscriptionTiers": ["Gold"]}}),
    );
    for api in [&client_api, &order_api] {
        let published = call(
            "ChangeLifecycle",
            json!({"apiId": api["id"], "target": "PUBLISHED"}),
        );
        assert_eq!(published["lifecycle"], "PUBLISHED");
        assert_eq!(
            published["createdBy"], ADMIN_ID,
            "events record the admin client"
        );
    }
    let app = call("CreateApplication", json!({"name": "MyPythonApp"}));
    let mut subscriptions = Vec::new();
    for api in [&client_api, &order_api] {
        subscriptions.push(call(
            "Subscribe",
            json!({"applicationId": app["id"], "apiId": api["id"], "tier": "Gold"}),
        ));
    }
    // WSO2's scope-to-role binding: the admin grants the application the scope on
    // ClientServiceAPI (a scope no resource declares is refused, naming it).
    let granted = call(
        "GrantScopes",
        json!({"subscriptionId": subscriptions[0]["id"], "scopes": ["read:users"]}),
    );
    assert_eq!(granted["grantedScopes"], json!(["read:users"]));
    let undeclared = grpcurl(
        &admin_grpc,
        &admin_token,
        "GrantScopes",
        &json!({"subscriptionId": subscriptions[0]["id"], "scopes": ["write:users"]}).to_string(),
    )
    .unwrap_err();
    assert!(
        undeclared.contains("InvalidArgument") && undeclared.contains("scopes[0]"),
        "{undeclared}"
    );
    let keys = call(
        "GenerateKeys",
        json!({"applicationId": app["id"], "keyType": "PRODUCTION"}),
    );
    let key = keys["consumerKey"].as_str().expect("consumerKey");
    let secret = keys["consumerSecret"].as_str().expect("consumerSecret");
    assert!(!key.is_empty() && secret.len() >= 32);

    // 3. The seed's own command: a token for MyPythonApp.
    let reply = curl_json(&[
        "-d",
        "grant_type=client_credentials&scope=read:users unknown:scope",
        "-u",
        &format!("{key}:{secret}"),
        &token_url,
    ]);
    assert_eq!(reply["token_type"], "Bearer");
    assert!(reply["expires_in"].as_u64().unwrap() > 0);
    let scopes: Vec<&str> = reply["scope"].as_str().unwrap().split(' ').collect();
    assert!(
        scopes.contains(&"read:users"),
        "a granted scope is in the token: {scopes:?}"
    );
    assert!(
        !scopes.contains(&"unknown:scope"),
        "an unknown scope is dropped: {scopes:?}"
    );
    let jwt = reply["access_token"].as_str().unwrap();

    // 4. It verifies against the published JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(curl_json(&[&format!(
        "https://127.0.0.1:{https}/oauth2/jwks"
    )]))
    .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let kid = header.kid.clone().expect("kid in the header");
    let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["gatehouse-apis"]);
    validation.set_issuer(&["https://localhost:9443/oauth2/token"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the application token verifies against /oauth2/jwks")
    .claims;
    assert_eq!(claims["client_id"], key);
    assert_eq!(claims["application_name"], "MyPythonApp");
    assert_eq!(claims["key_type"], "PRODUCTION");
    for claim in [
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "scope",
        "application_id",
        "application_tier",
    ] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
}
