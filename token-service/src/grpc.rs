//! The `gatehouse.keymanager.v1.KeyManager` gRPC service (port 50052): application keys
//! and signing-key rotation, asked by control on behalf of an admin.
//!
//! **Who may call**: control, and only on an admin's behalf. The port serves mutual TLS
//! under the cluster CA; a call must come with control's node certificate
//! (`spiffe://gatehouse/control/...`; anything else is UNAUTHENTICATED or
//! PERMISSION_DENIED) and with the admin's own bearer token, which control forwards and
//! token-service verifies itself (signature, audience, issuer, revocation, the RPC's
//! scope) — so the actor recorded on every event is the verified admin, never a request
//! field, and an application's keys are managed only by its owner or an `apim:admin`
//! caller, here as in control.
//!
//! Each RPC turns into domain commands run through the [`Authority`]; domain errors
//! come back as gRPC statuses through `gatehouse_node::status` (INVALID_ARGUMENT,
//! NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, UNAVAILABLE).
//!
//! # Shared state
//!
//! The service holds only an `Arc<Authority>` (see there).

use std::sync::Arc;

use gatehouse_domain::Command;
use gatehouse_node::auth::{AdminAuth, Caller};
use gatehouse_node::commands::CallContext;
use gatehouse_node::grpc::RpcResult;
use gatehouse_node::pki::NodeRole;
use gatehouse_node::status::{found, invalid, required};
use gatehouse_node::tls::AnswersOnly;
use gatehouse_proto::events::{OAuthClient, o_auth_client::KeyType};
use gatehouse_proto::keymanager::{
    ApplicationKeys, GenerateKeysRequest, ListKeysRequest, ListKeysResponse,
    RegenerateSecretRequest, RevokeKeysRequest, RevokeKeysResponse, RotateSigningKeyRequest,
    RotateSigningKeyResponse, key_manager_server::KeyManager,
};
use gatehouse_tokens::scopes;
use tonic::{Request, Response, Status};

use crate::authority::{Authority, AuthorityError};
use crate::secrets;

/// Who may call `KeyManager`: control only (see the module docs).
const CONTROL_ONLY: AnswersOnly = AnswersOnly {
    service: "KeyManager",
    role: NodeRole::Control,
    callers: "control",
    certificate: "control's",
};

pub struct KeyManagerService {
    authority: Arc<Authority>,
    auth: AdminAuth,
}

impl KeyManagerService {
    pub fn new(authority: Arc<Authority>, auth: AdminAuth) -> Self {
        KeyManagerService { authority, auth }
    }

    /// The admin on whose behalf control calls (see the module docs).
    fn authorize<T>(&self, request: &Request<T>, scope: &str) -> Result<Caller, Status> {
        CONTROL_ONLY.caller(request)?;
        self.auth.caller(request, scope)
    }

    /// The request's message and the call's context, for an admin (on whose behalf
    /// control calls) who holds `apim:app_manage` and may manage the keys of the
    /// application the message names (its `application_id`).
    fn for_owner<T>(
        &self,
        request: Request<T>,
        application_id: fn(&T) -> &str,
    ) -> Result<(CallContext, T), Status> {
        let caller = self.authorize(&request, scopes::APP_MANAGE)?;
        let message = request.into_inner();
        self.check_owner(&caller, application_id(&message))?;
        Ok((caller.context, message))
    }

    /// [`for_owner`](Self::for_owner), then the live keys of the application and key
    /// type the request names (`application_and_key_type`), or NOT_FOUND.
    fn owned_live_client<T>(
        &self,
        request: Request<T>,
        application_and_key_type: fn(&T) -> (&String, i32),
    ) -> Result<(CallContext, OAuthClient), Status> {
        let caller = self.authorize(&request, scopes::APP_MANAGE)?;
        let message = request.into_inner();
        let (application_id, key_type) = application_and_key_type(&message);
        self.check_owner(&caller, application_id)?;
        Ok((caller.context, self.live_client(application_id, key_type)?))
    }

    /// Checks the caller may manage the keys of `application_id`.
    fn check_owner(&self, caller: &Caller, application_id: &str) -> Result<(), Status> {
        required("application_id", application_id)?;
        let state = self.authority.state();
        let application = found(
            "application",
            application_id,
            state.application(application_id),
        )?;
        if caller.may_manage(&application.owner) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "application {application_id} is not the caller's: only its owner or an apim:admin caller may manage its keys"
            )))
        }
    }

    /// The live keys of an application for a key type, or NOT_FOUND.
    fn live_client(&self, application_id: &str, key_type: i32) -> Result<OAuthClient, Status> {
        required("application_id", application_id)?;
        let key_type = key_type_of(key_type)?;
        self.authority
            .state()
            .client_of(application_id, key_type)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "application {application_id} has no live {} keys",
                    key_type.as_str_name()
                ))
            })
    }
}

