//! Gateway replicas as control sees them: the `GatewaySync` service they call, and the
//! registry of their heartbeats behind `ListGateways`.
//!
//! Heartbeats are not changes of configuration, so they are not events: the registry is
//! plain memory, refilled within one report interval after a control restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gatehouse_node::read_model::ReadModel;
use gatehouse_proto::Timestamp;
use gatehouse_proto::admin::{
    self, GatewayInfo, GatewayStatus, ReportStatusResponse, gateway_sync_server::GatewaySync,
};
use gatehouse_proto::events::Snapshot;
use tonic::{Request, Response, Status};

use crate::service::watch_stream;

/// A replica that has not reported for this long is shown as not alive.
pub const ALIVE_WINDOW: Duration = Duration::from_secs(30);

/// The last heartbeat of each replica, by gateway id.
///
/// A `std::sync::Mutex`: reports and listings are rare and touch a small map without
/// awaiting.
#[derive(Default)]
pub struct GatewayRegistry {
    replicas: Mutex<BTreeMap<String, (GatewayStatus, SystemTime)>>,
}

impl GatewayRegistry {
    pub fn record(&self, status: GatewayStatus) {
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        replicas.insert(status.gateway_id.clone(), (status, SystemTime::now()));
    }

    /// Every replica with its lag and sync state against control's `sequence`/`hash`.
    pub fn list(&self, sequence: u64, hash: &str) -> Vec<GatewayInfo> {
        let now = SystemTime::now();
        let replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        replicas
            .values()
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

/// `gatehouse.admin.v1.GatewaySync`.
pub struct GatewaySyncService {
    pub log: Arc<dyn gatehouse_eventlog::EventLog>,
    pub model: Arc<ReadModel>,
    pub registry: Arc<GatewayRegistry>,
}

#[tonic::async_trait]
impl GatewaySync for GatewaySyncService {
    async fn get_snapshot(
        &self,
        _request: Request<admin::GetSnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        Ok(Response::new(public_snapshot(&self.model)))
    }

    type WatchEventsStream = crate::service::WatchStream;

    async fn watch_events(
        &self,
        request: Request<admin::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let from = request.into_inner().from_sequence;
        Ok(Response::new(watch_stream(&self.log, from).await?))
    }

    async fn report_status(
        &self,
        request: Request<GatewayStatus>,
    ) -> Result<Response<ReportStatusResponse>, Status> {
        let status = request.into_inner();
        if status.gateway_id.trim().is_empty() {
            return Err(Status::invalid_argument("gateway_id: must not be empty"));
        }
        self.registry.record(status);
        Ok(Response::new(ReportStatusResponse {
            control_sequence: self.model.applied(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_sync_are_computed_against_control() {
        let registry = GatewayRegistry::default();
        registry.record(GatewayStatus {
            gateway_id: "gw-1".into(),
            applied_sequence: 10,
            config_hash: "abc".into(),
            ..Default::default()
        });
        registry.record(GatewayStatus {
            gateway_id: "gw-2".into(),
            applied_sequence: 7,
            config_hash: "old".into(),
            ..Default::default()
        });
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
}
