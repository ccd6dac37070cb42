//! The demo bootstrap: the seed's publisher and devportal steps, done through the admin
//! API exactly as an admin would do them with grpcurl.
//!
//! Against an empty control it creates and publishes ClientServiceAPI and
//! OrderServiceAPI pointing at the two backends, creates `MyPythonApp`, subscribes it
//! to both, generates its production keys and prints what to call. It is idempotent:
//! each step first looks for what it would create, so a second run changes nothing (and
//! cannot show the consumer secret again: token-service never stored it).

use anyhow::Context;
use gatehouse_node::grpc::Bearer;
use gatehouse_proto::admin::control_plane_client::ControlPlaneClient;
use gatehouse_proto::admin::{
    ChangeLifecycleRequest, CreateApiRequest, CreateApplicationRequest, ListApisRequest,
    ListApplicationsRequest, ListSubscriptionsRequest, SubscribeRequest, UpdateApiRequest,
};
use gatehouse_proto::events::{
    Api, ApiDefinition, EndpointGroup, Endpoints, Resource, lifecycle, o_auth_client::KeyType,
};
use gatehouse_proto::keymanager::{GenerateKeysRequest, ListKeysRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::insecure_https;

/// The demo application's name, as in the seed.
pub const APP_NAME: &str = "MyPythonApp";

/// Where the bootstrap finds Gatehouse and the backends.
#[derive(clap::Args, Debug, Clone)]
pub struct BootstrapConfig {
    #[command(flatten)]
    pub connection: ControlConnection,
    /// The backend of ClientServiceAPI, as the gateways reach it.
    #[arg(
        long,
        env = "GATEHOUSE_CLIENT_SERVICE_URL",
        default_value = "http://client-service:8000"
    )]
    pub client_service_url: String,
    /// The backend of OrderServiceAPI, as the gateways reach it.
    #[arg(long, env = "GATEHOUSE_ORDER_SERVICE_URL", default_value = "http://order-service:8000")]
    pub order_service_url: String,
    /// The token endpoint as users reach it, for the printed curl lines.
    #[arg(long, env = "GATEHOUSE_PUBLIC_TOKEN_URL", default_value = "https://localhost:9443")]
    pub public_token_url: String,
    /// A gateway as users reach it, for the printed curl lines.
    #[arg(long, env = "GATEHOUSE_PUBLIC_GATEWAY_URL", default_value = "https://localhost:8243")]
    pub public_gateway_url: String,
}

/// How an admin command reaches control: its URL and CA, and the admin client whose
/// token it calls with (`gatehouse bootstrap`, `gatehouse api`, `gatehouse config`).
#[derive(clap::Args, Debug, Clone)]
pub struct ControlConnection {
    /// control's gRPC admin API (`https://`, verified against `--cluster-ca`).
    #[arg(long, env = "GATEHOUSE_CONTROL_URL", default_value = "https://127.0.0.1:50051")]
    pub control_url: String,
    /// The cluster CA certificate (PEM) that control's certificate is issued by.
    #[arg(long, env = "GATEHOUSE_CLUSTER_CA")]
    pub cluster_ca: Option<std::path::PathBuf>,
    /// token-service's HTTPS base URL.
    #[arg(long, env = "GATEHOUSE_TOKEN_URL", default_value = "https://127.0.0.1:9443")]
    pub token_url: String,
    #[command(flatten)]
    pub admin: AdminClientArgs,
}

/// Answers of up to this many bytes are read from control (a configuration export).
const MAX_ANSWER_BYTES: usize = 256 << 20;

impl ControlConnection {
    /// An admin token (client credentials at token-service), then a TLS channel to
    /// control verified against the cluster CA: the admin client every call goes
    /// through.
    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let secret = self.admin.secret()?;
        let token = insecure_https::client_credentials_token(
            &self.token_url,
            &self.admin.admin_client_id,
            &secret,
            None,
        )
        .await
        .context("cannot get an admin token")?;
        let channel = gatehouse_node::tls::server_verified_endpoint(
            &self.control_url,
            self.cluster_ca.as_deref(),
        )?
        .connect()
        .await
        .with_context(|| format!("cannot reach control at {}", self.control_url))?;
        Ok(ControlPlaneClient::with_interceptor(channel, Bearer(token))
            .max_decoding_message_size(MAX_ANSWER_BYTES)
            .max_encoding_message_size(MAX_ANSWER_BYTES))
    }
}

