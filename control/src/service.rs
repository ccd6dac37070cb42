//! The `gatehouse.admin.v1.ControlPlane` gRPC service.
//!
//! Each write RPC turns its request into a domain [`Command`], runs it through the
//! [`CommandExecutor`] and answers with the aggregate as control's fold now has it. Each
//! read RPC answers from the fold. Input that cannot even be turned into a command (an
//! unknown enum value, a missing id) is refused here with INVALID_ARGUMENT; everything
//! else is the domain's call.

mod declarative;

pub use declarative::DeclarativeLimits;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use gatehouse_domain::redact::redact_event;
use gatehouse_domain::{Command, CustomPolicy};
use gatehouse_eventlog::EventLog;
use gatehouse_node::grpc::RpcResult;
use gatehouse_proto::admin::{self, control_plane_server::ControlPlane};
use gatehouse_proto::events::{
    Api, Application, EventEnvelope, Snapshot, Subscription, ThrottlePolicy, lifecycle,
    throttle_policy,
};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::gateways::GatewayRegistry;
use gatehouse_proto::keymanager::{self, key_manager_client::KeyManagerClient};

use gatehouse_node::auth::Caller;
use gatehouse_node::commands::{CallContext, CommandExecutor};
use gatehouse_tokens::scopes;

use gatehouse_node::auth::AdminAuth;
use gatehouse_node::read_model::ReadModel;
use gatehouse_node::status::{found, invalid, log_status, required};

/// A client of token-service's `KeyManager`.
type KeyManager = KeyManagerClient<Channel>;

/// The admin API's state: the log (for watching), the fold (for reading) and the
/// executor (for writing).
pub struct ControlService {
    log: Arc<dyn EventLog>,
    model: Arc<ReadModel>,
    commands: CommandExecutor,
    /// token-service's `KeyManager`, which owns application keys. A lazy channel:
    /// control starts without token-service and connects on first use.
    key_manager: KeyManager,
    gateways: Arc<GatewayRegistry>,
    auth: AdminAuth,
    /// Bounds of the migration and GitOps RPCs.
    limits: DeclarativeLimits,
}

impl ControlService {
    pub fn new(
        log: Arc<dyn EventLog>,
        model: Arc<ReadModel>,
        key_manager: Channel,
        gateways: Arc<GatewayRegistry>,
        auth: AdminAuth,
        limits: DeclarativeLimits,
    ) -> Self {
        let commands = CommandExecutor::new(log.clone(), model.clone());
        ControlService {
            limits,
            auth,
            log,
            model,
            commands,
            key_manager: KeyManagerClient::new(key_manager),
            gateways,
        }
    }

    /// The request's message, once its caller is authorized for `scope`, with the call's
    /// context (the actor of every event the call causes).
    fn authorized<T>(&self, request: Request<T>, scope: &str) -> Result<(CallContext, T), Status> {
        let ctx = self.auth.authorize(&request, scope)?;
        Ok((ctx, request.into_inner()))
    }

    /// [`authorized`](Self::authorized), keeping the verified caller (for ownership).
    fn authorized_caller<T>(
        &self,
        request: Request<T>,
        scope: &str,
    ) -> Result<(Caller, T), Status> {
        let caller = self.auth.caller(&request, scope)?;
        Ok((caller, request.into_inner()))
    }

    /// A write RPC's last steps: runs `command` (returning once control's fold has its
    /// events, so the caller reads its own write) and answers with `answer`, read from
    /// the fold after it.
    async fn write<T>(
        &self,
        command: Command,
        ctx: &CallContext,
        answer: impl FnOnce() -> Result<T, Status>,
    ) -> RpcResult<T> {
        self.commands.execute(command, ctx).await?;
        answer().map(Response::new)
    }

    /// Calls token-service's KeyManager with `call`, passing the admin's request on as
    /// it came (the admin API takes the key manager's own messages) on behalf of the
    /// admin calling control (see [`on_behalf`]), who must hold `scope` and, when the
    /// call is about an application's keys, may manage `application_id`.
    async fn forward<M, R, Fut>(
        &self,
        request: Request<M>,
        scope: &str,
        application_id: Option<&str>,
        call: impl FnOnce(KeyManager, Request<M>) -> Fut,
    ) -> RpcResult<R>
    where
        Fut: Future<Output = RpcResult<R>>,
    {
        let caller = self.auth.caller(&request, scope)?;
        if let Some(id) = application_id {
            self.owned_application(&caller, id)?;
        }
        call(self.key_manager.clone(), on_behalf(request))
            .await
            .map_err(key_manager_status)
    }

