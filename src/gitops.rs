//! `gatehouse api` and `gatehouse config`: migration and GitOps from the command line,
//! through control's admin API (TLS under the cluster CA, an admin client's token).
//!
//! ```text
//! gatehouse api import FILE|URL|DIR|ZIP [--context /pets] [--production-url URL]...   OpenAPI 3.0/3.1, or an apictl project
//! gatehouse api export --context /pets --version 1.0.0 [-o pets.json]               the gateway's view, as OpenAPI
//! gatehouse config export [-o gatehouse.yaml]                                       the whole configuration, no secrets
//! gatehouse config diff -f gatehouse.yaml [--prune]                                 what apply would change
//! gatehouse config apply -f gatehouse.yaml [--prune] [--dry-run] [--expect-content-hash H]
//! ```
//!
//! Documents are read here (files, directories, zips, URLs: each bounded to
//! [`MAX_DOCUMENT_BYTES`]) and sent whole; control parses, checks and decides.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gatehouse_proto::admin::{
    ApplyConfigRequest, ExportApiRequest, ExportConfigRequest, ImportApiRequest, PlanConfigRequest,
};

use crate::bootstrap::ControlConnection;

/// The largest document (or apictl project file) read, in bytes: control's own limits
/// (`--max-import-bytes`, `--max-config-bytes`) are what refuses, this only keeps a
/// wrong path from filling memory.
pub const MAX_DOCUMENT_BYTES: u64 = 64 << 20;

/// `gatehouse api ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ApiCommand {
    /// Create (or with --update, replace) an API from an OpenAPI 3.0/3.1 document (YAML
    /// or JSON; a file or an http(s) URL) or a WSO2 apictl project (its directory or
    /// zip). All or nothing: what cannot be represented is listed by JSON pointer.
    Import(ImportArgs),
    /// Write an API as the OpenAPI document of the gateway's view of it.
    Export(ExportArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// An OpenAPI document (file or URL), or an apictl project (directory or zip).
    pub source: String,
    /// The API's context (else the document's x-gatehouse-context, or the project's).
    #[arg(long)]
    pub context: Option<String>,
    /// The API's version (else the document's info.version).
    #[arg(long)]
    pub version: Option<String>,
    /// A production backend URL (repeatable), instead of the document's servers.
    #[arg(long = "production-url")]
    pub production_urls: Vec<String>,
    /// A sandbox backend URL (repeatable).
    #[arg(long = "sandbox-url")]
    pub sandbox_urls: Vec<String>,
    /// A subscription tier the API offers (repeatable; default: the project's, else
    /// Unlimited).
    #[arg(long = "tier")]
    pub tiers: Vec<String>,
    /// The lifecycle state to bring the API to: CREATED, PUBLISHED, PROTOTYPED...
    /// (default: the project's, else CREATED).
    #[arg(long, value_parser = lifecycle_state)]
    pub lifecycle: Option<i32>,
    /// Replace the definition of the API with the same context and version, if any.
    #[arg(long)]
    pub update: bool,
    /// Check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ControlConnection,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The API by id...
    #[arg(long)]
    pub api_id: Option<String>,
    /// ... or by context and version.
    #[arg(long)]
    pub context: Option<String>,
    #[arg(long)]
    pub version: Option<String>,
    /// A gateway as application developers reach it.
    #[arg(long, default_value = "https://localhost:8243")]
    pub gateway_url: String,
    /// token-service's token endpoint as they reach it.
    #[arg(long, default_value = "https://localhost:9443/oauth2/token")]
    pub public_token_url: String,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ControlConnection,
}

