//! A tiny HTTPS client for talking to Gatehouse's own endpoints on this machine.
//!
//! Gatehouse generates self-signed certificates on first start, so a local client cannot
//! verify them against a CA: like `curl -k`, this client accepts any certificate (the
//! handshake signatures are still checked). Use it only for Gatehouse's own endpoints.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A response: status, headers and the whole body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request (`https://` or `http://`) and reads the whole answer.
pub async fn send(request: http::Request<Full<Bytes>>) -> anyhow::Result<Reply> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
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