    fn api(&self, id: &str) -> Result<Api, Status> {
        found("api", id, self.model.read().api(id))
    }

    fn application(&self, id: &str) -> Result<Application, Status> {
        found("application", id, self.model.read().application(id))
    }

    /// The application `id`, if `caller` may manage it (its owner, or an admin).
    fn owned_application(&self, caller: &Caller, id: &str) -> Result<Application, Status> {
        required("application_id", id)?;
        let application = self.application(id)?;
        if caller.may_manage(&application.owner) {
            Ok(application)
        } else {
            Err(not_owned(id))
        }
    }

    /// The subscription `id`, if `caller` may manage its application.
    fn owned_subscription(&self, caller: &Caller, id: &str) -> Result<Subscription, Status> {
        required("subscription_id", id)?;
        let subscription = self.subscription(id)?;
        self.owned_application(caller, &subscription.application_id)?;
        Ok(subscription)
    }

    fn subscription(&self, id: &str) -> Result<Subscription, Status> {
        found("subscription", id, self.model.read().subscription(id))
    }
}

/// Passes a token-service error on, saying which service failed.
fn key_manager_status(status: Status) -> Status {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => Status::unavailable(format!(
            "token-service (key manager) unreachable: {}",
            status.message()
        )),
        _ => status,
    }
}

fn not_owned(application_id: &str) -> Status {
    Status::permission_denied(format!(
        "application {application_id} is not the caller's: only its owner or an apim:admin caller may use it"
    ))
}

