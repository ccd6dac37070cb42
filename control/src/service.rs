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

use gatehouse_node::commands::{CallContext, CommandExecutor};
use gatehouse_tokens::scopes;

use crate::auth::AdminAuth;
use gatehouse_node::read_model::ReadModel;
use gatehouse_node::status::{invalid, log_status};

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

    fn subscription(&self, id: &str) -> Result<Subscription, Status> {
        self.model
            .read()
            .subscription(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("subscription {id} not found")))
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        Err(invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
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
        let ctx = self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        let application_id = new_id();
        let owner = if r.owner.is_empty() {
            ctx.actor.clone()
        } else {
            r.owner
        };
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
        self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
        Ok(Response::new(self.application(&r.application_id)?))
    }

    async fn list_applications(
        &self,
        request: Request<admin::ListApplicationsRequest>,
    ) -> Result<Response<admin::ListApplicationsResponse>, Status> {
        self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        let applications = self
            .model
            .read()
            .applications()
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
        let ctx = self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
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
        let ctx = self.auth.authorize(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
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
        let ctx = self.auth.authorize(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
        required("subscription_id", &r.subscription_id)?;
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
        self.auth.authorize(&request, scopes::SUBSCRIBE)?;
        let r = request.into_inner();
        let subscriptions = self
            .model
            .read()
            .subscriptions()
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
        let ctx = self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
        let keys = self
            .key_manager
            .clone()
            .generate_keys(keymanager::GenerateKeysRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                grant_types: r.grant_types,
                token_lifetime_seconds: r.token_lifetime_seconds,
                actor: ctx.actor,
                traceparent: ctx.traceparent,
            })
            .await
            .map_err(Self::key_manager_status)?;
        Ok(keys)
    }

    async fn regenerate_secret(
        &self,
        request: Request<admin::RegenerateSecretRequest>,
    ) -> Result<Response<keymanager::ApplicationKeys>, Status> {
        let ctx = self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
        self.key_manager
            .clone()
            .regenerate_secret(keymanager::RegenerateSecretRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                actor: ctx.actor,
                traceparent: ctx.traceparent,
            })
            .await
            .map_err(Self::key_manager_status)
    }

    async fn revoke_keys(
        &self,
        request: Request<admin::RevokeKeysRequest>,
    ) -> Result<Response<admin::RevokeKeysResponse>, Status> {
        let ctx = self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
        self.key_manager
            .clone()
            .revoke_keys(keymanager::RevokeKeysRequest {
                application_id: r.application_id,
                key_type: r.key_type,
                actor: ctx.actor,
                traceparent: ctx.traceparent,
            })
            .await
            .map_err(Self::key_manager_status)?;
        Ok(Response::new(admin::RevokeKeysResponse {}))
    }

    async fn list_keys(
        &self,
        request: Request<admin::ListKeysRequest>,
    ) -> Result<Response<keymanager::ListKeysResponse>, Status> {
        self.auth.authorize(&request, scopes::APP_MANAGE)?;
        let r = request.into_inner();
        required("application_id", &r.application_id)?;
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
        let ctx = self.auth.authorize(&request, scopes::ADMIN)?;
        let r = request.into_inner();
        self.key_manager
            .clone()
            .rotate_signing_key(keymanager::RotateSigningKeyRequest {
                alg: r.alg,
                actor: ctx.actor,
            })
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
