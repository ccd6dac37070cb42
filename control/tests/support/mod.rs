//! Running the real `control` binary and talking to it with grpcurl and a tonic client,
//! as an admin holding a token signed by a key published on the log. The process, the
//! log's writer, the interceptor and grpcurl are the test kit's.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_node::pki::NodeRole;
use gatehouse_proto::admin::ListApisRequest;
use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use gatehouse_testkit::grpc::{AdminClient, Target, admin_client};
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::ports::free_addr;
use gatehouse_testkit::process::Process;
use gatehouse_testkit::world::{World, admin_claims};
use gatehouse_tokens::{ADMIN_AUDIENCE, ADMIN_SCOPES, SigningKeyPair};

pub use gatehouse_testkit::grpc::{Bearer, grpcurl_list};
pub use gatehouse_testkit::world::{LogLocation, now};

/// A signing key published on the log, and tokens signed with it.
pub struct AdminKeys {
    pub key: SigningKeyPair,
}

impl AdminKeys {
    /// Generates a key and publishes its public half on the log (keys published before
    /// keep verifying for a day), as token-service would; lets go of the log after.
    pub async fn publish(location: &LogLocation) -> AdminKeys {
        let world = World::on(location.open().await).await;
        AdminKeys {
            key: world.close().await,
        }
    }

    /// A token for `client_id` with `scopes`, valid from `iat` for an hour.
    pub fn token_at(&self, client_id: &str, scopes: &[&str], audience: &str, iat: i64) -> String {
        self.key
            .sign(&admin_claims(client_id, scopes, audience, iat))
            .unwrap()
    }

    pub fn token(&self, client_id: &str, scopes: &[&str]) -> String {
        self.token_at(client_id, scopes, ADMIN_AUDIENCE, now())
    }

    /// A token with every admin scope.
    pub fn admin_token(&self) -> String {
        self.token("test-admin", ADMIN_SCOPES)
    }
}

pub type Client = AdminClient;

/// A `control` child process, killed on drop.
pub struct ControlProcess {
    process: Process,
    pub addr: SocketAddr,
    /// Where control serves Prometheus metrics.
    pub metrics_addr: SocketAddr,
    pub location: LogLocation,
    data_dir: PathBuf,
    /// An admin token with every scope.
    pub token: String,
    pub keys: AdminKeys,
    /// The test CA of control's certificate (and of the gateways that call it).
    pub pki: TestPki,
}

impl ControlProcess {
    /// Publishes an admin signing key, then starts control on the embedded log in
    /// `data_dir`, or on NATS when `nats_url` is set.
    pub async fn start(data_dir: &Path, nats_url: Option<&str>) -> ControlProcess {
        let location = match nats_url {
            Some(url) => LogLocation::nats(url),
            None => LogLocation::Embedded(data_dir.to_path_buf()),
        };
        let keys = AdminKeys::publish(&location).await;
        Self::start_with(data_dir, location, keys).await
    }

    /// Starts control on a log that already holds `keys`.
    pub async fn start_with(
        data_dir: &Path,
        location: LogLocation,
        keys: AdminKeys,
    ) -> ControlProcess {
        Self::start_with_args(data_dir, location, keys, &[]).await
    }

    /// [`start_with`](Self::start_with), with more flags.
    pub async fn start_with_args(
        data_dir: &Path,
        location: LogLocation,
        keys: AdminKeys,
        extra: &[&str],
    ) -> ControlProcess {
        let addr = free_addr();
        let metrics_addr = free_addr();
        let pki = TestPki::in_dir(&data_dir.join("pki"));
        let mut builder = Process::builder("control", env!("CARGO_BIN_EXE_control"))
            .args(pki.args(NodeRole::Control, "control"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--metrics-listen")
            .arg(metrics_addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .timeout(Duration::from_secs(30));
        if let LogLocation::Nats { url, .. } = &location {
            builder = builder.arg("--nats-url").arg(url);
        }
        let mut control = ControlProcess {
            process: builder.spawn(),
            addr,
            metrics_addr,
            location,
            data_dir: data_dir.to_path_buf(),
            token: keys.admin_token(),
            keys,
            pki,
        };
        control.wait_serving().await;
        control
    }

    /// Waits until control answers an admin call.
    async fn wait_serving(&mut self) {
        let (target, token) = (self.target(), self.token.clone());
        self.process
            .wait_until_async("answering ListApis", || {
                let (target, token) = (target.clone(), token.clone());
                async move {
                    let channel = gatehouse_node::tls::server_verified_endpoint(
                        &target.url(),
                        Some(&target.ca),
                    )
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                    ControlPlaneClient::with_interceptor(channel, Bearer(token))
                        .list_apis(ListApisRequest::default())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await;
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// control's admin port, as a TLS target for grpcurl and clients.
    pub fn target(&self) -> Target {
        self.pki.target(self.addr)
    }

    /// A client sending the full admin token.
    pub async fn client(&self) -> Client {
        self.client_with(&self.token).await
    }

    /// A client sending `token` (empty: no authorization metadata).
    pub async fn client_with(&self, token: &str) -> Client {
        admin_client(&self.target(), token).await
    }

    /// grpcurl with the admin token.
    pub fn grpcurl(&self, method: &str, body: &str) -> Result<serde_json::Value, String> {
        gatehouse_testkit::grpc::grpcurl(&self.target(), &self.token, method, body)
    }

    /// Stops the process (SIGKILL: nothing acknowledged may depend on a clean exit).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Stops and starts again on the same port, data directory and log.
    pub async fn restart(&mut self) {
        self.process.restart();
        self.wait_serving().await;
    }

    /// Stops cleanly (SIGTERM), as an orchestrator does.
    pub fn terminate(&mut self) {
        let status = self.process.terminate();
        assert!(status.success(), "control stopped with {status}");
    }

    /// Starts again, expecting the start to fail: its exit and what it printed.
    pub fn start_failing(&mut self) -> String {
        self.process.start();
        let status = self.process.wait_for_exit();
        assert!(!status.success(), "control was expected to fail to start");
        self.process.output_of_this_run()
    }

    /// What the process printed since it last started.
    pub fn output(&self) -> String {
        self.process.output_of_this_run()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
