//! Migration and GitOps RPCs: `ImportApi`, `ExportApi`, `ExportConfig`, `PlanConfig`,
//! `ApplyConfig` (every one needs `apim:admin`).
//!
//! Reading documents is `gatehouse_gitops`'s; this module bounds what it is given
//! ([`DeclarativeLimits`]), runs it off the async runtime (parsing a few MiB of YAML is
//! CPU work), and writes the result as a plan of commands:
//!
//! 1. **Plan** against the state control has folded (an O(1) copy), and check every
//!    command of it on a scratch copy with the domain's own rules: one refusal and
//!    nothing is written (an import's lifecycle moves included).
//! 2. **Execute** the steps in order through the [`CommandExecutor`], each as a
//!    [`Command::Guarded`]: decided only if the configuration's content is exactly the
//!    one the plan expects at that step, and appended only if the log has not moved
//!    since that check. A change anyone made since the plan was read (or, with
//!    `expected_content_hash`, since a `PlanConfig` read it) fails the first step:
//!    ABORTED, nothing written.
//!
//! A plan of several steps is not one atomic record. Should control stop (or another
//! admin change the configuration) between two steps, the steps before stay written —
//! each one a valid command on its own — and the answer (or the next plan) says so;
//! applying the same file again goes on from there, since an apply is idempotent.

use gatehouse_domain::{Command, DomainError, State};
use gatehouse_gitops::config;
use gatehouse_gitops::openapi::{self, ExportOptions, ImportOptions, ImportedApi};
use gatehouse_gitops::plan::{self, Plan, PlanOptions, Step, simulate, transitions};
use gatehouse_gitops::{ImportError, apictl};
use gatehouse_node::commands::CallContext;
use gatehouse_node::grpc::RpcResult;
use gatehouse_node::status::{domain_status, invalid};
use gatehouse_proto::admin;
use gatehouse_proto::events::{Api, lifecycle};
use gatehouse_tokens::scopes;
use tonic::{Request, Response, Status};

use super::{ControlService, new_id};

/// The bounds of the migration and GitOps RPCs.
#[derive(clap::Args, Debug, Clone)]
pub struct DeclarativeLimits {
    /// Largest document `ImportApi` reads (an OpenAPI document, with an apictl
    /// project's api.yaml), in bytes.
    #[arg(long, env = "GATEHOUSE_MAX_IMPORT_BYTES", default_value_t = 4 << 20)]
    pub max_import_bytes: usize,
    /// Most resources (operations) an imported API may have.
    #[arg(long, env = "GATEHOUSE_MAX_IMPORT_RESOURCES", default_value_t = 1000)]
    pub max_import_resources: usize,
    /// Largest declarative file `PlanConfig` and `ApplyConfig` read, in bytes.
    #[arg(long, env = "GATEHOUSE_MAX_CONFIG_BYTES", default_value_t = 16 << 20)]
    pub max_config_bytes: usize,
    /// Most objects (policies, APIs, applications, subscriptions) a declarative file
    /// may hold.
    #[arg(long, env = "GATEHOUSE_MAX_CONFIG_OBJECTS", default_value_t = 10_000)]
    pub max_config_objects: usize,
}

impl Default for DeclarativeLimits {
    fn default() -> Self {
        DeclarativeLimits {
            max_import_bytes: 4 << 20,
            max_import_resources: 1000,
            max_config_bytes: 16 << 20,
            max_config_objects: 10_000,
        }
    }
}

impl DeclarativeLimits {
    /// The largest request message these limits let through (the gRPC server's
    /// decoding limit): the larger document and some room for the other fields.
    pub fn max_message_bytes(&self) -> usize {
        self.max_import_bytes.max(self.max_config_bytes) + (64 << 10)
    }
}

/// INVALID_ARGUMENT unless `bytes` is at most `max` (the flag `flag`).
fn bounded(field: &str, bytes: usize, max: usize, flag: &str) -> Result<(), Status> {
    if bytes > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {bytes} bytes; at most {max} ({flag})"
        )));
    }
    Ok(())
}

/// Runs CPU-bound document work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("document work failed: {e}")))
}

fn import_status(error: ImportError) -> Status {
    Status::invalid_argument(error.to_string())
}

fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

fn plan_response(plan: &Plan) -> admin::PlanConfigResponse {
    let json =
        |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    admin::PlanConfigResponse {
        changes: plan
            .changes
            .iter()
            .map(|c| admin::ConfigChange {
                action: c.action.as_str().into(),
                kind: c.kind.into(),
                key: c.key.clone(),
                fields: c
                    .fields
                    .iter()
                    .map(|f| admin::ConfigFieldChange {
                        field: f.field.clone(),
                        before: json(&f.before),
                        after: json(&f.after),
                    })
                    .collect(),
            })
            .collect(),
        notes: plan.notes.clone(),
        read_content_hash: hex(plan.read_content_hash),
        result_content_hash: hex(plan.result_content_hash),
        steps: plan.steps.len() as u32,
        rendered: plan::render(plan),
    }
}

