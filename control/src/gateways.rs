//! Gateway replicas as control sees them: the `GatewaySync` service they call, and the
//! registry of their heartbeats behind `ListGateways`.
//!
//! **Who may call** `GatewaySync`: gateways only, proven by their node certificate
//! (`spiffe://gatehouse/gateway/<id>`, mutual TLS under the cluster CA). A call without
//! one is UNAUTHENTICATED, a call from another node PERMISSION_DENIED, and a gateway
//! reports only as itself: a status naming another replica is PERMISSION_DENIED. What
//! it serves — the snapshot and the event stream — carries no secret hash.
//!
//! Heartbeats are not changes of configuration, so they are not events: the registry is
//! plain memory, refilled within one report interval after a control restart. It is
//! bounded (`--max-gateways`) and forgets a replica that has not reported for
//! `--forget-gateway-after-seconds`, so neither churn nor a misbehaving gateway grows
//! it without end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gatehouse_node::grpc::RpcResult;
use gatehouse_node::pki::{NodeIdentity, NodeRole};
use gatehouse_node::read_model::ReadModel;
use gatehouse_node::tls::AnswersOnly;
use gatehouse_proto::Timestamp;
use gatehouse_proto::admin::{
    GatewayInfo, GatewayStatus, GetSnapshotRequest, ReportStatusResponse, WatchEventsRequest,
    gateway_sync_server::GatewaySync,
};
use gatehouse_proto::events::Snapshot;
use tonic::{Request, Response, Status};

use crate::service::watch_stream;

/// A replica that has not reported for this long is shown as not alive.
pub const ALIVE_WINDOW: Duration = Duration::from_secs(30);

/// The registry's bounds: flags, or the environment variables beside them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct GatewayRegistryArgs {
    /// Most gateway replicas `ListGateways` keeps track of; a new replica past it is
    /// refused (RESOURCE_EXHAUSTED) until others are forgotten.
    #[arg(long, env = "GATEHOUSE_MAX_GATEWAYS", default_value_t = 1024)]
    pub max_gateways: usize,
    /// A replica that has not reported for this long is forgotten (seconds).
    #[arg(long, env = "GATEHOUSE_FORGET_GATEWAY_AFTER_SECONDS", default_value_t = 3600)]
    pub forget_gateway_after_seconds: u64,
}

/// The last heartbeat of each replica, by gateway id.
///
/// A `std::sync::Mutex`: reports and listings are rare and touch a small map without
/// awaiting.
pub struct GatewayRegistry {
    replicas: Mutex<BTreeMap<String, (GatewayStatus, SystemTime)>>,
    max: usize,
    forget_after: Duration,
}

/// The registry is full of live replicas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gateway registry holds {0} replicas already (--max-gateways)")]
pub struct RegistryFull(pub usize);

impl GatewayRegistry {
    pub fn new(args: &GatewayRegistryArgs) -> GatewayRegistry {
        GatewayRegistry {
            replicas: Mutex::default(),
            max: args.max_gateways.max(1),
            forget_after: Duration::from_secs(args.forget_gateway_after_seconds.max(1)),
        }
    }

    /// Records a heartbeat (at `now`), forgetting replicas gone for too long first.
    pub fn record_at(&self, status: GatewayStatus, now: SystemTime) -> Result<(), RegistryFull> {
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        replicas.retain(|_, (_, seen)| {
            now.duration_since(*seen).unwrap_or_default() < self.forget_after
        });
        if !replicas.contains_key(&status.gateway_id) && replicas.len() >= self.max {
            return Err(RegistryFull(replicas.len()));
        }
        replicas.insert(status.gateway_id.clone(), (status, now));
        Ok(())
    }

    pub fn record(&self, status: GatewayStatus) -> Result<(), RegistryFull> {
        self.record_at(status, SystemTime::now())
    }

    /// Every replica with its lag and sync state against control's `sequence`/`hash`.
    pub fn list(&self, sequence: u64, hash: &str) -> Vec<GatewayInfo> {
        self.list_at(sequence, hash, SystemTime::now())
    }

    fn list_at(&self, sequence: u64, hash: &str, now: SystemTime) -> Vec<GatewayInfo> {
        let replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        replicas
            .values()
            .filter(|(_, seen)| now.duration_since(*seen).unwrap_or_default() < self.forget_after)
            .map(|(status, seen)| {
                let alive = now.duration_since(*seen).unwrap_or_default() <= ALIVE_WINDOW;
                GatewayInfo {
                    lag: sequence.saturating_sub(status.applied_sequence),
                    in_sync: alive
                        && !status.stale
                        && status.applied_sequence == sequence
                        && status.config_hash == hash,
                    last_seen: Some(Timestamp::from(*seen)),
                    alive,
                    status: Some(status.clone()),
                }
            })
            .collect()
    }
}

