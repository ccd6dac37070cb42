//! Real Gatehouse processes for end-to-end tests: the `gatehouse` binary in its roles
//! (with the test kit's process wrapper), and the real clients users have (curl,
//! grpcurl).

#![allow(dead_code)]

use std::path::Path;

use gatehouse_node::pki::NodeRole;
use gatehouse_proto::admin::{CreateApplicationRequest, SubscribeRequest};
use gatehouse_proto::events::{Application, o_auth_client::KeyType};
use gatehouse_proto::keymanager::{ApplicationKeys, GenerateKeysRequest};
use gatehouse_testkit::grpc::AdminClient;
use gatehouse_testkit::grpc::Target;
use gatehouse_testkit::pki::TestPki;
use gatehouse_testkit::ports::{free_port, is_listening};
use gatehouse_testkit::process::{Process, run_ok};

/// `gatehouse <args>` as a child process named `name`, its output in `<dir>/<name>.log`.
pub fn gatehouse(name: &str, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Process {
    Process::spawn(name, env!("CARGO_BIN_EXE_gatehouse"), dir, args, envs)
}

/// `curl -sk ...` that must succeed, parsed as JSON.
pub fn curl_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-sk"];
    all.extend_from_slice(args);
    let out = run_ok("curl", &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("curl {args:?}: not JSON ({e}): {out}"))
}

/// control and token-service as separate processes on one NATS log, with a configured
/// admin client; extra environment (e.g. OpenTelemetry) per node.
pub struct ControlPlane {
    pub control: Process,
    pub token_service: Process,
    /// token-service's HTTPS port.
    pub https: u16,
    /// token-service's gRPC (KeyManager) port.
    pub keys: u16,
    /// control's gRPC port.
    pub admin: u16,
    /// The cluster CA of the nodes (in `<dir>/pki`; gateways started in `dir` share it).
    pub pki: TestPki,
}

pub const ADMIN_ID: &str = "admin";

/// A new application `name` owned by the admin client, on the Unlimited tier.
pub fn admin_application(name: impl Into<String>) -> CreateApplicationRequest {
    CreateApplicationRequest {
        name: name.into(),
        owner: ADMIN_ID.into(),
        throttling_tier: "Unlimited".into(),
        description: String::new(),
    }
}

