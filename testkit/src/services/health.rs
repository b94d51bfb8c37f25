//! Health checks: the client pings every few seconds and, on CLOSE, drops
//! its producer or resubscribes its consumer. Ids are never forgotten here,
//! so only ids this broker never issued get CLOSE.

use danube_core::proto::health_check_request::ClientType;
use danube_core::proto::health_check_response::ClientStatus;
use danube_core::proto::health_check_server::HealthCheck;
use danube_core::proto::{HealthCheckRequest, HealthCheckResponse};
use tonic::{Request, Response, Status};

use super::BrokerService;

#[tonic::async_trait]
impl HealthCheck for BrokerService {
    async fn health_check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let alive = match ClientType::try_from(request.client) {
            Ok(ClientType::Producer) => self.core.read(|s| s.topics.producer_exists(request.id)),
            Ok(ClientType::Consumer) => self.core.read(|s| s.topics.consumer_exists(request.id)),
            Err(_) => return Err(Status::invalid_argument("Invalid client type")),
        };
        let status = if alive {
            ClientStatus::Ok
        } else {
            ClientStatus::Close
        };
        Ok(Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }
}