/// The state as served over gRPC: everything but the secret hashes.
pub fn public_snapshot(model: &ReadModel) -> Snapshot {
    let mut snapshot = model.read().to_snapshot();
    gatehouse_domain::redact::redact_snapshot(&mut snapshot);
    snapshot
}

/// Who may call `GatewaySync`: gateways only (see the module docs).
const GATEWAYS_ONLY: AnswersOnly = AnswersOnly {
    service: "GatewaySync",
    role: NodeRole::Gateway,
    callers: "gateways",
    certificate: "a gateway's",
};

/// The calling gateway, or why the call is refused.
pub fn calling_gateway<T>(request: &Request<T>) -> Result<NodeIdentity, Status> {
    GATEWAYS_ONLY.caller(request)
}

/// `gatehouse.admin.v1.GatewaySync`.
pub struct GatewaySyncService {
    pub log: Arc<dyn gatehouse_eventlog::EventLog>,
    pub model: Arc<ReadModel>,
    pub registry: Arc<GatewayRegistry>,
}

#[tonic::async_trait]
impl GatewaySync for GatewaySyncService {
    async fn get_snapshot(&self, request: Request<GetSnapshotRequest>) -> RpcResult<Snapshot> {
        calling_gateway(&request)?;
        Ok(Response::new(public_snapshot(&self.model)))
    }

    type WatchEventsStream = crate::service::WatchStream;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> RpcResult<Self::WatchEventsStream> {
        calling_gateway(&request)?;
        let from = request.into_inner().from_sequence;
        Ok(Response::new(watch_stream(&self.log, from).await?))
    }

    async fn report_status(
        &self,
        request: Request<GatewayStatus>,
    ) -> RpcResult<ReportStatusResponse> {
        let gateway = calling_gateway(&request)?;
        let status = request.into_inner();
        if status.gateway_id != gateway.name {
            return Err(Status::permission_denied(format!(
                "gateway_id: {} may report only as itself, not as {:?}",
                gateway, status.gateway_id
            )));
        }
        if status.address.len() > 512 || status.config_hash.len() > 64 {
            return Err(Status::invalid_argument(
                "address: at most 512 bytes; config_hash: at most 64 bytes",
            ));
        }
        self.registry
            .record(status)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        Ok(Response::new(ReportStatusResponse {
            control_sequence: self.model.applied(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize, forget_after_seconds: u64) -> GatewayRegistry {
        GatewayRegistry::new(&GatewayRegistryArgs {
            max_gateways: max,
            forget_gateway_after_seconds: forget_after_seconds,
        })
    }

    fn status(id: &str, applied_sequence: u64, hash: &str) -> GatewayStatus {
        GatewayStatus {
            gateway_id: id.into(),
            applied_sequence,
            config_hash: hash.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lag_and_sync_are_computed_against_control() {
        let registry = registry(16, 3600);
        registry.record(status("gw-1", 10, "abc")).unwrap();
        registry.record(status("gw-2", 7, "old")).unwrap();
        let list = registry.list(10, "abc");
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].lag, list[0].in_sync, list[0].alive),
            (0, true, true)
        );
        assert_eq!((list[1].lag, list[1].in_sync), (3, false));
        // Same sequence, other hash: not in sync.
        assert!(!registry.list(10, "zzz")[0].in_sync);
    }

    #[test]
    fn the_registry_is_bounded_and_forgets_replicas_gone_for_long() {
        let registry = registry(2, 60);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        registry.record_at(status("a", 1, "h"), t0).unwrap();
        registry.record_at(status("b", 1, "h"), t0).unwrap();
        assert_eq!(
            registry.record_at(status("c", 1, "h"), t0),
            Err(RegistryFull(2)),
            "full"
        );
        registry
            .record_at(status("a", 2, "h"), t0)
            .expect("a known replica may always report");
        // b goes quiet; a keeps reporting; a minute later b is forgotten and c fits.
        let later = t0 + Duration::from_secs(61);
        registry
            .record_at(status("a", 3, "h"), later - Duration::from_secs(30))
            .unwrap();
        registry.record_at(status("c", 1, "h"), later).unwrap();
        let ids: Vec<String> = registry
            .list_at(3, "h", later)
            .into_iter()
            .map(|g| g.status.unwrap().gateway_id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }
}
