//! [`GrpcServer`]: the one way a Gatehouse node serves gRPC.
//!
//! Every gRPC port of every node (control's admin API and gateway sync, token-service's
//! key manager) is built here, so what a port offers besides its own services is the
//! same everywhere and changes in one place:
//!
//! - **Health** (`grpc.health.v1.Health`): SERVING for each service added, and for the
//!   server as a whole (`""`), for Docker health checks and load balancers.
//! - **Reflection** v1 and v1alpha (grpcurl 1.8 speaks v1alpha only, newer clients v1),
//!   listing exactly the services this port serves — never a service of another node
//!   that happens to live in the same descriptor set.
//! - **A trace span per call** (`grpc`, named after the method path), continuing the
//!   caller's W3C trace context from the request metadata, so an admin call's trace
//!   reaches every node it touches.
//! - **Graceful shutdown** on the node's [`Shutdown`]: in-flight calls finish.
//! - **TLS**, when given a configuration ([`GrpcServer::tls`]): handshakes off the
//!   accept loop, bounded in number and time, and each call knows its caller's node
//!   identity ([`crate::tls::caller_node`]).
//!
//! # Shared state
//!
//! None of its own: the builder is consumed by [`GrpcServer::serve`], and the health
//! reporter it creates is owned by the health service it serves.

use std::convert::Infallible;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::shutdown::Shutdown;
use crate::tls::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, plain_incoming, tls_incoming};

/// What a gRPC handler of any node answers: the response, or the status refusing it.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// Service names every port serves besides its own.
const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Why a gRPC server could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServerError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The services of one gRPC port, and the standard ones around them (see the module
/// docs). Add services with [`add_service`](Self::add_service), then
/// [`serve`](Self::serve).
#[derive(Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl GrpcServer {
    pub fn new() -> GrpcServer {
        GrpcServer::default()
    }

    /// Serves `service` on this port: routed, reported SERVING, listed by reflection.
    pub fn add_service<S>(mut self, service: S) -> GrpcServer
    where
        S: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Serves TLS with `config` (see [`crate::tls`]): calls then carry their caller's
    /// [`crate::tls::Peer`]. Without it the port is plain TCP and no call proves a node.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> GrpcServer {
        self.tls = Some(config);
        self
    }

    /// The names reflection lists on this port: the services added, health and
    /// reflection itself.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names = self.names.clone();
        names.extend([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]);
        names
    }

    /// Serves on `listener` until `shutdown`, then lets in-flight calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> Result<(), GrpcServerError> {
        let names = self.service_names();
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &self.names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        let reflection = || {
            names.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .include_reflection_service(false)
                    .register_encoded_file_descriptor_set(gatehouse_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    )
                    .register_encoded_file_descriptor_set(
                        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                    ),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        let server = tonic::transport::Server::builder()
            .trace_fn(call_span)
            .add_routes(routes.routes());
        match self.tls {
            Some(config) => {
                let incoming = tls_incoming(listener, config, MAX_HANDSHAKES, HANDSHAKE_TIMEOUT);
                server
                    .serve_with_incoming_shutdown(incoming, shutdown.wait_owned())
                    .await?
            }
            None => {
                server
                    .serve_with_incoming_shutdown(plain_incoming(listener), shutdown.wait_owned())
                    .await?
            }
        }
        Ok(())
    }
}

/// The span of one call: named after the method path, child of the caller's trace.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        rpc.system = "grpc",
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::set_parent_from(
        &span,
        request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    span
}

/// Adds `authorization: Bearer <token>` to every call of a client (an empty token adds
/// nothing).
#[derive(Clone)]
pub struct Bearer(pub String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            let value = format!("Bearer {}", self.0)
                .parse()
                .map_err(|_| tonic::Status::internal("the token is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}
