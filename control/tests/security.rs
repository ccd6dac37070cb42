//! control's caller model, tried from outside: who may call which plane, what each
//! answer carries, and what an application manager may see. The real `control` binary
//! on NATS, mutual TLS under a test CA.
//!
//! - `GatewaySync` answers gateway identities only, and a gateway reports only as itself.
//! - No answer to anyone but token-service carries a secret hash (`WatchEvents` on both
//!   services, `GetSnapshot`).
//! - A caller without `apim:admin` sees and changes only the applications it owns.
//! - Reflection on control's port lists exactly the services that answer there.

mod support;

use gatehouse_domain::Command;
use gatehouse_node::pki::NodeRole;
use gatehouse_proto::admin::gateway_sync_client::GatewaySyncClient;
use gatehouse_proto::admin::{
    CreateApplicationRequest, GatewayStatus, GetApplicationRequest, GetSnapshotRequest,
    ListApplicationsRequest, ListSubscriptionsRequest, SubscribeRequest, WatchEventsRequest,
};
use gatehouse_proto::events::{OAuthClient, o_auth_client::KeyType};
use gatehouse_proto::keymanager::{GenerateKeysRequest, ListKeysRequest};
use gatehouse_testkit::nats::NatsServer;
use gatehouse_testkit::world::{LogLocation, World};
use gatehouse_tokens::scopes;
use prost::Message;
use support::{ControlProcess, grpcurl_list};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

/// A secret hash as token-service stores it.
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo";

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("refused").code()
}

/// A GatewaySync client presenting the node certificate of `role` `name` (None: no
/// client certificate).
fn sync_client(
    control: &ControlProcess,
    who: Option<(NodeRole, &str)>,
) -> GatewaySyncClient<Channel> {
    let channel = match who {
        Some((role, name)) => control
            .pki
            .node_tls(role, name)
            .channel(&control.url())
            .unwrap(),
        None => gatehouse_node::tls::server_verified_endpoint(
            &control.url(),
            Some(&control.pki.ca_cert()),
        )
        .unwrap()
        .connect_lazy(),
    };
    GatewaySyncClient::new(channel)
}

fn status(id: &str) -> GatewayStatus {
    GatewayStatus {
        gateway_id: id.into(),
        applied_sequence: 1,
        config_hash: "h".into(),
        address: "https://gw".into(),
        stale: false,
    }
}

#[tokio::test]
async fn gateway_sync_answers_gateways_only_each_as_itself() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), Some(&nats.url())).await;

    let mut anonymous = sync_client(&control, None);
    assert_eq!(
        code(anonymous.get_snapshot(GetSnapshotRequest {}).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            anonymous
                .watch_events(WatchEventsRequest { from_sequence: 1 })
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.report_status(status("gw-1")).await),
        Code::Unauthenticated
    );

    // Another node's identity is not a gateway's.
    let mut as_control = sync_client(&control, Some((NodeRole::Control, "other-control")));
    assert_eq!(
        code(as_control.get_snapshot(GetSnapshotRequest {}).await),
        Code::PermissionDenied
    );

    // A gateway reports as itself, never as another replica.
    let mut gw1 = sync_client(&control, Some((NodeRole::Gateway, "gw-1")));
    gw1.report_status(status("gw-1"))
        .await
        .expect("a gateway reports as itself");
    assert_eq!(
        code(gw1.report_status(status("gw-2")).await),
        Code::PermissionDenied
    );
    assert!(gw1.get_snapshot(GetSnapshotRequest {}).await.is_ok());

    // ListGateways shows the one honest report only.
    let listed = control.grpcurl("ListGateways", "{}").unwrap();
    let ids: Vec<&str> = listed["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["status"]["gatewayId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gw-1"]);

    // A revoked gateway certificate no longer gets through once control reloads the CRL.
    control.pki.revoke(NodeRole::Gateway, "gw-1");
    let mut control = control;
    control.restart().await;
    let mut revoked = sync_client(&control, Some((NodeRole::Gateway, "gw-1")));
    assert!(revoked.get_snapshot(GetSnapshotRequest {}).await.is_err());
}

