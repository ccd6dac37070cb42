//! Seeds a NATS event log for `bench/run.sh` and prints an access token.
//!
//! ```text
//! cargo run --release -p gatehouse-gateway --example bench_seed -- nats://127.0.0.1:4222 http://127.0.0.1:8000 [key.pem]
//! ```
//!
//! It appends, as control and token-service would: an RS256 signing key (its public
//! half), the API `/bench/1.0.0` (`GET /data` → the backend URL given), a custom
//! API-level tier `BenchHuge` (10^9 calls a minute) on that API so the throttling phase
//! counts every call without ever refusing one, the application `BenchApp` (application
//! tier Unlimited) with production keys, and an **Unlimited** subscription. The token it
//! prints (one hour) is signed with the private half, exactly as token-service signs.
//! With a third argument it also writes the private key there (PKCS#8 PEM), so that the
//! benchmark can give the public half to HAProxy's `jwt_verify`: both proxies then verify
//! the very same token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_domain::{Command, CustomPolicy};
use gatehouse_eventlog::{EventLog, NatsLog, NatsLogConfig};
use gatehouse_node::commands::{CallContext, CommandExecutor};
use gatehouse_node::read_model::ReadModel;
use gatehouse_proto::events::{
    ApiDefinition, EndpointGroup, Endpoints, OAuthClient, Resource, lifecycle,
    o_auth_client::KeyType, throttle_policy::Level,
};
use gatehouse_tokens::{AccessClaims, SigningKeyPair};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nats = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let backend = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let key_out = args.next();
    let log: Arc<dyn EventLog> = Arc::new(NatsLog::connect(NatsLogConfig::new(nats)).await?);
    let model = ReadModel::new();
    tokio::spawn(model.clone().follow(log.clone()));
    let end = log.last_sequence().await?;
    anyhow::ensure!(
        model.wait_for(end, Duration::from_secs(60)).await,
        "log not read"
    );
    let exec = CommandExecutor::new(log, model);
    let ctx = CallContext {
        actor: "bench".into(),
        ..Default::default()
    };
    let key = SigningKeyPair::generate("RS256")?;
    if let Some(path) = key_out {
        std::fs::write(&path, key.to_pem()?)?;
    }
    let commands = vec![
        Command::PublishSigningKey {
            key: key.to_signing_key_record(),
            retire_previous_after: None,
        },
        Command::CreatePolicy(CustomPolicy {
            name: "BenchHuge".into(),
            level: Level::Api,
            request_count: 1_000_000_000,
            unit_seconds: 60,
            unlimited: false,
            description: "Counts every call, refuses none".into(),
        }),
        Command::CreateApi {
            api_id: "bench-api".into(),
            definition: ApiDefinition {
                name: "BenchAPI".into(),
                context: "/bench".into(),
                version: "1.0.0".into(),
                resources: vec![Resource {
                    method: "GET".into(),
                    path: "/data".into(),
                    ..Default::default()
                }],
                endpoints: Some(Endpoints {
                    production: Some(EndpointGroup {
                        mode: 0,
                        urls: vec![backend],
                    }),
                    sandbox: None,
                    timeout_ms: 0,
                }),
                subscription_tiers: vec!["Unlimited".into()],
                api_throttling_tier: "BenchHuge".into(),
                ..Default::default()
            },
        },
        Command::ChangeLifecycle {
            api_id: "bench-api".into(),
            target: lifecycle::State::Published,
            expected_version: None,
        },
        Command::CreateApplication {
            application_id: "bench-app".into(),
            name: "BenchApp".into(),
            owner: "bench".into(),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        },
        Command::RegisterClient {
            client: OAuthClient {
                client_id: "bench-client".into(),
                application_id: "bench-app".into(),
                key_type: KeyType::Production as i32,
                secret_hash: "$argon2id$unused".into(),
                ..Default::default()
            },
        },
        Command::Subscribe {
            subscription_id: "bench-sub".into(),
            application_id: "bench-app".into(),
            api_id: "bench-api".into(),
            tier: "Unlimited".into(),
        },
    ];
    for command in commands {
        exec.execute(command, &ctx).await?;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let token = key.sign(&AccessClaims {
        iss: gatehouse_tokens::DEFAULT_ISSUER.into(),
        sub: "bench".into(),
        aud: gatehouse_tokens::API_AUDIENCE.into(),
        exp: now + 3600,
        nbf: now,
        iat: now,
        jti: "bench-token".into(),
        scope: "default".into(),
        client_id: "bench-client".into(),
        application_id: "bench-app".into(),
        application_name: "BenchApp".into(),
        key_type: "PRODUCTION".into(),
        application_tier: "Unlimited".into(),
    })?;
    println!("{token}");
    Ok(())
}
