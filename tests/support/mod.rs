//! Real Gatehouse processes for end-to-end tests: the `gatehouse` binary in its roles,
//! a real nats-server, and the real clients users have (curl, grpcurl).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `gatehouse <args>` as a child process, killed on drop. Its output goes to a log file
/// in `dir`, printed when a test fails to start it.
pub struct Node {
    pub name: String,
    child: Option<Child>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl Node {
    pub fn spawn(name: &str, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Node {
        let mut node = Node {
            name: name.to_string(),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: dir.join(format!("{name}.log")),
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for key in [
            "GATEHOUSE_NATS_URL",
            "GATEHOUSE_DATA_DIR",
            "GATEHOUSE_ADMIN_CLIENT_ID",
            "GATEHOUSE_ADMIN_CLIENT_SECRET",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            command.env_remove(key);
        }
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("spawn gatehouse"));
    }

    /// What the process has printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready()` holds, panicking with the node's output on timeout or exit.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not {what} within 60 s:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the node has printed `text`.
    pub fn wait_for_output(&mut self, text: &str) {
        self.wait_for_output_count(text, 1);
    }

    /// Waits until the node's log (across restarts) holds `text` `count` times.
    pub fn wait_for_output_count(&mut self, text: &str, count: usize) {
        let log = self.log.clone();
        self.wait_until(&format!("printing {text:?} x{count}"), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(text)
                .count()
                >= count
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGINT and waits for the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not stop on SIGINT:\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command and returns its output, panicking if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (run scripts/test.sh to install it): {e}"))
}

/// Runs a command that must succeed; its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `curl -sk ...` that must succeed, parsed as JSON.
pub fn curl_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-sk"];
    all.extend_from_slice(args);
    let out = run_ok("curl", &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("curl {args:?}: not JSON ({e}): {out}"))
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// grpcurl against control with an admin token; the JSON answer.
pub fn grpcurl(port: u16, token: &str, method: &str, body: &str) -> serde_json::Value {
    let auth = format!("authorization: Bearer {token}");
    let addr = format!("127.0.0.1:{port}");
    let method = format!("gatehouse.admin.v1.ControlPlane/{method}");
    let out = run_ok(
        "grpcurl",
        &["-plaintext", "-H", &auth, "-d", body, &addr, &method],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("grpcurl {method}: not JSON ({e}): {out}"))
}

/// control and token-service as separate processes on one NATS log, with a configured
/// admin client; extra environment (e.g. OpenTelemetry) per node.
pub struct ControlPlane {
    pub control: Node,
    pub token_service: Node,
    /// token-service's HTTPS port.
    pub https: u16,
    /// token-service's gRPC (KeyManager) port.
    pub keys: u16,
    /// control's gRPC port.
    pub admin: u16,
}

pub const ADMIN_ID: &str = "admin";
pub const ADMIN_SECRET: &str = "admin-secret-for-tests";

impl ControlPlane {
    pub fn start(
        dir: &Path,
        nats_url: &str,
        control_env: &[(&str, &str)],
        token_env: &[(&str, &str)],
    ) -> ControlPlane {
        let (https, keys, admin) = (free_port(), free_port(), free_port());
        let mut env: Vec<(&str, &str)> = vec![
            ("GATEHOUSE_ADMIN_CLIENT_ID", ADMIN_ID),
            ("GATEHOUSE_ADMIN_CLIENT_SECRET", ADMIN_SECRET),
        ];
        env.extend_from_slice(token_env);
        let mut token_service = Node::spawn(
            "token-service",
            dir,
            &[
                "token-service",
                "--data-dir",
                dir.join("token-service").to_str().unwrap(),
                "--listen-https",
                &format!("127.0.0.1:{https}"),
                "--listen-grpc",
                &format!("127.0.0.1:{keys}"),
                "--nats-url",
                nats_url,
            ],
            &env,
        );
        token_service.wait_until("listening", || listening(https) && listening(keys));
        let mut control = Node::spawn(
            "control",
            dir,
            &[
                "control",
                "--data-dir",
                dir.join("control").to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{admin}"),
                "--token-service-url",
                &format!("http://127.0.0.1:{keys}"),
                "--nats-url",
                nats_url,
            ],
            control_env,
        );
        control.wait_until("listening", || listening(admin));
        ControlPlane {
            control,
            token_service,
            https,
            keys,
            admin,
        }
    }

    pub fn token_url(&self) -> String {
        format!("https://127.0.0.1:{}/oauth2/token", self.https)
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
                &format!("http://127.0.0.1:{}", self.admin),
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
pub fn spawn_up(dir: &Path, data: &Path) -> (Node, UpPorts) {
    let ports = UpPorts::free();
    let args = ports.up_args(data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Node::spawn("gatehouse-up", dir, &args, &[]), ports)
}
