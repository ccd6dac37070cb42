//! Migration and GitOps as a user runs them: `gatehouse api import` of client-service's
//! own /openapi.json (then GET /users through the gateway with a subscribed
//! application's token), of a WSO2 apictl project zip; `gatehouse config export` from
//! one all-in-one and `config apply` on another, empty one (same content hash; a second
//! apply changes nothing); `config diff` after an edit; a concurrent admin change
//! between diff and apply; bad input. Two real `gatehouse up` processes, curl, grpcurl.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use gatehouse_testkit::eventually;
use gatehouse_testkit::grpc::{Target, grpcurl_ok};
use gatehouse_testkit::ports::free_port;
use gatehouse_testkit::process::{Process, run};
use serde_json::json;
use support::{UpPorts, curl_json, gatehouse};

/// An empty all-in-one on free ports, its client-service on `backend`.
struct Up {
    _node: Process,
    ports: UpPorts,
    data: PathBuf,
    secret: String,
    backend: u16,
}

const ADMIN_ID: &str = "gatehouse-admin";

fn up(dir: &Path, name: &str) -> Up {
    let data = dir.join(name);
    let ports = UpPorts::free();
    let backend = free_port();
    let mut args = ports.up_args(&data);
    args.extend(
        [
            "--no-demo",
            "--client-service-port",
            &backend.to_string(),
            "--order-service-port",
            &free_port().to_string(),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = gatehouse(name, dir, &args, &[]);
    node.wait_for_output("Gatehouse is up, empty");
    let secret = node
        .output()
        .lines()
        .find_map(|l| l.trim().strip_prefix("client secret:"))
        .expect("admin secret printed")
        .trim()
        .to_string();
    Up {
        _node: node,
        ports,
        data,
        secret,
        backend,
    }
}

impl Up {
    /// The flags every admin command takes.
    fn connection(&self) -> Vec<String> {
        [
            "--control-url".to_string(),
            format!("https://127.0.0.1:{}", self.ports.control),
            "--cluster-ca".into(),
            self.data.join("pki/ca.crt").display().to_string(),
            "--token-url".into(),
            format!("https://127.0.0.1:{}", self.ports.token_https),
            "--admin-client-id".into(),
            ADMIN_ID.into(),
            "--admin-client-secret".into(),
            self.secret.clone(),
        ]
        .into()
    }

    /// `gatehouse <args> <connection>`.
    fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(self.connection());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(env!("CARGO_BIN_EXE_gatehouse"), &all)
    }

    /// [`cli`](Self::cli) that must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gatehouse {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`cli`](Self::cli) that must fail: its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "gatehouse {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn target(&self) -> Target {
        Target::new(
            format!("127.0.0.1:{}", self.ports.control),
            self.data.join("pki/ca.crt"),
        )
    }

    fn admin_token(&self) -> String {
        curl_json(&[
            "-d",
            "grant_type=client_credentials",
            "-u",
            &format!("{ADMIN_ID}:{}", self.secret),
            &format!("https://127.0.0.1:{}/oauth2/token", self.ports.token_https),
        ])["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The content hash `config export` prints in its first line, and the file.
    fn export(&self, file: &Path) -> String {
        self.ok(&["config", "export", "-o", file.to_str().unwrap()]);
        let text = std::fs::read_to_string(file).unwrap();
        text.lines()
            .next()
            .and_then(|l| l.split("content hash ").nth(1))
            .map(|h| h.trim_end_matches('.').to_string())
            .unwrap_or_else(|| panic!("no content hash in:\n{text}"))
    }
}

fn pizza_zip(dir: &Path) -> PathBuf {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gitops/tests/fixtures");
    let path = dir.join("PizzaShackAPI-1.0.0.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for file in ["api.yaml", "Definitions/swagger.yaml"] {
        let name = format!("PizzaShackAPI-1.0.0/{file}");
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&std::fs::read(fixtures.join("PizzaShackAPI-1.0.0").join(file)).unwrap())
            .unwrap();
    }
    zip.finish().unwrap();
    path
}

#[test]
fn import_serve_export_apply_diff_and_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let a = up(dir.path(), "a");

    // 1. client-service's own document, imported and published.
    let openapi = format!("http://127.0.0.1:{}/openapi.json", a.backend);
    let backend = format!("http://127.0.0.1:{}", a.backend);
    let out = a.ok(&[
        "api",
        "import",
        &openapi,
        "--context",
        "/client",
        "--version",
        "1.0.0",
        "--production-url",
        &backend,
        "--tier",
        "Gold",
        "--lifecycle",
        "PUBLISHED",
    ]);
    assert!(
        out.contains(
            "created Gatehouse demo client service /client 1.0.0 (PUBLISHED, 5 resources)"
        ),
        "{out}"
    );
    assert!(
        out.contains("GET /users\n") && out.contains("GET /users/{id}"),
        "{out}"
    );

    // ... and GET /users through the gateway with a subscribed application's token.
    let admin = a.admin_token();
    let target = a.target();
    let apis = grpcurl_ok(&target, &admin, "ListApis", "{}");
    let api_id = apis["apis"][0]["id"].as_str().unwrap().to_string();
    let app = grpcurl_ok(
        &target,
        &admin,
        "CreateApplication",
        r#"{"name": "Importer"}"#,
    );
    grpcurl_ok(
        &target,
        &admin,
        "Subscribe",
        &json!({"applicationId": app["id"], "apiId": api_id, "tier": "Gold"}).to_string(),
    );
    let keys = grpcurl_ok(
        &target,
        &admin,
        "GenerateKeys",
        &json!({"applicationId": app["id"], "keyType": "PRODUCTION"}).to_string(),
    );
    let token = curl_json(&[
        "-d",
        "grant_type=client_credentials",
        "-u",
        &format!(
            "{}:{}",
            keys["consumerKey"].as_str().unwrap(),
            keys["consumerSecret"].as_str().unwrap()
        ),
        &format!("https://127.0.0.1:{}/oauth2/token", a.ports.token_https),
    ])["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let users = format!(
        "https://127.0.0.1:{}/client/1.0.0/users",
        a.ports.gateway_https
    );
    let body = eventually("GET /users through the gateway", || {
        let out = run(
            "curl",
            &[
                "-sk",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &users,
            ],
        );
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("Ada Lovelace") {
            Ok(body)
        } else {
            Err(body)
        }
    });
    assert!(body.contains("Ada Lovelace"), "{body}");

    // 2. A WSO2 apictl project, as the zip apictl writes.
    let zip = pizza_zip(dir.path());
    let out = a.ok(&["api", "import", zip.to_str().unwrap()]);
    assert!(
        out.contains("created PizzaShackAPI /pizzashack 1.0.0 (PUBLISHED, 4 resources)"),
        "{out}"
    );
    assert!(
        out.contains("GET /menu scopes: read:menu")
            && out.contains("GET /health (no authentication)"),
        "{out}"
    );

    // The gateway's view, as OpenAPI.
    let out = a.ok(&[
        "api",
        "export",
        "--context",
        "/client",
        "--version",
        "1.0.0",
    ]);
    let exported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        exported["servers"][0]["url"],
        "https://localhost:8243/client/1.0.0"
    );

    // 3. Export from A, apply on an empty B: the same configuration.
    let file = dir.path().join("gatehouse.yaml");
    let hash_a = a.export(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(keys["consumerSecret"].as_str().unwrap()) && !text.contains("consumerKey")
    );
    let b = up(dir.path(), "b");
    let out = b.ok(&["config", "apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("content hash {hash_a}")),
        "same content hash as A ({hash_a}):\n{out}"
    );
    let out = b.ok(&["config", "apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.contains("no change\n"),
        "a second apply changes nothing:\n{out}"
    );
    assert_eq!(b.export(&dir.path().join("b.yaml")), hash_a);

    // 4. A diff after an edit lists exactly that edit.
    let edited = dir.path().join("edited.yaml");
    std::fs::write(
        &edited,
        text.replace(
            "name: Importer",
            "name: Importer\n  description: edited in git",
        ),
    )
    .unwrap();
    let out = b.ok(&["config", "diff", "-f", edited.to_str().unwrap()]);
    let changes: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("planned against"))
        .collect();
    assert_eq!(
        changes,
        [
            "~ update application gatehouse-admin/Importer",
            "    description: (none) -> \"edited in git\""
        ],
        "{out}"
    );
    let planned = out
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();

    // 5. An admin changes something between diff and apply: apply fails, writes nothing.
    let admin_b = b.admin_token();
    grpcurl_ok(
        &b.target(),
        &admin_b,
        "CreatePolicy",
        r#"{"name": "Meanwhile", "level": "SUBSCRIPTION", "requestCount": 5, "unitSeconds": 60}"#,
    );
    let err = b.fails(&[
        "config",
        "apply",
        "-f",
        edited.to_str().unwrap(),
        "--expect-content-hash",
        &planned,
    ]);
    assert!(
        err.contains("Aborted") && err.contains("changed since"),
        "{err}"
    );
    let after = dir.path().join("after.yaml");
    b.export(&after);
    let after = std::fs::read_to_string(&after).unwrap();
    assert!(
        after.contains("Meanwhile") && !after.contains("edited in git"),
        "{after}"
    );

    // 6. Bad input names where, and changes nothing.
    let before = b.export(&dir.path().join("before.yaml"));
    let bad = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let err = b.fails(&[
        "config",
        "apply",
        "-f",
        &bad("malformed.yaml", "format: gatehouse/v1\napis: [\n"),
    ]);
    assert!(err.contains("malformed.yaml:"), "{err}");
    let err = b.fails(&[
        "config",
        "apply",
        "-f",
        &bad("unknown.yaml", "format: gatehouse/v1\npolicys: []\n"),
    ]);
    assert!(
        err.contains("unknown.yaml:2:1") && err.contains("unknown field `policys`"),
        "{err}"
    );
    let err = b.fails(&[
        "config", "diff", "-f",
        &bad("route.yaml", "format: gatehouse/v1\napis:\n  - context: /x\n    version: '1'\n    name: X\n    resources:\n      - {method: GET, path: '/a{b}'}\n"),
    ]);
    assert!(
        err.contains("route.yaml:7:") && err.contains("apis[0].resources[0].path"),
        "{err}"
    );
    let err = b.fails(&[
        "api", "import", "--context", "/r",
        &bad("ref.yaml", "openapi: 3.0.3\ninfo: {title: R, version: '1'}\npaths:\n  /x: {get: {responses: {'200': {$ref: '#/components/responses/Nope'}}}}\n"),
    ]);
    assert!(err.contains("/paths/~1x/get/responses/200/$ref"), "{err}");
    let err = b.fails(&[
        "api", "import", "--context", "/r",
        &bad("template.yaml", "openapi: 3.0.3\ninfo: {title: R, version: '1'}\npaths:\n  /files/{name}.json: {get: {responses: {}}}\n"),
    ]);
    assert!(
        err.contains("/paths/~1files~1{name}.json") && err.contains("cannot route"),
        "{err}"
    );
    assert_eq!(
        b.export(&dir.path().join("unchanged.yaml")),
        before,
        "nothing changed"
    );
}
