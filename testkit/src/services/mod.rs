//! The gRPC services danube-client calls, one module per service. Each RPC
//! waits while the broker is paused, then applies itself to the shared core.

mod admin;
mod consumer;
mod discovery;
mod health;
mod producer;
mod schema_registry;

use std::sync::Arc;

use danube_core::admin_proto::broker_admin_server::BrokerAdminServer;
use danube_core::admin_proto::namespace_admin_server::NamespaceAdminServer;
use danube_core::admin_proto::topic_admin_server::TopicAdminServer;
use danube_core::proto::consumer_service_server::ConsumerServiceServer;
use danube_core::proto::danube_schema::schema_registry_server::SchemaRegistryServer;
use danube_core::proto::discovery_server::DiscoveryServer;
use danube_core::proto::health_check_server::HealthCheckServer;
use danube_core::proto::producer_service_server::ProducerServiceServer;
use tonic::service::Routes;

use crate::broker::Core;

/// The handle every service implementation shares.
#[derive(Debug, Clone)]
pub(crate) struct BrokerService {
    core: Arc<Core>,
}

/// All services, ready to be served on a connection: the admin services
/// share the client port.
pub(crate) fn routes(core: Arc<Core>) -> Routes {
    let service = BrokerService { core };
    // Payloads somewhat over the limit must reach the handler, which refuses
    // them with a clear message; tonic would otherwise cut them off at 4 MiB
    // with a generic decoding error.
    let max_request = service
        .core
        .config
        .max_payload_bytes
        .saturating_mul(2)
        .saturating_add(1 << 20);
    Routes::new(DiscoveryServer::new(service.clone()))
        .add_service(
            ProducerServiceServer::new(service.clone()).max_decoding_message_size(max_request),
        )
        .add_service(ConsumerServiceServer::new(service.clone()))
        .add_service(HealthCheckServer::new(service.clone()))
        .add_service(SchemaRegistryServer::new(service.clone()))
        .add_service(BrokerAdminServer::new(service.clone()))
        .add_service(NamespaceAdminServer::new(service.clone()))
        .add_service(TopicAdminServer::new(service))
}
