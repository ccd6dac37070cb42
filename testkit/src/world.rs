//! The admin side of a test, in-process: an event log, a read model following it, a
//! command executor writing to it, and a signing key published on it.
//!
//! A [`World`] does what control (and token-service, for clients and keys) would do,
//! without their gRPC fronts: it runs domain commands through the same
//! [`CommandExecutor`] the nodes use, so what it appends is exactly what they would.
//! A test then starts the node under test (a gateway in-process, token-service or
//! control as a process) on the same log, and checks what that node does with it.
//!
//! ```no_run
//! # async fn example() {
//! use gatehouse_testkit::world::{World, api, resources};
//!
//! let world = World::new().await; // an embedded log in a temporary directory
//! world
//!     .publish_api("api", api("A", "/a", "1.0.0", resources(&[("GET", "/x")]), &[]))
//!     .await;
//! world.application("app", "").await; // with keys app-prod and app-sandbox
//! world.subscribe("sub", "app", "api", "Unlimited").await;
//! let token = world.token("app", false, "default"); // signed by the published key
//! # }
//! ```
//!
//! [`World::on`] works on any log (a NATS stream); [`World::writer`] does not publish
//! a key (token-service publishes its own, and a test of its JWKS must see only those).
//! The embedded log is locked by one process at a time: [`World::close`] lets go of it
//! before a test starts a node as a process on the same directory; [`LogLocation`]
//! opens a node's log from the test.
//!
//! # Shared state
//!
//! Each `World` owns its log handle, its read model (followed by one Tokio task, stopped
//! on drop) and its key; worlds on one NATS stream share that stream, as nodes do.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_domain::{Command, CustomPolicy};
use gatehouse_eventlog::{EventLog, FileLog, NatsLog, NatsLogConfig};
use gatehouse_node::commands::{CallContext, CommandExecutor};
use gatehouse_node::read_model::ReadModel;
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, OAuthClient, Resource, endpoint_group, lifecycle,
    o_auth_client::KeyType, throttle_policy::Level,
};
use gatehouse_tokens::{AccessClaims, SigningKeyPair};

use crate::poll::{CONVERGE, eventually_async};

/// Stops the follower task when the world goes.
struct Follower(Option<tokio::task::JoinHandle<()>>);

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// The admin side of a test: a log, a read model following it, and commands.
pub struct World {
    pub log: Arc<dyn EventLog>,
    pub model: Arc<ReadModel>,
    pub exec: CommandExecutor,
    /// Signs the world's tokens; published on the log unless made by [`World::writer`].
    pub key: SigningKeyPair,
    follower: Follower,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    /// An embedded file log in a temporary directory (to share in-process with the node
    /// under test), with a published ES256 signing key.
    pub async fn new() -> World {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let log: Arc<dyn EventLog> = Arc::new(
            FileLog::open(dir.path().join("eventlog")).expect("cannot open the embedded log"),
        );
        let mut world = World::writer(log).await;
        world._dir = Some(dir);
        world.publish_key().await;
        world
    }

    /// Commands on an existing log (a NATS stream, a node's embedded log), with a
    /// published ES256 signing key.
    pub async fn on(log: Arc<dyn EventLog>) -> World {
        let world = World::writer(log).await;
        world.publish_key().await;
        world
    }

    /// Commands on an existing log, caught up with it; its key is not published.
    pub async fn writer(log: Arc<dyn EventLog>) -> World {
        let model = ReadModel::new();
        let follower = tokio::spawn(model.clone().follow(log.clone()));
        let end = log
            .last_sequence()
            .await
            .expect("cannot read the log's last sequence");
        assert!(
            model.wait_for(end, CONVERGE).await,
            "the world's read model did not reach sequence {end}"
        );
        World {
            exec: CommandExecutor::new(log.clone(), model.clone()),
            log,
            model,
            key: SigningKeyPair::generate("ES256").expect("an ES256 key"),
            follower: Follower(Some(follower)),
            _dir: None,
        }
    }

    /// Publishes the world's key. Keys published before keep verifying for a day, so
    /// that two worlds (two test controls) on one stream both sign valid tokens.
    async fn publish_key(&self) {
        self.run(Command::PublishSigningKey {
            key: self.key.to_signing_key_record(),
            retire_previous_after: Some(gatehouse_proto::Timestamp {
                seconds: now() + 86_400,
                nanos: 0,
            }),
        })
        .await;
    }