/// `gatehouse config ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Write the whole configuration (APIs, policies, applications, subscriptions, scope
    /// grants; never keys or secrets) as a declarative file.
    Export {
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        connection: ControlConnection,
    },
    /// Print what applying the file would change (create / update / delete, object by
    /// object, field by field) and the content hash it was planned against.
    Diff(FileArgs),
    /// Make the configuration match the file (idempotent). Fails, naming the object and
    /// writing nothing, if the configuration changed since it was read.
    Apply {
        #[command(flatten)]
        file: FileArgs,
        /// Plan and check only.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if the configuration still has this content hash (the one `config
        /// diff` printed): what was reviewed is what is applied.
        #[arg(long)]
        expect_content_hash: Option<String>,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct FileArgs {
    /// The declarative file (YAML or JSON; `-` for standard input).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Also delete what the file does not list (applications, their subscriptions, APIs).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub connection: ControlConnection,
}

impl FileArgs {
    /// The file read, as `PlanConfig` (and, within its request, `ApplyConfig`) takes it.
    fn request(&self) -> anyhow::Result<PlanConfigRequest> {
        Ok(PlanConfigRequest {
            document: read_file(&self.file)?,
            file_name: self.file.display().to_string(),
            prune: self.prune,
        })
    }
}

fn lifecycle_state(name: &str) -> Result<i32, String> {
    gatehouse_proto::events::lifecycle::State::from_str_name(&name.to_ascii_uppercase())
        .filter(|s| *s != gatehouse_proto::events::lifecycle::State::Unspecified)
        .map(|s| s as i32)
        .ok_or_else(|| "one of CREATED, PROTOTYPED, PUBLISHED, BLOCKED, DEPRECATED, RETIRED".into())
}

/// Reads at most [`MAX_DOCUMENT_BYTES`] of `reader` as UTF-8.
fn read_bounded(reader: impl Read, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        bail!("{what} is larger than {MAX_DOCUMENT_BYTES} bytes");
    }
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8 text"))
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return read_bounded(std::io::stdin(), "standard input");
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_bounded(file, &path.display().to_string())
}

/// An apictl project: its api.yaml and OpenAPI definition (empty if it has none).
struct Project {
    api_yaml: String,
    definition: String,
}

/// The names apictl gives a project's OpenAPI definition.
const DEFINITIONS: &[&str] = &[
    "Definitions/swagger.yaml",
    "Definitions/swagger.json",
    "Definitions/openapi.yaml",
    "Definitions/openapi.json",
];

/// A project directory: `api.yaml` at its top, or in its one sub-directory (a zip's
/// `<Name>-<version>/`).
fn project_dir(dir: &Path) -> anyhow::Result<Project> {
    let mut root = dir.to_path_buf();
    if !root.join("api.yaml").is_file() {
        let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("api.yaml").is_file())
            .collect();
        match subdirs.as_slice() {
            [one] => root = one.clone(),
            _ => bail!(
                "{} is not an apictl project: no api.yaml in it (nor in one sub-directory)",
                dir.display()
            ),
        }
    }
    let definition = DEFINITIONS
        .iter()
        .map(|d| root.join(d))
        .find(|p| p.is_file())
        .map(|p| read_file(&p))
        .transpose()?
        .unwrap_or_default();
    Ok(Project {
        api_yaml: read_file(&root.join("api.yaml"))?,
        definition,
    })
}

