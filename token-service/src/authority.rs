//! The token authority: what the HTTPS endpoints and the gRPC service share.
//!
//! It reads clients, applications, subscriptions and signing keys from the domain state
//! folded from the log (token-service never asks control), and changes them only
//! through domain commands appended to the log. It holds what is *not* on the log: the
//! private signing keys ([`KeyStore`]) and the recent-secret cache ([`SecretChecker`]).
//!
//! # Shared state
//!
//! One `Authority` behind an `Arc`, shared by every HTTP and gRPC handler:
//!
//! - the folded state is the [`ReadModel`]'s (a `std::sync::RwLock`, read in short
//!   synchronous sections, never across an `.await`);
//! - writes go through the [`CommandExecutor`], which decides this process's commands
//!   concurrently on what it has in flight and pipelines their appends; commands from
//!   other processes (control on the same NATS stream) are caught by the log's
//!   optimistic concurrency, and the executor decides them again on fresh state;
//! - the verification keys are rebuilt only when the set of published keys changes
//!   ([`PublishedKeys`]: a `std::sync::Mutex`, cloning an `Arc` is the whole critical
//!   section);
//! - `rotation`, a tokio mutex, makes "generate, store, publish" one step per process
//!   (it is held across the `.await`s of that step, hence tokio's).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_domain::{Command, State};
use gatehouse_node::commands::{CallContext, CommandError, CommandExecutor};
use gatehouse_node::read_model::ReadModel;
use gatehouse_proto::Timestamp;
use gatehouse_proto::events::{OAuthClient, o_auth_client::KeyType, subscription_status};
use gatehouse_tokens::{
    ADMIN_AUDIENCE, ADMIN_SCOPES, API_AUDIENCE, AccessClaims, DEFAULT_SCOPE, KEY_TYPE_PRODUCTION,
    KEY_TYPE_SANDBOX, KeyError, PublishedKeys, SigningKeyPair, TokenError, VerificationKeys,
    Verifier, check_revocation, is_published, unix_now,
};

use crate::keystore::{KeyStore, KeyStoreError};
use crate::secrets::{self, HashError, SecretChecker};

/// The actor recorded on events token-service causes on its own (start-up, bootstrap).
pub const SELF_ACTOR: &str = "token-service";

/// How long the previous key stays published after a rotation when no client says
/// otherwise.
const DEFAULT_RETIREMENT: Duration = Duration::from_secs(24 * 3600);

/// What the authority was configured with.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// `iss` of the tokens.
    pub issuer: String,
    /// Algorithm of new signing keys (`RS256` or `ES256`).
    pub signing_alg: String,
}

/// Why client authentication failed. The first three are `invalid_client` on the wire,
/// and say nothing more to the caller; `Busy` is no failure of the client's (the
/// argon2 pool is full: retry shortly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown client")]
    UnknownClient,
    #[error("wrong client secret")]
    WrongSecret,
    #[error("the client is revoked")]
    Revoked,
    #[error(transparent)]
    Busy(#[from] crate::pool::Busy),
}

/// Why no token was issued to an authenticated client.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the client may not use the client_credentials grant")]
    UnauthorizedClient,
    #[error("{0}")]
    InvalidScope(String),
    #[error("no active signing key of this token-service (it may belong to another replica)")]
    NoSigningKey,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What else can go wrong in the authority.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("{0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// An access token just issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub claims: AccessClaims,
}

/// Credentials made at start-up, to be shown once.
#[derive(Debug, Clone)]
pub struct CreatedAdmin {
    pub client_id: String,
    pub client_secret: String,
}

pub struct Authority {
    config: AuthorityConfig,
    model: Arc<ReadModel>,
    commands: CommandExecutor,
    keys: KeyStore,
    secrets: SecretChecker,
    api_verifier: Verifier,
    admin_verifier: Verifier,
    /// The verification keys of the published signing keys.
    verification: PublishedKeys,
    rotation: tokio::sync::Mutex<()>,
}

fn self_context() -> CallContext {
    CallContext {
        actor: SELF_ACTOR.to_string(),
        ..Default::default()
    }
}