    /// Lets go of the log, once the follower has stopped (the embedded log is then free
    /// for a node to open); returns the key, which stays published.
    pub async fn close(mut self) -> SigningKeyPair {
        if let Some(task) = self.follower.0.take() {
            task.abort();
            let _ = task.await;
        }
        self.key
    }

    /// Executes a command as actor `test`; returns the log's sequence after it.
    ///
    /// # Panics
    ///
    /// If the command is refused, naming it.
    pub async fn run(&self, command: Command) -> u64 {
        self.run_as("test", command).await
    }

    /// [`run`](Self::run) as `actor` (the admin client a test stands in for).
    pub async fn run_as(&self, actor: &str, command: Command) -> u64 {
        let ctx = CallContext {
            actor: actor.into(),
            ..Default::default()
        };
        match self.exec.execute(command.clone(), &ctx).await {
            Ok(sequence) => sequence,
            Err(e) => panic!("{command:?} failed: {e}"),
        }
    }

    /// The sequence the world's read model has applied.
    pub fn sequence(&self) -> u64 {
        self.model.applied()
    }

    /// Creates and publishes an API.
    pub async fn publish_api(&self, id: &str, definition: ApiDefinition) -> u64 {
        self.run(Command::CreateApi {
            api_id: id.into(),
            definition,
        })
        .await;
        self.lifecycle(id, lifecycle::State::Published).await
    }

    pub async fn lifecycle(&self, id: &str, target: lifecycle::State) -> u64 {
        self.run(Command::ChangeLifecycle {
            api_id: id.into(),
            target,
            expected_version: None,
        })
        .await
    }

    /// An application (tier `app_tier`, "" for Unlimited) with production and sandbox
    /// keys (client ids `<id>-prod`, `<id>-sandbox`).
    pub async fn application(&self, id: &str, app_tier: &str) -> u64 {
        self.run(Command::CreateApplication {
            application_id: id.into(),
            name: id.into(),
            owner: "tester".into(),
            throttling_tier: if app_tier.is_empty() {
                "Unlimited".into()
            } else {
                app_tier.into()
            },
            description: String::new(),
        })
        .await;
        for (suffix, key_type) in [("prod", KeyType::Production), ("sandbox", KeyType::Sandbox)] {
            self.run(Command::RegisterClient {
                client: OAuthClient {
                    client_id: format!("{id}-{suffix}"),
                    application_id: id.into(),
                    key_type: key_type as i32,
                    secret_hash: "$argon2id$not-a-real-hash".into(),
                    ..Default::default()
                },
            })
            .await;
        }
        self.sequence()
    }

    pub async fn subscribe(&self, subscription_id: &str, app: &str, api: &str, tier: &str) -> u64 {
        self.run(Command::Subscribe {
            subscription_id: subscription_id.into(),
            application_id: app.into(),
            api_id: api.into(),
            tier: tier.into(),
        })
        .await
    }

    pub async fn policy(&self, name: &str, level: Level, count: u64, unit_seconds: u32) -> u64 {
        self.run(Command::CreatePolicy(custom_policy(
            name,
            level,
            count,
            unit_seconds,
        )))
        .await
    }

    /// The smallest thing to route: API `api` (`/a/1.0.0`, `GET /x`, on `backend`)
    /// published, and application `app` (with keys) subscribed to it at Unlimited.
    pub async fn one_subscribed_api(&self, backend: &str) -> u64 {
        let definition = api(
            "A",
            "/a",
            "1.0.0",
            resources(&[("GET", "/x")]),
            &[backend.into()],
        );
        self.publish_api("api", definition).await;
        self.application("app", "").await;
        self.subscribe("sub", "app", "api", "Unlimited").await
    }

    /// A token for `app`'s production (or sandbox) keys.
    pub fn token(&self, app: &str, sandbox: bool, scope: &str) -> String {
        self.sign(claims(app, sandbox, scope))
    }

    pub fn sign(&self, claims: AccessClaims) -> String {
        self.key.sign(&claims).expect("cannot sign the claims")
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Valid API-token claims for one hour: `app`'s production (or sandbox) client.
pub fn claims(app: &str, sandbox: bool, scope: &str) -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: gatehouse_tokens::DEFAULT_ISSUER.into(),
        sub: "tester".into(),
        aud: gatehouse_tokens::API_AUDIENCE.into(),
        exp: now + 3600,
        nbf: now - 5,
        iat: now - 5,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: scope.into(),
        client_id: format!("{app}-{}", if sandbox { "sandbox" } else { "prod" }),
        application_id: app.into(),
        application_name: app.into(),
        key_type: if sandbox { "SANDBOX" } else { "PRODUCTION" }.into(),
        application_tier: "Unlimited".into(),
    }
}

