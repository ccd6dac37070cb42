//! A tiny HTTPS client for talking to Gatehouse's own endpoints on this machine.
//!
//! Gatehouse generates self-signed certificates on first start, so a local client cannot
//! verify them against a CA: like `curl -k`, this client accepts any certificate (the
//! handshake signatures are still checked). Use it only for Gatehouse's own endpoints.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A response: status, headers and the whole body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request (`https://` or `http://`) and reads the whole answer.
pub async fn send(request: http::Request<Full<Bytes>>) -> anyhow::Result<Reply> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(gatehouse_node::tls::accept_any_certificate())
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri = request.uri().clone();
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach {uri}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply { status, body })
}

/// `POST {token_url}/oauth2/token` with the client credentials grant; the access token.
pub async fn client_credentials_token(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    scope: Option<&str>,
) -> anyhow::Result<String> {
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}"));
    let mut form = String::from("grant_type=client_credentials");
    if let Some(scope) = scope {
        form.push_str("&scope=");
        form.push_str(&scope.replace(' ', "+"));
    }
    let url = format!("{}/oauth2/token", token_url.trim_end_matches('/'));
    let request = http::Request::post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(Full::new(Bytes::from(form)))?;
    let reply = send(request).await?;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).with_context(|| {
        format!(
            "{url} answered {} with a body that is not JSON",
            reply.status
        )
    })?;
    if reply.status != 200 {
        anyhow::bail!(
            "{url} refused the client credentials of {client_id}: {} {}",
            json["error"].as_str().unwrap_or("?"),
            json["error_description"].as_str().unwrap_or("")
        );
    }
    json["access_token"]
        .as_str()
        .map(str::to_string)
        .context("the token endpoint's answer has no access_token")
}