/// The admin client the bootstrap acts as, and where its secret is.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminClientArgs {
    /// The admin client (see token-service's GATEHOUSE_ADMIN_CLIENT_ID).
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_ID")]
    pub admin_client_id: String,
    /// The admin client's secret (or `--admin-client-secret-file`).
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_SECRET", hide_env_values = true, default_value = "")]
    pub admin_client_secret: String,
    /// A file holding the admin client's secret (compose: the one token-service generated
    /// into its volume on first start).
    #[arg(long, env = "GATEHOUSE_ADMIN_CLIENT_SECRET_FILE")]
    pub admin_client_secret_file: Option<std::path::PathBuf>,
}

impl AdminClientArgs {
    /// The secret: read from `--admin-client-secret-file` if given, else
    /// `--admin-client-secret`; one of them must give one.
    pub fn secret(&self) -> anyhow::Result<String> {
        let secret = match &self.admin_client_secret_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "cannot read the admin client secret from {}",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
            None => self.admin_client_secret.clone(),
        };
        if secret.is_empty() {
            anyhow::bail!(
                "the admin client's secret is needed: --admin-client-secret or --admin-client-secret-file"
            );
        }
        Ok(secret)
    }
}

/// What the bootstrap leaves behind.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub application_id: String,
    pub consumer_key: String,
    /// Only when the keys were generated by this run.
    pub consumer_secret: Option<String>,
    pub client_api_id: String,
    /// Whether this run changed anything.
    pub changed: bool,
}

/// control's admin API with an admin's bearer token on every call.
pub type Admin = ControlPlaneClient<InterceptedService<Channel, Bearer>>;

fn resource(method: &str, path: &str) -> Resource {
    Resource {
        method: method.into(),
        path: path.into(),
        ..Default::default()
    }
}

fn endpoints(url: &str) -> Option<Endpoints> {
    Some(Endpoints {
        production: Some(EndpointGroup {
            urls: vec![url.to_string()],
            ..Default::default()
        }),
        sandbox: Some(EndpointGroup {
            urls: vec![url.to_string()],
            ..Default::default()
        }),
        timeout_ms: 10_000,
    })
}

/// The seed's two APIs.
pub fn demo_apis(client_service_url: &str, order_service_url: &str) -> [ApiDefinition; 2] {
    let tiers = ["Gold", "Silver", "Bronze", "Unlimited"]
        .map(String::from)
        .to_vec();
    [
        ApiDefinition {
            name: "ClientServiceAPI".into(),
            context: "/client".into(),
            version: "1.0.0".into(),
            description: "Users of the client service".into(),
            resources: vec![
                resource("GET", "/users"),
                resource("GET", "/users/{id}"),
                resource("POST", "/users"),
            ],
            endpoints: endpoints(client_service_url),
            subscription_tiers: tiers.clone(),
            is_default_version: true,
            ..Default::default()
        },
        ApiDefinition {
            name: "OrderServiceAPI".into(),
            context: "/orders".into(),
            version: "1.0.0".into(),
            description: "Orders and the item catalogue of the order service".into(),
            resources: vec![
                resource("GET", "/orders"),
                resource("GET", "/orders/{id}"),
                resource("POST", "/orders"),
                resource("GET", "/items"),
            ],
            endpoints: endpoints(order_service_url),
            subscription_tiers: tiers,
            is_default_version: true,
            ..Default::default()
        },
    ]
}

/// Makes sure the API exists with these endpoints and is published.
async fn ensure_api(
    admin: &mut Admin,
    wanted: ApiDefinition,
    changed: &mut bool,
) -> anyhow::Result<Api> {
    let existing = admin
        .list_apis(ListApisRequest {
            context: wanted.context.clone(),
            lifecycle: 0,
        })
        .await?
        .into_inner()
        .apis
        .into_iter()
        .find(|a| {
            a.definition
                .as_ref()
                .is_some_and(|d| d.version == wanted.version)
        });
    let mut api = match existing {
        Some(api) => api,
        None => {
            *changed = true;
            admin
                .create_api(CreateApiRequest {
                    definition: Some(wanted.clone()),
                })
                .await
                .with_context(|| format!("creating {}", wanted.name))?
                .into_inner()
        }
    };
    let current = api.definition.clone().unwrap_or_default();
    if current.endpoints != wanted.endpoints {
        *changed = true;
        api = admin
            .update_api(UpdateApiRequest {
                api_id: api.id.clone(),
                definition: Some(ApiDefinition {
                    endpoints: wanted.endpoints.clone(),
                    ..current
                }),
                expected_version: api.aggregate_version,
            })
            .await
            .with_context(|| format!("pointing {} at its backend", wanted.name))?
            .into_inner();
    }
    if api.lifecycle() == lifecycle::State::Created {
        *changed = true;
        api = admin
            .change_lifecycle(ChangeLifecycleRequest {
                api_id: api.id.clone(),
                target: lifecycle::State::Published as i32,
                expected_version: api.aggregate_version,
            })
            .await
            .with_context(|| format!("publishing {}", wanted.name))?
            .into_inner();
    }
    Ok(api)
}