impl Authority {
    pub fn new(
        config: AuthorityConfig,
        model: Arc<ReadModel>,
        commands: CommandExecutor,
        keys: KeyStore,
        secrets: SecretChecker,
    ) -> Self {
        Authority {
            api_verifier: Verifier::new(config.issuer.clone(), API_AUDIENCE),
            admin_verifier: Verifier::new(config.issuer.clone(), ADMIN_AUDIENCE),
            config,
            model,
            commands,
            keys,
            secrets,
            verification: PublishedKeys::default(),
            rotation: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    /// The folded state. Hold the guard briefly, never across an `.await`.
    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.model.read()
    }

    pub fn secrets(&self) -> &SecretChecker {
        &self.secrets
    }

    /// Runs `command` (the executor decides it again on fresh state, a few times, when
    /// another writer appended first).
    pub async fn run(&self, command: Command, ctx: &CallContext) -> Result<u64, CommandError> {
        self.commands.execute(command, ctx).await
    }

    // ---- signing keys -------------------------------------------------------------

    /// Makes sure new tokens can be signed: if the active key's private half is not in
    /// this node's key store (or there is no active key), a new key is generated and
    /// published. Returns the active key's kid.
    pub async fn ensure_signing_key(&self) -> Result<String, AuthorityError> {
        let active = self.state().active_signing_key().map(|k| k.kid.clone());
        if let Some(kid) = active
            && self.keys.get(&kid).is_some()
        {
            return Ok(kid);
        }
        let key = self.rotate(None, &self_context()).await?;
        Ok(key.kid().to_string())
    }

    /// When the keys active now may be retired: once every token they may have signed
    /// has expired (the longest client token lifetime, 24 hours without clients), plus
    /// the verifiers' leeway.
    fn retirement(&self) -> Timestamp {
        let longest = self
            .state()
            .clients()
            .filter(|c| !c.revoked)
            .map(|c| u64::from(c.token_lifetime_seconds))
            .max()
            .map_or(DEFAULT_RETIREMENT, Duration::from_secs);
        Timestamp::from(
            SystemTime::now() + longest + Duration::from_secs(Verifier::DEFAULT_LEEWAY_SECONDS),
        )
    }

    /// A new active key (of `alg`, default: the configured one): generated, stored,
    /// then published; the previous active key stays in the JWKS until its tokens
    /// have expired.
    pub async fn rotate(
        &self,
        alg: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Arc<SigningKeyPair>, AuthorityError> {
        let alg = alg
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.config.signing_alg)
            .to_string();
        if !gatehouse_domain::keys::SIGNING_ALGORITHMS.contains(&alg.as_str()) {
            return Err(KeyError::UnsupportedAlgorithm(alg).into());
        }
        let _rotation = self.rotation.lock().await;
        let key = tokio::task::spawn_blocking(move || SigningKeyPair::generate(&alg)).await??;
        let key = self.keys.insert(key)?;
        let command = Command::PublishSigningKey {
            key: key.to_signing_key_record(),
            retire_previous_after: Some(self.retirement()),
        };
        if let Err(e) = self.run(command, ctx).await {
            self.keys.remove(key.kid());
            return Err(e.into());
        }
        tracing::info!(
            kid = key.kid(),
            alg = key.alg(),
            "new active signing key published"
        );
        Ok(key)
    }

    /// The published keys (active, or not yet retired) as a JWK set.
    pub fn jwks(&self) -> serde_json::Value {
        let now = SystemTime::now();
        let keys: Vec<serde_json::Value> = self
            .state()
            .signing_keys()
            .filter(|k| is_published(k, now))
            .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The keys tokens verify with now, rebuilt only when the published set changes.
    fn verification_keys(&self) -> Arc<VerificationKeys> {
        self.verification.of(&self.state(), SystemTime::now())
    }

    /// The claims of `token` if this token-service issued it and it is live: signature
    /// by a published key, not expired, our issuer, either audience, not revoked.
    pub fn live_claims(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let keys = self.verification_keys();
        let claims = match self.api_verifier.verify(token, &keys) {
            Err(TokenError::WrongAudience) => self.admin_verifier.verify(token, &keys)?,
            other => other?,
        };
        check_revocation(&claims, &self.state())?;
        Ok(claims)
    }

    // ---- clients ------------------------------------------------------------------

    /// Whether `secret` is one `client_id` proved recently (against its current hash):
    /// checking it again costs no argon2.
    pub fn remembered(&self, client_id: &str, secret: &str) -> bool {
        let state = self.state();
        let phc = state.client(client_id).map(|c| c.secret_hash.as_str());
        self.secrets.remembered(client_id, secret, phc)
    }

    /// The client `client_id` if `secret` is its secret and it is not revoked (argon2
    /// on the bounded pool, unless remembered: `Busy` when the pool is full).
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<OAuthClient, AuthError> {
        let client = self.state().client(client_id).cloned();
        let phc = client.as_ref().map(|c| c.secret_hash.as_str());
        if !self.secrets.check(client_id, secret, phc).await? {
            return Err(if client.is_some() {
                AuthError::WrongSecret
            } else {
                AuthError::UnknownClient
            });
        }
        let client = client.ok_or(AuthError::UnknownClient)?;
        // Re-read: the client may have been revoked while its secret was checked.
        let revoked = self.state().client(client_id).is_none_or(|c| c.revoked);
        if client.revoked || revoked {
            return Err(AuthError::Revoked);
        }
        Ok(client)
    }

    /// The first admin client. With `id` and `secret` configured: registered if it does
    /// not exist, its secret replaced if it differs (the configuration wins). Without:
    /// if no live admin client exists, one is generated and returned, to be shown once.
    pub async fn bootstrap_admin(
        &self,
        id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Option<CreatedAdmin>, AuthorityError> {
        let ctx = self_context();
        match (id, secret) {
            (Some(id), Some(secret)) => {
                if secret.len() < 16 {
                    tracing::warn!("the configured admin client secret is short (under 16 characters)");
                }
                let existing = self.state().client(id).cloned();
                match existing {
                    Some(c) if !c.application_id.is_empty() => Err(AuthorityError::Config(
                        format!("the configured admin client id {id} is an application's consumer key"),
                    )),
                    Some(c) if c.revoked => {
                        tracing::warn!(client_id = id, "the configured admin client is revoked: it gets no tokens; configure another id");
                        Ok(None)
                    }
                    Some(c) => {
                        let (s, phc) = (secret.to_string(), c.secret_hash.clone());
                        let same =
                            tokio::task::spawn_blocking(move || secrets::verify_secret(&s, &phc))
                                .await?;
                        if !same {
                            let secret_hash = hash(secret).await?;
                            self.run(
                                Command::RegenerateSecret {
                                    client_id: id.to_string(),
                                    secret_hash,
                                },
                                &ctx,
                            )
                            .await?;
                            tracing::info!(client_id = id, "admin client secret replaced by the configured one");
                        }
                        Ok(None)
                    }
                    None => {
                        self.register_admin(id, secret, &ctx).await?;
                        tracing::info!(client_id = id, "configured admin client registered");
                        Ok(None)
                    }
                }
            }
            (None, None) => {
                let exists = self
                    .state()
                    .clients()
                    .any(|c| c.application_id.is_empty() && !c.revoked);
                if exists {
                    return Ok(None);
                }
                let client_id = secrets::generate_client_id();
                let client_secret = secrets::generate_secret();
                self.register_admin(&client_id, &client_secret, &ctx).await?;
                Ok(Some(CreatedAdmin {
                    client_id,
                    client_secret,
                }))
            }
            _ => Err(AuthorityError::Config(
                "set both the admin client id and secret (GATEHOUSE_ADMIN_CLIENT_ID, GATEHOUSE_ADMIN_CLIENT_SECRET), or neither".into(),
            )),
        }
    }

    async fn register_admin(
        &self,
        id: &str,
        secret: &str,
        ctx: &CallContext,
    ) -> Result<(), AuthorityError> {
        let secret_hash = hash(secret).await?;
        self.run(
            Command::RegisterClient {
                client: OAuthClient {
                    client_id: id.to_string(),
                    secret_hash,
                    admin_scopes: ADMIN_SCOPES.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
            },
            ctx,
        )
        .await?;
        Ok(())
    }

    // ---- tokens -------------------------------------------------------------------

    /// A token for `client` with the scopes it may have among `requested` (`None`:
    /// nothing asked for).
    pub fn issue(
        &self,
        client: &OAuthClient,
        requested: Option<&[&str]>,
    ) -> Result<IssuedToken, IssueError> {
        if !client
            .grant_types
            .iter()
            .any(|g| g == gatehouse_domain::keys::CLIENT_CREDENTIALS)
        {
            return Err(IssueError::UnauthorizedClient);
        }
        let (claims, kid) = {
            let state = self.state();
            let granted = grant_scopes(&state, client, requested)?;
            let kid = state
                .active_signing_key()
                .map(|k| k.kid.clone())
                .ok_or(IssueError::NoSigningKey)?;
            (self.claims(&state, client, granted), kid)
        };
        let key = self.keys.get(&kid).ok_or(IssueError::NoSigningKey)?;
        let access_token = key.sign(&claims)?;
        Ok(IssuedToken {
            access_token,
            expires_in: (claims.exp - claims.iat).max(0) as u64,
            scope: claims.scope.clone(),
            claims,
        })
    }

    fn claims(&self, state: &State, client: &OAuthClient, scopes: Vec<String>) -> AccessClaims {
        let now = unix_now();
        let lifetime = if client.token_lifetime_seconds == 0 {
            i64::from(gatehouse_domain::keys::DEFAULT_TOKEN_LIFETIME_SECONDS)
        } else {
            i64::from(client.token_lifetime_seconds)
        };
        let admin = client.application_id.is_empty();
        let app = state.application(&client.application_id);
        AccessClaims {
            iss: self.config.issuer.clone(),
            sub: match app {
                Some(app) if !app.owner.is_empty() => app.owner.clone(),
                _ => client.client_id.clone(),
            },
            aud: if admin { ADMIN_AUDIENCE } else { API_AUDIENCE }.to_string(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.join(" "),
            client_id: client.client_id.clone(),
            application_id: client.application_id.clone(),
            application_name: app.map(|a| a.name.clone()).unwrap_or_default(),
            key_type: match client.key_type() {
                KeyType::Production if !admin => KEY_TYPE_PRODUCTION,
                KeyType::Sandbox if !admin => KEY_TYPE_SANDBOX,
                _ => "",
            }
            .to_string(),
            application_tier: app.map(|a| a.throttling_tier.clone()).unwrap_or_default(),
        }
    }

    /// RFC 7009: revokes `token` if it is a live token of `client_id`; anything else
    /// (someone else's token, an expired, foreign or garbage token) changes nothing.
    /// Returns whether a revocation was recorded.
    pub async fn revoke(
        &self,
        client_id: &str,
        token: &str,
        ctx: &CallContext,
    ) -> Result<bool, CommandError> {
        let Ok(claims) = self.live_claims(token) else {
            return Ok(false);
        };
        if claims.client_id != client_id {
            tracing::info!(
                client_id,
                owner = %claims.client_id,
                "revocation of another client's token ignored"
            );
            return Ok(false);
        }
        self.run(
            Command::RevokeToken {
                jti: claims.jti.clone(),
                expires_at: Some(Timestamp {
                    seconds: claims.exp,
                    nanos: 0,
                }),
                client_id: claims.client_id.clone(),
            },
            ctx,
        )
        .await?;
        Ok(true)
    }
}

async fn hash(secret: &str) -> Result<String, AuthorityError> {
    let secret = secret.to_string();
    Ok(tokio::task::spawn_blocking(move || secrets::hash_secret(&secret)).await??)
}

/// The scopes an application client may be granted: `default`, and on every API its
/// application is subscribed to (subscriptions that let its key type through) the
/// scopes an admin granted that subscription (`GrantScopes`) which the API's resources
/// still declare. Declaring a scope on a resource grants it to nobody (WSO2's scope-to-
/// role binding, here per subscription).
pub fn application_scopes(state: &State, client: &OAuthClient) -> BTreeSet<String> {
    use subscription_status::State as Sub;
    let mut allowed = BTreeSet::from([DEFAULT_SCOPE.to_string()]);
    let sandbox = client.key_type() == KeyType::Sandbox;
    for subscription in state
        .subscriptions()
        .filter(|s| s.application_id == client.application_id)
        .filter(|s| s.state() == Sub::Active || (sandbox && s.state() == Sub::ProdOnlyBlocked))
    {
        let Some(definition) = state
            .api(&subscription.api_id)
            .and_then(|api| api.definition.as_ref())
        else {
            continue;
        };
        let declared = |scope: &String| {
            definition
                .resources
                .iter()
                .any(|r| r.scopes.contains(scope))
        };
        allowed.extend(
            subscription
                .granted_scopes
                .iter()
                .filter(|s| declared(s))
                .cloned(),
        );
    }
    allowed
}

/// The scopes granted to `client` for `requested`:
///
/// - an application client gets the requested scopes it may have
///   ([`application_scopes`]); ungranted or unknown ones are dropped, never an error;
///   asking for none (or for none it may have) gets `default`;
/// - an admin client gets the requested scopes among its admin scopes, or all of them
///   when it asks for none; asking only for scopes it does not have is `invalid_scope`.
pub fn grant_scopes(
    state: &State,
    client: &OAuthClient,
    requested: Option<&[&str]>,
) -> Result<Vec<String>, IssueError> {
    let requested = requested.unwrap_or_default();
    if client.application_id.is_empty() {
        if requested.is_empty() {
            return Ok(client.admin_scopes.clone());
        }
        let granted: Vec<String> = client
            .admin_scopes
            .iter()
            .filter(|s| requested.contains(&s.as_str()))
            .cloned()
            .collect();
        if granted.is_empty() {
            return Err(IssueError::InvalidScope(
                "none of the requested scopes may be granted to this client".into(),
            ));
        }
        return Ok(granted);
    }
    let allowed = application_scopes(state, client);
    let mut granted: Vec<String> = Vec::new();
    for scope in requested {
        if allowed.contains(*scope) && !granted.iter().any(|g| g == scope) {
            granted.push((*scope).to_string());
        }
    }
    if granted.is_empty() {
        granted.push(DEFAULT_SCOPE.to_string());
    }
    Ok(granted)
}