/// Claims for `client_id` with `scopes` and `audience` (an admin token's, unless testing
/// the wrong one), valid from `iat` for an hour.
pub fn admin_claims(client_id: &str, scopes: &[&str], audience: &str, iat: i64) -> AccessClaims {
    AccessClaims {
        iss: gatehouse_tokens::DEFAULT_ISSUER.into(),
        sub: client_id.into(),
        aud: audience.into(),
        exp: iat + 3600,
        nbf: iat,
        iat,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: scopes.join(" "),
        client_id: client_id.into(),
        application_id: String::new(),
        application_name: String::new(),
        key_type: String::new(),
        application_tier: String::new(),
    }
}

/// Resources (method, path).
/// A custom throttling policy: `count` calls per `unit_seconds`, no description.
pub fn custom_policy(name: &str, level: Level, count: u64, unit_seconds: u32) -> CustomPolicy {
    CustomPolicy {
        name: name.into(),
        level,
        request_count: count,
        unit_seconds,
        unlimited: false,
        description: String::new(),
    }
}

pub fn resources(specs: &[(&str, &str)]) -> Vec<Resource> {
    specs
        .iter()
        .map(|(method, path)| Resource {
            method: (*method).into(),
            path: (*path).into(),
            ..Default::default()
        })
        .collect()
}

pub fn group(mode: endpoint_group::Mode, urls: &[String]) -> Option<EndpointGroup> {
    Some(EndpointGroup {
        mode: mode as i32,
        urls: urls.to_vec(),
    })
}

/// A UUID-shaped id (36 characters, as control makes them) for item `i` of `kind`: the
/// ids of the large configurations the measurements build.
pub fn numbered_id(kind: u8, i: usize) -> String {
    format!("{:08x}-{kind:04x}-4000-8000-{:012x}", i, i * 7919)
}

/// API number `i` of a large configuration: `Api{i}` at `/api{i}` version 1.0.0, with
/// `GET /items`, `GET /items/{id}` and `POST /items`, served by `urls`.
pub fn numbered_api(i: usize, urls: &[String]) -> ApiDefinition {
    let paths = [
        ("GET", "/items"),
        ("GET", "/items/{id}"),
        ("POST", "/items"),
    ];
    api(
        &format!("Api{i}"),
        &format!("/api{i}"),
        "1.0.0",
        resources(&paths),
        urls,
    )
}

/// An API definition with production endpoints `urls` (load-balanced).
pub fn api(
    name: &str,
    context: &str,
    version: &str,
    resources: Vec<Resource>,
    urls: &[String],
) -> ApiDefinition {
    ApiDefinition {
        name: name.into(),
        context: context.into(),
        version: version.into(),
        resources,
        endpoints: Some(Endpoints {
            production: group(endpoint_group::Mode::LoadBalance, urls),
            sandbox: None,
            timeout_ms: 0,
        }),
        ..Default::default()
    }
}

/// Where a node's log is, for a test to open it too.
#[derive(Clone, Debug)]
pub enum LogLocation {
    /// The embedded log of a node's data directory (`<dir>/eventlog`).
    Embedded(PathBuf),
    /// A NATS server (URL) and stream.
    Nats { url: String, stream: String },
}

impl LogLocation {
    /// The `GATEHOUSE` stream on the NATS server at `url`.
    pub fn nats(url: impl Into<String>) -> LogLocation {
        LogLocation::Nats {
            url: url.into(),
            stream: "GATEHOUSE".into(),
        }
    }

    /// Opens the log. The embedded one only while no node (and no other handle in this
    /// process) holds it: this waits for a handle being dropped to let go.
    pub async fn open(&self) -> Arc<dyn EventLog> {
        match self {
            LogLocation::Embedded(dir) => {
                let path = dir.join("eventlog");
                let what = format!("the embedded log in {} to be free", path.display());
                let log = eventually_async(what, || {
                    let opened = FileLog::open(&path);
                    async move { opened }
                })
                .await;
                Arc::new(log)
            }
            LogLocation::Nats { url, stream } => Arc::new(
                NatsLog::connect(NatsLogConfig {
                    stream: stream.clone(),
                    ..NatsLogConfig::new(url.clone())
                })
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}")),
            ),
        }
    }
}