/// A call to token-service's KeyManager on behalf of the admin who called control: the
/// admin's own bearer token goes along, so token-service verifies the caller itself and
/// records it as the actor (control's node certificate proves the call comes through
/// control).
fn on_behalf<M>(incoming: Request<M>) -> Request<M> {
    let (metadata, _, message) = incoming.into_parts();
    let mut request = Request::new(message);
    for name in ["authorization", "traceparent", "tracestate"] {
        if let Some(value) = metadata.get(name) {
            request.metadata_mut().insert(name, value.clone());
        }
    }
    request
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn expected_version(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// The server stream of `WatchEvents`.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<admin::WatchEventsResponse, Status>> + Send>>;

/// The log from `from` (0 or 1: the start) on, as `WatchEvents` answers.
pub async fn watch_stream(log: &Arc<dyn EventLog>, from: u64) -> Result<WatchStream, Status> {
    let records = log.follow(from.max(1)).await.map_err(log_status)?;
    let stream = records.map(|record| {
        let record = record.map_err(log_status)?;
        // A record that is not an envelope goes on without one: every reader then
        // quarantines it the same way (see `gatehouse_node::fold`).
        let event = EventEnvelope::decode(record.payload.as_ref())
            .ok()
            .map(|mut event| {
                redact_event(&mut event);
                event
            });
        Ok(admin::WatchEventsResponse {
            sequence: record.sequence,
            subject: record.subject,
            event,
        })
    });
    Ok(Box::pin(stream))
}

#[tonic::async_trait]
impl ControlPlane for ControlService {
    async fn create_api(&self, request: Request<admin::CreateApiRequest>) -> RpcResult<Api> {
        let (ctx, r) = self.authorized(request, scopes::API_CREATE)?;
        let definition = r
            .definition
            .ok_or_else(|| invalid("definition", "is required"))?;
        let api_id = new_id();
        let command = Command::CreateApi {
            api_id: api_id.clone(),
            definition,
        };
        self.write(command, &ctx, || self.api(&api_id)).await
    }

    async fn create_api_version(
        &self,
        request: Request<admin::CreateApiVersionRequest>,
    ) -> RpcResult<Api> {
        let (ctx, r) = self.authorized(request, scopes::API_CREATE)?;
        required("source_api_id", &r.source_api_id)?;
        let api_id = new_id();
        let command = Command::CreateApiVersion {
            api_id: api_id.clone(),
            source_api_id: r.source_api_id,
            new_version: r.new_version,
            make_default: r.make_default,
        };
        self.write(command, &ctx, || self.api(&api_id)).await
    }

    async fn update_api(&self, request: Request<admin::UpdateApiRequest>) -> RpcResult<Api> {
        let (ctx, r) = self.authorized(request, scopes::API_CREATE)?;
        required("api_id", &r.api_id)?;
        let definition = r
            .definition
            .ok_or_else(|| invalid("definition", "is required"))?;
        let command = Command::UpdateApi {
            api_id: r.api_id.clone(),
            definition,
            expected_version: expected_version(r.expected_version),
        };
        self.write(command, &ctx, || self.api(&r.api_id)).await
    }

    async fn change_lifecycle(
        &self,
        request: Request<admin::ChangeLifecycleRequest>,
    ) -> RpcResult<Api> {
        let (ctx, r) = self.authorized(request, scopes::API_PUBLISH)?;
        required("api_id", &r.api_id)?;
        let target = lifecycle::State::try_from(r.target)
            .map_err(|_| invalid("target", &format!("unknown lifecycle state {}", r.target)))?;
        let command = Command::ChangeLifecycle {
            api_id: r.api_id.clone(),
            target,
            expected_version: expected_version(r.expected_version),
        };
        self.write(command, &ctx, || self.api(&r.api_id)).await
    }

    async fn delete_api(
        &self,
        request: Request<admin::DeleteApiRequest>,
    ) -> RpcResult<admin::DeleteApiResponse> {
        let (ctx, r) = self.authorized(request, scopes::API_DELETE)?;
        required("api_id", &r.api_id)?;
        let command = Command::DeleteApi { api_id: r.api_id };
        self.write(command, &ctx, || Ok(admin::DeleteApiResponse {}))
            .await
    }

    async fn get_api(&self, request: Request<admin::GetApiRequest>) -> RpcResult<Api> {
        let (_, r) = self.authorized(request, scopes::API_VIEW)?;
        required("api_id", &r.api_id)?;
        Ok(Response::new(self.api(&r.api_id)?))
    }

    async fn list_apis(
        &self,
        request: Request<admin::ListApisRequest>,
    ) -> RpcResult<admin::ListApisResponse> {
        let (_, r) = self.authorized(request, scopes::API_VIEW)?;
        let lifecycle = lifecycle::State::try_from(r.lifecycle).map_err(|_| {
            invalid(
                "lifecycle",
                &format!("unknown lifecycle state {}", r.lifecycle),
            )
        })?;
        let state = self.model.read();
        let apis = state
            .apis()
            .filter(|a| {
                r.context.is_empty()
                    || a.definition
                        .as_ref()
                        .is_some_and(|d| d.context == r.context)
            })
            .filter(|a| lifecycle == lifecycle::State::Unspecified || a.lifecycle() == lifecycle)
            .cloned()
            .collect();
        Ok(Response::new(admin::ListApisResponse { apis }))
    }

    async fn create_policy(
        &self,
        request: Request<admin::CreatePolicyRequest>,
    ) -> RpcResult<ThrottlePolicy> {
        let (ctx, r) = self.authorized(request, scopes::TIER_MANAGE)?;
        let level = throttle_policy::Level::try_from(r.level)
            .map_err(|_| invalid("level", &format!("unknown policy level {}", r.level)))?;
        let command = Command::CreatePolicy(CustomPolicy {
            name: r.name.clone(),
            level,
            request_count: r.request_count,
            unit_seconds: r.unit_seconds,
            unlimited: r.unlimited,
            description: r.description,
        });
        self.write(command, &ctx, || {
            let policy = self.model.read().policy(level, &r.name).cloned();
            policy.ok_or_else(|| Status::internal("policy missing after creation"))
        })
        .await
    }

    async fn list_policies(
        &self,
        request: Request<admin::ListPoliciesRequest>,
    ) -> RpcResult<admin::ListPoliciesResponse> {
        let (_, r) = self.authorized(request, scopes::API_VIEW)?;
        let level = throttle_policy::Level::try_from(r.level)
            .map_err(|_| invalid("level", &format!("unknown policy level {}", r.level)))?;
        let policies = self
            .model
            .read()
            .policies()
            .filter(|p| level == throttle_policy::Level::Unspecified || p.level() == level)
            .cloned()
            .collect();
        Ok(Response::new(admin::ListPoliciesResponse { policies }))
    }

    async fn create_application(
        &self,
        request: Request<admin::CreateApplicationRequest>,
    ) -> RpcResult<Application> {
        let (caller, r) = self.authorized_caller(request, scopes::APP_MANAGE)?;
        let application_id = new_id();
        let command = Command::CreateApplication {
            application_id: application_id.clone(),
            name: r.name,
            owner: caller.owner_of_new(&r.owner)?,
            throttling_tier: r.throttling_tier,
            description: r.description,
        };
        let answer = || self.application(&application_id);
        self.write(command, &caller.context, answer).await
    }

    async fn get_application(
        &self,
        request: Request<admin::GetApplicationRequest>,
    ) -> RpcResult<Application> {
        let (caller, r) = self.authorized_caller(request, scopes::APP_MANAGE)?;
        let application = self.owned_application(&caller, &r.application_id)?;
        Ok(Response::new(application))
    }

    async fn list_applications(
        &self,
        request: Request<admin::ListApplicationsRequest>,
    ) -> RpcResult<admin::ListApplicationsResponse> {
        let (caller, r) = self.authorized_caller(request, scopes::APP_MANAGE)?;
        let applications = self
            .model
            .read()
            .applications()
            .filter(|a| caller.may_manage(&a.owner))
            .filter(|a| r.owner.is_empty() || a.owner == r.owner)
            .cloned()
            .collect();
        Ok(Response::new(admin::ListApplicationsResponse {
            applications,
        }))
    }

    async fn delete_application(
        &self,
        request: Request<admin::DeleteApplicationRequest>,
    ) -> RpcResult<admin::DeleteApplicationResponse> {
        let (caller, r) = self.authorized_caller(request, scopes::APP_MANAGE)?;
        self.owned_application(&caller, &r.application_id)?;
        let command = Command::DeleteApplication {
            application_id: r.application_id,
        };
        let answer = || Ok(admin::DeleteApplicationResponse {});
        self.write(command, &caller.context, answer).await
    }

    async fn subscribe(
        &self,
        request: Request<admin::SubscribeRequest>,
    ) -> RpcResult<Subscription> {
        let (caller, r) = self.authorized_caller(request, scopes::SUBSCRIBE)?;
        self.owned_application(&caller, &r.application_id)?;
        let subscription_id = new_id();
        let command = Command::Subscribe {
            subscription_id: subscription_id.clone(),
            application_id: r.application_id,
            api_id: r.api_id,
            tier: r.tier,
        };
        let answer = || self.subscription(&subscription_id);
        self.write(command, &caller.context, answer).await
    }

    async fn block_subscription(
        &self,
        request: Request<admin::BlockSubscriptionRequest>,
    ) -> RpcResult<Subscription> {
        let (ctx, r) = self.authorized(request, scopes::SUBSCRIPTION_BLOCK)?;
        required("subscription_id", &r.subscription_id)?;
        let command = Command::BlockSubscription {
            subscription_id: r.subscription_id.clone(),
            production_only: r.production_only,
        };
        self.write(command, &ctx, || self.subscription(&r.subscription_id))
            .await
    }

    async fn unblock_subscription(
        &self,
        request: Request<admin::UnblockSubscriptionRequest>,
    ) -> RpcResult<Subscription> {
        let (ctx, r) = self.authorized(request, scopes::SUBSCRIPTION_BLOCK)?;
        required("subscription_id", &r.subscription_id)?;
        let subscription_id = r.subscription_id;
        let command = Command::UnblockSubscription {
            subscription_id: subscription_id.clone(),
        };
        self.write(command, &ctx, || self.subscription(&subscription_id))
            .await
    }

    async fn unsubscribe(
        &self,
        request: Request<admin::UnsubscribeRequest>,
    ) -> RpcResult<admin::UnsubscribeResponse> {
        let (caller, r) = self.authorized_caller(request, scopes::SUBSCRIBE)?;
        self.owned_subscription(&caller, &r.subscription_id)?;
        let command = Command::Unsubscribe {
            subscription_id: r.subscription_id,
        };
        let answer = || Ok(admin::UnsubscribeResponse {});
        self.write(command, &caller.context, answer).await
    }

    async fn grant_scopes(
        &self,
        request: Request<admin::GrantScopesRequest>,
    ) -> RpcResult<Subscription> {
        let (ctx, r) = self.authorized(request, scopes::ADMIN)?;
        required("subscription_id", &r.subscription_id)?;
        let command = Command::GrantSubscriptionScopes {
            subscription_id: r.subscription_id.clone(),
            scopes: r.scopes,
        };
        self.write(command, &ctx, || self.subscription(&r.subscription_id))
            .await
    }

    async fn list_subscriptions(
        &self,
        request: Request<admin::ListSubscriptionsRequest>,
    ) -> RpcResult<admin::ListSubscriptionsResponse> {
        let (caller, r) = self.authorized_caller(request, scopes::SUBSCRIBE)?;
        let state = self.model.read();
        let subscriptions = state
            .subscriptions()
            .filter(|s| {
                state
                    .application(&s.application_id)
                    .is_some_and(|a| caller.may_manage(&a.owner))
            })
            .filter(|s| r.application_id.is_empty() || s.application_id == r.application_id)
            .filter(|s| r.api_id.is_empty() || s.api_id == r.api_id)
            .cloned()
            .collect();
        Ok(Response::new(admin::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn generate_keys(
        &self,
        request: Request<keymanager::GenerateKeysRequest>,
    ) -> RpcResult<keymanager::ApplicationKeys> {
        let application = request.get_ref().application_id.clone();
        let call = |mut keys: KeyManager, m| async move { keys.generate_keys(m).await };
        self.forward(request, scopes::APP_MANAGE, Some(&application), call)
            .await
    }

    async fn regenerate_secret(
        &self,
        request: Request<keymanager::RegenerateSecretRequest>,
    ) -> RpcResult<keymanager::ApplicationKeys> {
        let application = request.get_ref().application_id.clone();
        let call = |mut keys: KeyManager, m| async move { keys.regenerate_secret(m).await };
        self.forward(request, scopes::APP_MANAGE, Some(&application), call)
            .await
    }

    async fn revoke_keys(
        &self,
        request: Request<keymanager::RevokeKeysRequest>,
    ) -> RpcResult<keymanager::RevokeKeysResponse> {
        let application = request.get_ref().application_id.clone();
        let call = |mut keys: KeyManager, m| async move { keys.revoke_keys(m).await };
        self.forward(request, scopes::APP_MANAGE, Some(&application), call)
            .await
    }

    async fn list_keys(
        &self,
        request: Request<keymanager::ListKeysRequest>,
    ) -> RpcResult<keymanager::ListKeysResponse> {
        let (caller, r) = self.authorized_caller(request, scopes::APP_MANAGE)?;
        self.owned_application(&caller, &r.application_id)?;
        // Answered from control's own fold: the keys are on the log.
        let keys = self
            .model
            .read()
            .clients()
            .filter(|c| c.application_id == r.application_id)
            .map(|c| {
                let mut c = c.clone();
                c.secret_hash.clear();
                c
            })
            .collect();
        Ok(Response::new(keymanager::ListKeysResponse { keys }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<keymanager::RotateSigningKeyRequest>,
    ) -> RpcResult<keymanager::RotateSigningKeyResponse> {
        let call = |mut keys: KeyManager, m| async move { keys.rotate_signing_key(m).await };
        self.forward(request, scopes::ADMIN, None, call).await
    }

    async fn list_gateways(
        &self,
        request: Request<admin::ListGatewaysRequest>,
    ) -> RpcResult<admin::ListGatewaysResponse> {
        self.auth.authorize(&request, scopes::ADMIN)?;
        let (sequence, hash) = {
            let state = self.model.read();
            (state.sequence(), state.config_hash())
        };
        Ok(Response::new(admin::ListGatewaysResponse {
            gateways: self.gateways.list(sequence, &hash),
            control_sequence: sequence,
            control_config_hash: hash,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<admin::GetSnapshotRequest>,
    ) -> RpcResult<Snapshot> {
        self.auth.authorize(&request, scopes::ADMIN)?;
        Ok(Response::new(crate::gateways::public_snapshot(&self.model)))
    }

    async fn import_api(
        &self,
        request: Request<admin::ImportApiRequest>,
    ) -> RpcResult<admin::ImportApiResponse> {
        self.import_api_rpc(request).await
    }

    async fn export_api(
        &self,
        request: Request<admin::ExportApiRequest>,
    ) -> RpcResult<admin::ExportApiResponse> {
        self.export_api_rpc(request).await
    }

    async fn export_config(
        &self,
        request: Request<admin::ExportConfigRequest>,
    ) -> RpcResult<admin::ExportConfigResponse> {
        self.export_config_rpc(request).await
    }

    async fn plan_config(
        &self,
        request: Request<admin::PlanConfigRequest>,
    ) -> RpcResult<admin::PlanConfigResponse> {
        self.plan_config_rpc(request).await
    }

    async fn apply_config(
        &self,
        request: Request<admin::ApplyConfigRequest>,
    ) -> RpcResult<admin::ApplyConfigResponse> {
        self.apply_config_rpc(request).await
    }

    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        request: Request<admin::WatchEventsRequest>,
    ) -> RpcResult<Self::WatchEventsStream> {
        let (_, r) = self.authorized(request, scopes::ADMIN)?;
        Ok(Response::new(
            watch_stream(&self.log, r.from_sequence).await?,
        ))
    }
}