fn key_type_of(value: i32) -> Result<KeyType, Status> {
    match KeyType::try_from(value) {
        Ok(k @ (KeyType::Production | KeyType::Sandbox)) => Ok(k),
        _ => Err(invalid("key_type", "must be PRODUCTION or SANDBOX")),
    }
}

fn authority_status(error: AuthorityError) -> Status {
    match error {
        AuthorityError::Command(e) => e.into(),
        AuthorityError::Key(e @ gatehouse_tokens::KeyError::UnsupportedAlgorithm(_)) => {
            invalid("alg", &e.to_string())
        }
        other => {
            tracing::error!(error = %other, "key manager failure");
            Status::internal(other.to_string())
        }
    }
}

async fn hash(secret: &str) -> Result<String, Status> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || secrets::hash_secret(&secret))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

fn keys_answer(client: &OAuthClient, secret: String) -> ApplicationKeys {
    ApplicationKeys {
        application_id: client.application_id.clone(),
        key_type: client.key_type,
        consumer_key: client.client_id.clone(),
        consumer_secret: secret,
        grant_types: client.grant_types.clone(),
        token_lifetime_seconds: client.token_lifetime_seconds,
    }
}

#[tonic::async_trait]
impl KeyManager for KeyManagerService {
    async fn generate_keys(
        &self,
        request: Request<GenerateKeysRequest>,
    ) -> RpcResult<ApplicationKeys> {
        let (ctx, r) = self.for_owner(request, |r| &r.application_id)?;
        key_type_of(r.key_type)?;
        let client_id = secrets::generate_client_id();
        let secret = secrets::generate_secret();
        let secret_hash = hash(&secret).await?;
        self.authority
            .run(
                Command::RegisterClient {
                    client: OAuthClient {
                        client_id: client_id.clone(),
                        application_id: r.application_id,
                        key_type: r.key_type,
                        secret_hash,
                        grant_types: r.grant_types,
                        token_lifetime_seconds: r.token_lifetime_seconds,
                        ..Default::default()
                    },
                },
                &ctx,
            )
            .await?;
        let client = self
            .authority
            .state()
            .client(&client_id)
            .cloned()
            .ok_or_else(|| Status::internal("registered client not in state"))?;
        tracing::info!(client_id, application_id = %client.application_id, actor = %ctx.actor, "application keys generated");
        Ok(Response::new(keys_answer(&client, secret)))
    }

    async fn regenerate_secret(
        &self,
        request: Request<RegenerateSecretRequest>,
    ) -> RpcResult<ApplicationKeys> {
        let (ctx, client) = self.owned_live_client(request, |r| (&r.application_id, r.key_type))?;
        let secret = secrets::generate_secret();
        let secret_hash = hash(&secret).await?;
        let command = Command::RegenerateSecret {
            client_id: client.client_id.clone(),
            secret_hash,
        };
        self.authority.run(command, &ctx).await?;
        tracing::info!(client_id = %client.client_id, actor = %ctx.actor, "client secret regenerated");
        Ok(Response::new(keys_answer(&client, secret)))
    }

    async fn revoke_keys(
        &self,
        request: Request<RevokeKeysRequest>,
    ) -> RpcResult<RevokeKeysResponse> {
        let (ctx, client) = self.owned_live_client(request, |r| (&r.application_id, r.key_type))?;
        let command = Command::RevokeClient {
            client_id: client.client_id.clone(),
        };
        self.authority.run(command, &ctx).await?;
        tracing::info!(client_id = %client.client_id, actor = %ctx.actor, "client revoked");
        Ok(Response::new(RevokeKeysResponse {}))
    }

    async fn list_keys(&self, request: Request<ListKeysRequest>) -> RpcResult<ListKeysResponse> {
        let (_, r) = self.for_owner(request, |r| &r.application_id)?;
        let application_id = r.application_id;
        let state = self.authority.state();
        let keys: Vec<OAuthClient> = state
            .clients()
            .filter(|c| c.application_id == application_id)
            .map(|c| OAuthClient {
                secret_hash: String::new(),
                ..c.clone()
            })
            .collect();
        if keys.is_empty() && state.application(&application_id).is_none() {
            return Err(Status::not_found(format!(
                "application {application_id} not found"
            )));
        }
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<RotateSigningKeyRequest>,
    ) -> RpcResult<RotateSigningKeyResponse> {
        let ctx = self.authorize(&request, scopes::ADMIN)?.context;
        let r = request.into_inner();
        let key = self
            .authority
            .rotate(Some(&r.alg), &ctx)
            .await
            .map_err(authority_status)?;
        Ok(Response::new(RotateSigningKeyResponse {
            kid: key.kid().to_string(),
            alg: key.alg().to_string(),
        }))
    }
}