/// Runs the bootstrap.
pub async fn run(config: &BootstrapConfig) -> anyhow::Result<Seeded> {
    let mut admin = config.connection.connect().await?;
    let mut changed = false;

    let [client_api, order_api] = demo_apis(&config.client_service_url, &config.order_service_url);
    let client_api = ensure_api(&mut admin, client_api, &mut changed).await?;
    let order_api = ensure_api(&mut admin, order_api, &mut changed).await?;

    let owner = config.connection.admin.admin_client_id.clone();
    let app = admin
        .list_applications(ListApplicationsRequest {
            owner: owner.clone(),
        })
        .await?
        .into_inner()
        .applications
        .into_iter()
        .find(|a| a.name == APP_NAME);
    let app = match app {
        Some(app) => app,
        None => {
            changed = true;
            admin
                .create_application(CreateApplicationRequest {
                    name: APP_NAME.into(),
                    owner,
                    throttling_tier: "Unlimited".into(),
                    description: "The seed's demo application".into(),
                })
                .await
                .context("creating MyPythonApp")?
                .into_inner()
        }
    };

    let subscribed = admin
        .list_subscriptions(ListSubscriptionsRequest {
            application_id: app.id.clone(),
            api_id: String::new(),
        })
        .await?
        .into_inner()
        .subscriptions;
    for api in [&client_api, &order_api] {
        if !subscribed.iter().any(|s| s.api_id == api.id) {
            changed = true;
            admin
                .subscribe(SubscribeRequest {
                    application_id: app.id.clone(),
                    api_id: api.id.clone(),
                    tier: "Gold".into(),
                })
                .await
                .context("subscribing MyPythonApp")?;
        }
    }

    let keys = admin
        .list_keys(ListKeysRequest {
            application_id: app.id.clone(),
        })
        .await?
        .into_inner()
        .keys;
    let production = keys
        .into_iter()
        .find(|k| k.key_type() == KeyType::Production && !k.revoked);
    let (consumer_key, consumer_secret) = match production {
        Some(k) => (k.client_id, None),
        None => {
            changed = true;
            let generated = admin
                .generate_keys(GenerateKeysRequest {
                    application_id: app.id.clone(),
                    key_type: KeyType::Production as i32,
                    // The defaults: client_credentials, one-hour tokens.
                    ..Default::default()
                })
                .await
                .context("generating MyPythonApp's production keys")?
                .into_inner();
            (generated.consumer_key, Some(generated.consumer_secret))
        }
    };

    Ok(Seeded {
        application_id: app.id,
        consumer_key,
        consumer_secret,
        client_api_id: client_api.id,
        changed,
    })
}

/// What to type next, for a person.
pub fn instructions(config: &BootstrapConfig, seeded: &Seeded) -> String {
    let secret = seeded
        .consumer_secret
        .clone()
        .unwrap_or_else(|| "<the secret shown when the keys were generated>".into());
    let token = &config.public_token_url;
    let gateway = &config.public_gateway_url;
    format!(
        "MyPythonApp production keys:\n  consumer key:    {key}\n  consumer secret: {shown}\n\n\
         Get a token, then call the APIs through the gateway:\n\
         \x20 TOKEN=$(curl -sk -d grant_type=client_credentials -u '{key}:{secret}' {token}/oauth2/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\n\
         \x20 curl -k -H \"Authorization: Bearer $TOKEN\" {gateway}/client/1.0.0/users\n\
         \x20 curl -k -H \"Authorization: Bearer $TOKEN\" {gateway}/orders/1.0.0/items\n",
        key = seeded.consumer_key,
        shown = seeded
            .consumer_secret
            .as_deref()
            .unwrap_or("(shown only once, when generated; RegenerateSecret gives a new one)"),
    )
}
