//! The `gatehouse.admin.v1.ControlPlane` gRPC service.
//!
//! Each write RPC turns its request into a domain [`Command`], runs it through the
//! [`CommandExecutor`] and answers with the aggregate as control's fold now has it. Each
//! read RPC answers from the fold. Input that cannot even be turned into a command (an
//! unknown enum value, a missing id) is refused here with INVALID_ARGUMENT; everything
//! else is the domain's call.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use gatehouse_domain::Command;
use gatehouse_domain::redact::redact_event;
use gatehouse_eventlog::EventLog;
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
use gatehouse_node::status::{invalid, log_status, required};

/// The admin API's state: the log (for watching), the fold (for reading) and the
/// executor (for writing).
pub struct ControlService {
    log: Arc<dyn EventLog>,
    model: Arc<ReadModel>,
    commands: CommandExecutor,
    /// token-service's `KeyManager`, which owns application keys. A lazy channel:
    /// control starts without token-service and connects on first use.
    key_manager: KeyManagerClient<Channel>,
    gateways: Arc<GatewayRegistry>,
    auth: AdminAuth,
}

impl ControlService {
    pub fn new(
        log: Arc<dyn EventLog>,
        model: Arc<ReadModel>,
        key_manager: Channel,
        gateways: Arc<GatewayRegistry>,
        auth: AdminAuth,
    ) -> Self {
        let commands = CommandExecutor::new(log.clone(), model.clone());
        ControlService {
            auth,
            log,
            model,
            commands,
            key_manager: KeyManagerClient::new(key_manager),
            gateways,
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

    async fn run(&self, command: Command, ctx: &CallContext) -> Result<(), Status> {
        self.commands.execute(command, ctx).await?;
        Ok(())
    }

    fn api(&self, id: &str) -> Result<Api, Status> {
        self.model
            .read()
            .api(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("api {id} not found")))
    }

    fn application(&self, id: &str) -> Result<Application, Status> {
        self.model
            .read()
            .application(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("application {id} not found")))
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
        self.model
            .read()
            .subscription(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("subscription {id} not found")))
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
fn on_behalf<T, M>(incoming: &Request<T>, message: M) -> Request<M> {
    let mut request = Request::new(message);
    for name in ["authorization", "traceparent", "tracestate"] {
        if let Some(value) = incoming.metadata().get(name) {
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
    async fn create_api(
        &self,
        request: Request<admin::CreateApiRequest>,
    ) -> Result<Response<Api>, Status> {
        let ctx = self.auth.authorize(&request, scopes::API_CREATE)?;
        let definition = request
            .into_inner()
            .definition
            .ok_or_else(|| invalid("definition", "is required"))?;
        let api_id = new_id();
        self.run(
            Command::CreateApi {
                api_id: api_id.clone(),
                definition,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.api(&api_id)?))
    }

    async fn create_api_version(
        &self,
        request: Request<admin::CreateApiVersionRequest>,
    ) -> Result<Response<Api>, Status> {
        let ctx = self.auth.authorize(&request, scopes::API_CREATE)?;
        let r = request.into_inner();
        required("source_api_id", &r.source_api_id)?;
        let api_id = new_id();
        self.run(
            Command::CreateApiVersion {
                api_id: api_id.clone(),
                source_api_id: r.source_api_id,
                new_version: r.new_version,
                make_default: r.make_default,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.api(&api_id)?))
    }

    async fn update_api(
        &self,
        request: Request<admin::UpdateApiRequest>,
    ) -> Result<Response<Api>, Status> {
        let ctx = self.auth.authorize(&request, scopes::API_CREATE)?;
        let r = request.into_inner();
        required("api_id", &r.api_id)?;
        let definition = r
            .definition
            .ok_or_else(|| invalid("definition", "is required"))?;
        self.run(
            Command::UpdateApi {
                api_id: r.api_id.clone(),
                definition,
                expected_version: expected_version(r.expected_version),
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.api(&r.api_id)?))
    }

    async fn change_lifecycle(
        &self,
        request: Request<admin::ChangeLifecycleRequest>,
    ) -> Result<Response<Api>, Status> {
        let ctx = self.auth.authorize(&request, scopes::API_PUBLISH)?;
        let r = request.into_inner();
        required("api_id", &r.api_id)?;
        let target = lifecycle::State::try_from(r.target)
            .map_err(|_| invalid("target", &format!("unknown lifecycle state {}", r.target)))?;
        self.run(
            Command::ChangeLifecycle {
                api_id: r.api_id.clone(),
                target,
                expected_version: expected_version(r.expected_version),
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.api(&r.api_id)?))
    }

    async fn delete_api(
        &self,
        request: Request<admin::DeleteApiRequest>,
    ) -> Result<Response<admin::DeleteApiResponse>, Status> {
        let ctx = self.auth.authorize(&request, scopes::API_DELETE)?;
        let r = request.into_inner();
        required("api_id", &r.api_id)?;
        self.run(Command::DeleteApi { api_id: r.api_id }, &ctx)
            .await?;
        Ok(Response::new(admin::DeleteApiResponse {}))
    }

    async fn get_api(
        &self,
        request: Request<admin::GetApiRequest>,
    ) -> Result<Response<Api>, Status> {
        self.auth.authorize(&request, scopes::API_VIEW)?;
        let r = request.into_inner();
        required("api_id", &r.api_id)?;
        Ok(Response::new(self.api(&r.api_id)?))
    }

    async fn list_apis(
        &self,
        request: Request<admin::ListApisRequest>,
    ) -> Result<Response<admin::ListApisResponse>, Status> {
        self.auth.authorize(&request, scopes::API_VIEW)?;
        let r = request.into_inner();
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
    ) -> Result<Response<ThrottlePolicy>, Status> {
        let ctx = self.auth.authorize(&request, scopes::TIER_MANAGE)?;
        let r = request.into_inner();
        let level = throttle_policy::Level::try_from(r.level)
            .map_err(|_| invalid("level", &format!("unknown policy level {}", r.level)))?;
        self.run(
            Command::CreatePolicy {
                name: r.name.clone(),
                level,
                request_count: r.request_count,
                unit_seconds: r.unit_seconds,
                unlimited: r.unlimited,
                description: r.description,
            },
            &ctx,
        )
        .await?;
        let policy = self.model.read().policy(level, &r.name).cloned();
        policy
            .map(Response::new)
            .ok_or_else(|| Status::internal("policy missing after creation"))
    }

    async fn list_policies(
        &self,
        request: Request<admin::ListPoliciesRequest>,
    ) -> Result<Response<admin::ListPoliciesResponse>, Status> {
        self.auth.authorize(&request, scopes::API_VIEW)?;
        let r = request.into_inner();
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
    ) -> Result<Response<Application>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        let application_id = new_id();
        let owner = caller.owner_of_new(&r.owner)?;
        let ctx = caller.context;
        self.run(
            Command::CreateApplication {
                application_id: application_id.clone(),
                name: r.name,
                owner,
                throttling_tier: r.throttling_tier,
                description: r.description,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.application(&application_id)?))
    }

    async fn get_application(
        &self,
        request: Request<admin::GetApplicationRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        Ok(Response::new(
            self.owned_application(&caller, &r.application_id)?,
        ))
    }

    async fn list_applications(
        &self,
        request: Request<admin::ListApplicationsRequest>,
    ) -> Result<Response<admin::ListApplicationsResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
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
    ) -> Result<Response<admin::DeleteApplicationResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        self.owned_application(&caller, &r.application_id)?;
        let ctx = caller.context;
        self.run(
            Command::DeleteApplication {
                application_id: r.application_id,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(admin::DeleteApplicationResponse {}))
    }

    async fn subscribe(
        &self,
        request: Request<admin::SubscribeRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = self.auth.caller(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
        self.owned_application(&caller, &r.application_id)?;
        let ctx = caller.context;
        let subscription_id = new_id();
        self.run(
            Command::Subscribe {
                subscription_id: subscription_id.clone(),
                application_id: r.application_id,
                api_id: r.api_id,
                tier: r.tier,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.subscription(&subscription_id)?))
    }

    async fn block_subscription(
        &self,
        request: Request<admin::BlockSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let ctx = self.auth.authorize(&request, scopes::SUBSCRIPTION_BLOCK)?;
        let r = request.into_inner();
        required("subscription_id", &r.subscription_id)?;
        self.run(
            Command::BlockSubscription {
                subscription_id: r.subscription_id.clone(),
                production_only: r.production_only,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.subscription(&r.subscription_id)?))
    }

    async fn unblock_subscription(
        &self,
        request: Request<admin::UnblockSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let ctx = self.auth.authorize(&request, scopes::SUBSCRIPTION_BLOCK)?;
        let r = request.into_inner();
        required("subscription_id", &r.subscription_id)?;
        self.run(
            Command::UnblockSubscription {
                subscription_id: r.subscription_id.clone(),
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(self.subscription(&r.subscription_id)?))
    }

    async fn unsubscribe(
        &self,
        request: Request<admin::UnsubscribeRequest>,
    ) -> Result<Response<admin::UnsubscribeResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
        self.owned_subscription(&caller, &r.subscription_id)?;
        let ctx = caller.context;
        self.run(
            Command::Unsubscribe {
                subscription_id: r.subscription_id,
            },
            &ctx,
        )
        .await?;
        Ok(Response::new(admin::UnsubscribeResponse {}))
    }

    async fn list_subscriptions(
        &self,
        request: Request<admin::ListSubscriptionsRequest>,
    ) -> Result<Response<admin::ListSubscriptionsResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
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
        request: Request<admin::GenerateKeysRequest>,
    ) -> Result<Response<keymanager::ApplicationKeys>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        self.owned_application(&caller, &request.get_ref().application_id)?;
        let r = request.get_ref().clone();
        let forwarded = on_behalf(
            &request,
            keymanager::GenerateKeysRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                grant_types: r.grant_types,
                token_lifetime_seconds: r.token_lifetime_seconds,
                ..Default::default()
            },
        );
        self.key_manager
            .clone()
            .generate_keys(forwarded)
            .await
            .map_err(Self::key_manager_status)
    }

    async fn regenerate_secret(
        &self,
        request: Request<admin::RegenerateSecretRequest>,
    ) -> Result<Response<keymanager::ApplicationKeys>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.get_ref().clone();
        self.owned_application(&caller, &r.application_id)?;
        let forwarded = on_behalf(
            &request,
            keymanager::RegenerateSecretRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                ..Default::default()
            },
        );
        self.key_manager
            .clone()
            .regenerate_secret(forwarded)
            .await
            .map_err(Self::key_manager_status)
    }

    async fn revoke_keys(
        &self,
        request: Request<admin::RevokeKeysRequest>,
    ) -> Result<Response<admin::RevokeKeysResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.get_ref().clone();
        self.owned_application(&caller, &r.application_id)?;
        let forwarded = on_behalf(
            &request,
            keymanager::RevokeKeysRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                ..Default::default()
            },
        );
        self.key_manager
            .clone()
            .revoke_keys(forwarded)
            .await
            .map_err(Self::key_manager_status)?;
        Ok(Response::new(admin::RevokeKeysResponse {}))
    }

    async fn list_keys(
        &self,
        request: Request<admin::ListKeysRequest>,
    ) -> Result<Response<keymanager::ListKeysResponse>, Status> {
        let caller = self.auth.caller(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
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
        request: Request<admin::RotateSigningKeyRequest>,
    ) -> Result<Response<keymanager::RotateSigningKeyResponse>, Status> {
        self.auth.caller(&request, scopes::ADMIN)?;
        let alg = request.get_ref().alg.clone();
        let forwarded = on_behalf(
            &request,
            keymanager::RotateSigningKeyRequest {
                alg,
                ..Default::default()
            },
        );
        self.key_manager
            .clone()
            .rotate_signing_key(forwarded)
            .await
            .map_err(Self::key_manager_status)
    }

    async fn list_gateways(
        &self,
        request: Request<admin::ListGatewaysRequest>,
    ) -> Result<Response<admin::ListGatewaysResponse>, Status> {
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
    ) -> Result<Response<Snapshot>, Status> {
        self.auth.authorize(&request, scopes::ADMIN)?;
        Ok(Response::new(crate::gateways::public_snapshot(&self.model)))
    }

    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        request: Request<admin::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.auth.authorize(&request, scopes::ADMIN)?;
        let from = request.into_inner().from_sequence;
        Ok(Response::new(watch_stream(&self.log, from).await?))
    }
}