/// A refused import step as the document's pointer names it.
fn import_refusal(imported: &ImportedApi, error: DomainError) -> Status {
    if let DomainError::InvalidArgument { field, rule } = &error
        && let Some(pointer) = imported.pointer_of(field)
    {
        return Status::invalid_argument(format!("{pointer}: {rule}"));
    }
    domain_status(error)
}

impl ControlService {
    /// Executes planned steps in order, each guarded on the content it was planned
    /// against; the error names the step that failed and how many went before.
    async fn run_steps(&self, steps: &[Step], ctx: &CallContext) -> Result<usize, Status> {
        for (i, step) in steps.iter().enumerate() {
            if let Err(e) = self.commands.execute(step.guarded(), ctx).await {
                let status = Status::from(e);
                let written = if i == 0 {
                    "nothing was written".to_string()
                } else {
                    format!(
                        "the {i} step(s) before it stay written; applying again goes on from there"
                    )
                };
                return Err(Status::new(
                    status.code(),
                    format!(
                        "step {} of {} ({}) failed: {}; {written}",
                        i + 1,
                        steps.len(),
                        step.object,
                        status.message()
                    ),
                ));
            }
        }
        Ok(steps.len())
    }

    pub(super) async fn import_api_rpc(
        &self,
        request: Request<admin::ImportApiRequest>,
    ) -> RpcResult<admin::ImportApiResponse> {
        let (ctx, r) = self.authorized(request, scopes::ADMIN)?;
        let limits = self.limits.clone();
        bounded(
            "document",
            r.document.len() + r.apictl_api_yaml.len(),
            limits.max_import_bytes,
            "--max-import-bytes",
        )?;
        let options = ImportOptions {
            context: (!r.context.is_empty()).then(|| r.context.clone()),
            production_urls: r.production_urls.clone(),
            sandbox_urls: r.sandbox_urls.clone(),
            subscription_tiers: r.subscription_tiers.clone(),
            max_resources: limits.max_import_resources,
        };
        let name = if r.document_name.is_empty() {
            "the document".to_string()
        } else {
            r.document_name.clone()
        };
        let wanted = lifecycle::State::try_from(r.lifecycle).map_err(|_| {
            Status::invalid_argument(format!("lifecycle: unknown state {}", r.lifecycle))
        })?;
        let (document, api_yaml, version) = (r.document, r.apictl_api_yaml, r.version);
        let (mut imported, target) = blocking(move || {
            if api_yaml.is_empty() {
                openapi::import_text(&name, &document, &options).map(|a| (a, None))
            } else {
                let definition = (!document.is_empty())
                    .then_some(("Definitions/swagger.yaml", document.as_str()));
                apictl::import(&name, &api_yaml, definition, &options)
                    .map(|p| (p.api, Some(p.lifecycle)))
            }
        })
        .await?
        .map_err(import_status)?;
        if !version.is_empty() {
            imported.definition.version = version;
        }
        let target = match wanted {
            lifecycle::State::Unspecified => target,
            wanted => Some(wanted),
        };

        let state = self.model.read().clone();
        let d = &imported.definition;
        let existing = state
            .api_by_context_version(&d.context, &d.version)
            .cloned();
        let (api_id, first, created) = match existing {
            Some(api) if r.update_existing => (
                api.id.clone(),
                Command::UpdateApi {
                    api_id: api.id.clone(),
                    definition: imported.definition.clone(),
                    expected_version: Some(api.aggregate_version),
                },
                false,
            ),
            _ => {
                let api_id = new_id();
                let command = Command::CreateApi {
                    api_id: api_id.clone(),
                    definition: imported.definition.clone(),
                };
                (api_id, command, true)
            }
        };
        let mut scratch = state.clone();
        let mut steps = Vec::new();
        let mut push = |scratch: &mut State, command: Command| -> Result<(), Status> {
            let expected_content_hash = scratch.content_hash();
            simulate(scratch, command.clone()).map_err(|e| import_refusal(&imported, e))?;
            steps.push(Step {
                command,
                object: format!(
                    "api {} {}",
                    imported.definition.context, imported.definition.version
                ),
                expected_content_hash,
            });
            Ok(())
        };
        push(&mut scratch, first)?;
        if let Some(target) = target {
            let now = scratch
                .api(&api_id)
                .map_or(lifecycle::State::Created, Api::lifecycle);
            let path = transitions(now, target).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "api.yaml#/data/lifeCycleStatus: the API cannot go from {} to {}",
                    now.as_str_name(),
                    target.as_str_name()
                ))
            })?;
            for state in path {
                let command = Command::ChangeLifecycle {
                    api_id: api_id.clone(),
                    target: state,
                    expected_version: None,
                };
                push(&mut scratch, command)?;
            }
        }
        let count = steps.len() as u32;
        if r.dry_run {
            let mut api = scratch.api(&api_id).cloned().unwrap_or_default();
            api.id.clear();
            return Ok(Response::new(admin::ImportApiResponse {
                api: Some(api),
                created: false,
                steps: count,
            }));
        }
        self.run_steps(&steps, &ctx).await?;
        Ok(Response::new(admin::ImportApiResponse {
            api: Some(self.api(&api_id)?),
            created,
            steps: count,
        }))
    }

    pub(super) async fn export_api_rpc(
        &self,
        request: Request<admin::ExportApiRequest>,
    ) -> RpcResult<admin::ExportApiResponse> {
        let (_, r) = self.authorized(request, scopes::ADMIN)?;
        let api = if !r.api_id.is_empty() {
            self.api(&r.api_id)?
        } else {
            let state = self.model.read();
            state
                .api_by_context_version(&r.context, &r.version)
                .cloned()
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no API with context {:?} and version {:?} (give api_id, or context and version)",
                        r.context, r.version
                    ))
                })?
        };
        let options = ExportOptions {
            gateway_url: if r.gateway_url.is_empty() {
                "https://localhost:8243".into()
            } else {
                r.gateway_url
            },
            token_url: if r.token_url.is_empty() {
                gatehouse_tokens::DEFAULT_ISSUER.into()
            } else {
                r.token_url
            },
        };
        let document = openapi::export(&api.definition.unwrap_or_default(), &options);
        Ok(Response::new(admin::ExportApiResponse {
            document: serde_json::to_string_pretty(&document)
                .map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    pub(super) async fn export_config_rpc(
        &self,
        request: Request<admin::ExportConfigRequest>,
    ) -> RpcResult<admin::ExportConfigResponse> {
        self.authorized(request, scopes::ADMIN)?;
        let state = self.model.read().clone();
        let response = blocking(move || admin::ExportConfigResponse {
            document: config::to_yaml(&config::export(&state)),
            content_hash: hex(state.content_hash()),
            sequence: state.sequence(),
        })
        .await?;
        Ok(Response::new(response))
    }

    /// Reads and plans a declarative file against control's state (off the runtime).
    async fn plan_file(&self, request: admin::PlanConfigRequest) -> Result<Plan, Status> {
        let admin::PlanConfigRequest {
            document,
            file_name: file,
            prune,
        } = request;
        let limits = self.limits.clone();
        bounded(
            "document",
            document.len(),
            limits.max_config_bytes,
            "--max-config-bytes",
        )?;
        let file = if file.is_empty() {
            "gatehouse.yaml".to_string()
        } else {
            file
        };
        let state = self.model.read().clone();
        blocking(move || {
            let parsed = config::parse(&file, &document)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let objects = config::object_count(&parsed);
            if objects > limits.max_config_objects {
                return Err(Status::invalid_argument(format!(
                    "{file}: {objects} objects; at most {} (--max-config-objects)",
                    limits.max_config_objects
                )));
            }
            plan::plan(
                &state,
                &file,
                &document,
                &parsed,
                PlanOptions { prune },
                &mut new_id,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .await?
    }

    pub(super) async fn plan_config_rpc(
        &self,
        request: Request<admin::PlanConfigRequest>,
    ) -> RpcResult<admin::PlanConfigResponse> {
        let (_, file) = self.authorized(request, scopes::ADMIN)?;
        let plan = self.plan_file(file).await?;
        Ok(Response::new(plan_response(&plan)))
    }

    pub(super) async fn apply_config_rpc(
        &self,
        request: Request<admin::ApplyConfigRequest>,
    ) -> RpcResult<admin::ApplyConfigResponse> {
        let (ctx, r) = self.authorized(request, scopes::ADMIN)?;
        let file = r.file.ok_or_else(|| invalid("file", "is required"))?;
        let plan = self.plan_file(file).await?;
        if !r.expected_content_hash.is_empty()
            && r.expected_content_hash != hex(plan.read_content_hash)
        {
            return Err(Status::aborted(format!(
                "the configuration changed since it was planned (content hash {}, expected {}): nothing was written; diff again",
                hex(plan.read_content_hash),
                r.expected_content_hash
            )));
        }
        let applied = if r.dry_run {
            0
        } else {
            self.run_steps(&plan.steps, &ctx).await?
        };
        let content_hash = if r.dry_run {
            hex(plan.read_content_hash)
        } else {
            hex(self.model.read().content_hash())
        };
        Ok(Response::new(admin::ApplyConfigResponse {
            plan: Some(plan_response(&plan)),
            steps_applied: applied as u32,
            content_hash,
        }))
    }
}