/// The devportal's three steps through `admin`: application `name` (see
/// [`admin_application`]), subscribed to each of `api_ids` at `tier`, with its production
/// keys.
pub async fn subscribed_application(
    admin: &mut AdminClient,
    name: &str,
    api_ids: &[&str],
    tier: &str,
) -> (Application, ApplicationKeys) {
    let app = admin
        .create_application(admin_application(name))
        .await
        .unwrap()
        .into_inner();
    for api_id in api_ids {
        admin
            .subscribe(SubscribeRequest {
                application_id: app.id.clone(),
                api_id: api_id.to_string(),
                tier: tier.into(),
            })
            .await
            .unwrap();
    }
    let keys = admin
        .generate_keys(GenerateKeysRequest {
            application_id: app.id.clone(),
            key_type: KeyType::Production as i32,
            // The defaults: client_credentials, one-hour tokens.
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (app, keys)
}
pub const ADMIN_SECRET: &str = "admin-secret-for-tests";

impl ControlPlane {
    pub fn start(
        dir: &Path,
        nats_url: &str,
        control_env: &[(&str, &str)],
        token_env: &[(&str, &str)],
    ) -> ControlPlane {
        let (https, keys) = (free_port(), free_port());
        let pki = TestPki::in_dir(&dir.join("pki"));
        let token_identity = pki.args(NodeRole::TokenService, "token-service");
        let mut env: Vec<(&str, &str)> = vec![
            ("GATEHOUSE_ADMIN_CLIENT_ID", ADMIN_ID),
            ("GATEHOUSE_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
        ];
        env.extend_from_slice(token_env);
        let mut token_args: Vec<String> = [
            "token-service".to_string(),
            "--data-dir".into(),
            dir.join("token-service").display().to_string(),
            "--listen-https".into(),
            format!("127.0.0.1:{https}"),
            "--listen-grpc".into(),
            format!("127.0.0.1:{keys}"),
            "--nats-url".into(),
            nats_url.into(),
        ]
        .into();
        token_args.extend(token_identity);
        let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
        let mut token_service = gatehouse("token-service", dir, &token_args, &env);
        token_service.wait_until("listening", || is_listening(https) && is_listening(keys));
        let (control, admin) = start_control(dir, "control", nats_url, keys, &pki, control_env);
        ControlPlane {
            control,
            token_service,
            https,
            keys,
            admin,
            pki,
        }
    }

    /// Another control process (`name`, its own data directory and port) on the same
    /// log and token-service; its gRPC port.
    pub fn another_control(
        &self,
        dir: &Path,
        name: &str,
        nats_url: &str,
        env: &[(&str, &str)],
    ) -> (Process, u16) {
        start_control(dir, name, nats_url, self.keys, &self.pki, env)
    }

    pub fn token_url(&self) -> String {
        format!("https://127.0.0.1:{}/oauth2/token", self.https)
    }

    /// control's gRPC address with the CA its certificate verifies under (for grpcurl
    /// and tonic clients).
    pub fn admin_target(&self) -> Target {
        self.pki.target(format!("127.0.0.1:{}", self.admin))
    }

    /// An admin token (every admin scope), with curl.
    pub fn admin_token(&self) -> String {
        curl_json(&[
            "-d",
            "grant_type=client_credentials",
            "-u",
            &format!("{ADMIN_ID}:{ADMIN_SECRET}"),
            &self.token_url(),
        ])["access_token"]
            .as_str()
            .expect("admin access_token")
            .to_string()
    }

    /// `gatehouse bootstrap` against this control plane; its stdout.
    pub fn bootstrap(&self, client_service_url: &str, order_service_url: &str) -> String {
        run_ok(
            env!("CARGO_BIN_EXE_gatehouse"),
            &[
                "bootstrap",
                "--control-url",
                &format!("https://127.0.0.1:{}", self.admin),
                "--cluster-ca",
                self.pki.ca_cert().to_str().unwrap(),
                "--token-url",
                &format!("https://127.0.0.1:{}", self.https),
                "--admin-client-id",
                ADMIN_ID,
                "--admin-client-secret",
                ADMIN_SECRET,
                "--client-service-url",
                client_service_url,
                "--order-service-url",
                order_service_url,
            ],
        )
    }
}

/// `gatehouse control` as process `name` (data in `<dir>/<name>`) on `nats_url`, with
/// token-service's KeyManager at `keys`; waits until it listens, returns its port.
fn start_control(
    dir: &Path,
    name: &str,
    nats_url: &str,
    keys: u16,
    pki: &TestPki,
    env: &[(&str, &str)],
) -> (Process, u16) {
    let admin = free_port();
    let mut control_args: Vec<String> = [
        "control".to_string(),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{admin}"),
        "--token-service-url".into(),
        format!("https://127.0.0.1:{keys}"),
        "--nats-url".into(),
        nats_url.into(),
    ]
    .into();
    control_args.extend(pki.args(NodeRole::Control, "control"));
    let control_args: Vec<&str> = control_args.iter().map(String::as_str).collect();
    let mut control = gatehouse(name, dir, &control_args, env);
    control.wait_until("listening", || is_listening(admin));
    (control, admin)
}

/// Free ports for `gatehouse up`'s five listeners, and its flags for them.
pub struct UpPorts {
    pub control: u16,
    pub token_https: u16,
    pub token_grpc: u16,
    pub gateway_https: u16,
    pub gateway_http: u16,
}

impl UpPorts {
    pub fn free() -> UpPorts {
        UpPorts {
            control: free_port(),
            token_https: free_port(),
            token_grpc: free_port(),
            gateway_https: free_port(),
            gateway_http: free_port(),
        }
    }

    /// `up --data-dir DATA --control-listen ... ` with these ports.
    pub fn up_args(&self, data: &Path) -> Vec<String> {
        let addr = |p: u16| format!("127.0.0.1:{p}");
        [
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--control-listen",
            &addr(self.control),
            "--token-https-listen",
            &addr(self.token_https),
            "--token-grpc-listen",
            &addr(self.token_grpc),
            "--gateway-https-listen",
            &addr(self.gateway_https),
            "--gateway-http-listen",
            &addr(self.gateway_http),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// `gatehouse up` on free ports, on the data directory `data`.
pub fn spawn_up(dir: &Path, data: &Path) -> (Process, UpPorts) {
    let ports = UpPorts::free();
    let args = ports.up_args(data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (gatehouse("gatehouse-up", dir, &args, &[]), ports)
}

/// A gateway replica as a process (`gatehouse gateway`), on free ports, following
/// control at `control_port` and NATS at `nats_url` (without it: control's event
/// stream).
pub struct Gateway {
    pub node: Process,
    pub https_port: u16,
    pub http_port: u16,
}

impl Gateway {
    /// Starts replica `id` (its certificate issued by `pki`) with its data in `<dir>/<id>`, its log in `<dir>/gateway-<id>.log`,
    /// `extra` flags and `envs`; waits for its ready line.
    pub fn start(
        dir: &Path,
        pki: &TestPki,
        id: &str,
        control_port: u16,
        nats_url: Option<&str>,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Gateway {
        let (https_port, http_port) = (free_port(), free_port());
        let data = dir.join(id).display().to_string();
        let (https, http) = (
            format!("127.0.0.1:{https_port}"),
            format!("127.0.0.1:{http_port}"),
        );
        let control = format!("https://127.0.0.1:{control_port}");
        let identity = pki.args(NodeRole::Gateway, id);
        let mut args = vec![
            "gateway",
            "--gateway-id",
            id,
            "--data-dir",
            &data,
            "--listen-https",
            &https,
            "--listen-http",
            &http,
            "--control-url",
            &control,
        ];
        if let Some(url) = nats_url {
            args.extend(["--nats-url", url]);
        }
        args.extend(identity.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let mut node = gatehouse(&format!("gateway-{id}"), dir, &args, envs);
        node.wait_for_output("ready on https://");
        Gateway {
            node,
            https_port,
            http_port,
        }
    }

    /// `https://127.0.0.1:<port>`, the API listener.
    pub fn https(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// `http://127.0.0.1:<port>`, the plain listener (and `/readyz`, `/metrics`).
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}