#[tokio::test]
async fn no_answer_carries_a_secret_hash() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), Some(&nats.url())).await;
    let world = World::writer(LogLocation::nats(nats.url()).open().await).await;
    world
        .run(Command::CreateApplication {
            application_id: "app".into(),
            name: "App".into(),
            owner: "alice".into(),
            throttling_tier: "Unlimited".into(),
            description: String::new(),
        })
        .await;
    world
        .run(Command::RegisterClient {
            client: OAuthClient {
                client_id: "app-key".into(),
                application_id: "app".into(),
                key_type: KeyType::Production as i32,
                secret_hash: HASH.into(),
                ..Default::default()
            },
        })
        .await;
    world
        .run(Command::RegenerateSecret {
            client_id: "app-key".into(),
            secret_hash: HASH.replace("aGFzaG", "bmV3aG"),
        })
        .await;
    let end = world.sequence();
    let mut bytes: Vec<u8> = Vec::new();

    // GatewaySync, as a gateway: the snapshot and the whole history.
    let mut gw = sync_client(&control, Some((NodeRole::Gateway, "gw-1")));
    let snapshot = gw
        .get_snapshot(GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(snapshot.clients.iter().any(|c| c.client_id == "app-key"));
    bytes.extend(snapshot.encode_to_vec());
    let mut stream = gw
        .watch_events(WatchEventsRequest { from_sequence: 1 })
        .await
        .unwrap()
        .into_inner();
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        bytes.extend(item.encode_to_vec());
        if item.sequence >= end {
            break;
        }
    }
    // The admin API's history, as an admin.
    let mut admin = control.client().await;
    let mut stream = admin
        .watch_events(WatchEventsRequest { from_sequence: 1 })
        .await
        .unwrap()
        .into_inner();
    let mut saw_regeneration = false;
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        saw_regeneration |= item.subject.contains("app-key") && item.sequence == end;
        bytes.extend(item.encode_to_vec());
        if item.sequence >= end {
            break;
        }
    }
    assert!(
        saw_regeneration,
        "the history reached the secret's regeneration"
    );
    // And the admin API's key listing.
    bytes.extend(
        admin
            .list_keys(ListKeysRequest {
                application_id: "app".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .encode_to_vec(),
    );
    for needle in ["$argon2", &HASH[40..]] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "an answer carries {needle:?}"
        );
    }
    // The log itself still has the hashes, for token-service.
    let log = LogLocation::nats(nats.url()).open().await;
    let stored: Vec<u8> = log
        .read_to_end(1)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|r| r.payload.to_vec())
        .collect();
    assert!(stored.windows(7).any(|w| w == b"$argon2"));
}

#[tokio::test]
async fn an_application_manager_sees_and_changes_only_its_own_applications() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), Some(&nats.url())).await;
    let manager = |who: &str| {
        control
            .keys
            .token(who, &[scopes::APP_MANAGE, scopes::SUBSCRIBE])
    };
    let mut alice = control.client_with(&manager("alice")).await;
    let mut bob = control.client_with(&manager("bob")).await;

    // The owner is the caller; only an admin may name another.
    let app = alice
        .create_application(CreateApplicationRequest {
            name: "AliceApp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.owner, "alice");
    assert_eq!(
        code(
            bob.create_application(CreateApplicationRequest {
                name: "Sneaky".into(),
                owner: "alice".into(),
                ..Default::default()
            })
            .await
        ),
        Code::PermissionDenied
    );
    let mut admin = control.client().await;
    let for_carol = admin
        .create_application(CreateApplicationRequest {
            name: "CarolApp".into(),
            owner: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_carol.owner, "carol");

    // Bob cannot list, read, subscribe or manage keys of Alice's application.
    let listed = bob
        .list_applications(ListApplicationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .applications;
    assert!(listed.is_empty(), "bob sees nothing of others: {listed:?}");
    let listed = alice
        .list_applications(ListApplicationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .applications;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, app.id);
    let id = app.id.clone();
    assert_eq!(
        code(
            bob.get_application(GetApplicationRequest {
                application_id: id.clone()
            })
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            bob.subscribe(SubscribeRequest {
                application_id: id.clone(),
                api_id: "any".into(),
                tier: "Unlimited".into(),
            })
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            bob.generate_keys(GenerateKeysRequest {
                application_id: id.clone(),
                key_type: KeyType::Production as i32,
                ..Default::default()
            })
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            bob.list_keys(ListKeysRequest {
                application_id: id.clone()
            })
            .await
        ),
        Code::PermissionDenied
    );
    assert!(
        bob.list_subscriptions(ListSubscriptionsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .subscriptions
            .is_empty()
    );
    // Alice may read her own; the admin may read anyone's.
    assert!(
        alice
            .get_application(GetApplicationRequest {
                application_id: id.clone()
            })
            .await
            .is_ok()
    );
    assert!(
        admin
            .get_application(GetApplicationRequest { application_id: id })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn reflection_lists_exactly_the_services_served() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), None).await;
    let mut listed: Vec<String> = grpcurl_list(&control.target())
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "gatehouse.admin.v1.ControlPlane",
            "gatehouse.admin.v1.GatewaySync",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
}