/// A project zip (what `apictl export api` writes): the entries named like a
/// directory's, under one top folder or none; each entry read bounded, so a zip bomb
/// costs at most [`MAX_DOCUMENT_BYTES`] an entry.
fn project_zip(path: &Path) -> anyhow::Result<Project> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip", path.display()))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let api_yaml = names
        .iter()
        .filter(|n| n.ends_with("api.yaml") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .cloned()
        .with_context(|| {
            format!(
                "{} holds no api.yaml: not an apictl project",
                path.display()
            )
        })?;
    let prefix = api_yaml.trim_end_matches("api.yaml").to_string();
    let mut read = |name: &str| -> anyhow::Result<String> {
        let entry = zip.by_name(name)?;
        read_bounded(entry, &format!("{}:{name}", path.display()))
    };
    let definition = DEFINITIONS
        .iter()
        .map(|d| format!("{prefix}{d}"))
        .find(|d| names.contains(d));
    Ok(Project {
        api_yaml: read(&api_yaml)?,
        definition: definition
            .map(|d| read(&d))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// `GET url`, bounded. Plain `http://` (a backend's own /openapi.json inside the
/// cluster), or `https://` verified against the system's roots.
async fn fetch(url: &str) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let response = client
        .get(url.parse()?)
        .await
        .with_context(|| format!("cannot fetch {url}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES as usize)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).with_context(|| format!("{url} is not UTF-8 text"))
}

/// Writes `text` to `output`, or standard output.
fn write_out(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// A gRPC error as one line: its code and message.
fn refused(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {:?}: {}", status.code(), status.message())
}

/// Runs `gatehouse api ...`.
pub async fn api(command: ApiCommand) -> anyhow::Result<()> {
    match command {
        ApiCommand::Import(args) => import(args).await,
        ApiCommand::Export(args) => {
            let mut admin = args.connection.connect().await?;
            let request = ExportApiRequest {
                api_id: args.api_id.unwrap_or_default(),
                context: args.context.unwrap_or_default(),
                version: args.version.unwrap_or_default(),
                gateway_url: args.gateway_url,
                token_url: args.public_token_url,
            };
            let document = admin
                .export_api(request)
                .await
                .map_err(|s| refused("export", s))?
                .into_inner()
                .document;
            write_out(args.output.as_deref(), &format!("{document}\n"))
        }
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let source = &args.source;
    let path = Path::new(source);
    let (document, api_yaml) = if source.starts_with("http://") || source.starts_with("https://") {
        (fetch(source).await?, String::new())
    } else if path.is_dir() {
        let p = project_dir(path)?;
        (p.definition, p.api_yaml)
    } else if source.ends_with(".zip") {
        let p = project_zip(path)?;
        (p.definition, p.api_yaml)
    } else {
        (read_file(path)?, String::new())
    };
    let mut admin = args.connection.connect().await?;
    let request = ImportApiRequest {
        document,
        document_name: source.clone(),
        apictl_api_yaml: api_yaml,
        context: args.context.unwrap_or_default(),
        production_urls: args.production_urls,
        sandbox_urls: args.sandbox_urls,
        subscription_tiers: args.tiers,
        update_existing: args.update,
        dry_run: args.dry_run,
        version: args.version.unwrap_or_default(),
        lifecycle: args.lifecycle.unwrap_or_default(),
    };
    let answer = admin
        .import_api(request)
        .await
        .map_err(|s| refused("import", s))?
        .into_inner();
    let api = answer.api.unwrap_or_default();
    let d = api.definition.clone().unwrap_or_default();
    let verb = if args.dry_run {
        "would import"
    } else if answer.created {
        "created"
    } else {
        "updated"
    };
    println!(
        "{verb} {} {} {} ({}, {} resources){}",
        d.name,
        d.context,
        d.version,
        api.lifecycle().as_str_name(),
        d.resources.len(),
        if api.id.is_empty() {
            String::new()
        } else {
            format!(": id {}", api.id)
        }
    );
    for r in &d.resources {
        let auth = if r.auth_disabled {
            " (no authentication)".to_string()
        } else if r.scopes.is_empty() {
            String::new()
        } else {
            format!(" scopes: {}", r.scopes.join(" "))
        };
        println!("  {} {}{auth}", r.method, r.path);
    }
    Ok(())
}

/// Runs `gatehouse config ...`.
pub async fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Export { output, connection } => {
            let mut admin = connection.connect().await?;
            let answer = admin
                .export_config(ExportConfigRequest {})
                .await
                .map_err(|s| refused("export", s))?
                .into_inner();
            let text = format!(
                "# Gatehouse configuration at log sequence {}; content hash {}.\n# No keys or secrets: see `gatehouse config apply --help`.\n{}",
                answer.sequence, answer.content_hash, answer.document
            );
            write_out(output.as_deref(), &text)
        }
        ConfigCommand::Diff(args) => {
            let request = args.request()?;
            let mut admin = args.connection.connect().await?;
            let plan = admin
                .plan_config(request)
                .await
                .map_err(|s| refused("diff", s))?
                .into_inner();
            print!("{}", plan.rendered);
            println!(
                "planned against content hash {} ({} step(s)); to apply exactly this: gatehouse config apply -f {}{} --expect-content-hash {}",
                plan.read_content_hash,
                plan.steps,
                args.file.display(),
                if args.prune { " --prune" } else { "" },
                plan.read_content_hash
            );
            Ok(())
        }
        ConfigCommand::Apply {
            file,
            dry_run,
            expect_content_hash,
        } => {
            let request = file.request()?;
            let mut admin = file.connection.connect().await?;
            let answer = admin
                .apply_config(ApplyConfigRequest {
                    file: Some(request),
                    dry_run,
                    expected_content_hash: expect_content_hash.unwrap_or_default(),
                })
                .await
                .map_err(|s| refused("apply", s))?
                .into_inner();
            let plan = answer.plan.unwrap_or_default();
            print!("{}", plan.rendered);
            if dry_run {
                println!("dry run: {} step(s) planned, nothing written", plan.steps);
            } else if answer.steps_applied == 0 {
                println!("no change; content hash {}", answer.content_hash);
            } else {
                println!(
                    "applied {} step(s); content hash {}",
                    answer.steps_applied, answer.content_hash
                );
            }
            Ok(())
        }
    }
}
