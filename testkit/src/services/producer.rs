//! Producers: creation (auto-creating topics) and publishing.

use danube_core::proto::producer_service_server::ProducerService;
use danube_core::proto::{MessageResponse, ProducerRequest, ProducerResponse, StreamMessage};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::BrokerService;

#[tonic::async_trait]
impl ProducerService for BrokerService {
    async fn create_producer(
        &self,
        request: Request<ProducerRequest>,
    ) -> Result<Response<ProducerResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let producer_id = self.core.update(|state| {
            let subject = request.schema_ref.as_ref().map(|r| r.subject.as_str());
            let registered = subject.is_some_and(|s| state.schemas.has_subject(s));
            state.topics.create_producer(&request, registered)
        })?;
        debug!(producer_id, topic = %request.topic_name, name = %request.producer_name, "producer ready");
        Ok(Response::new(ProducerResponse {
            request_id: request.request_id,
            producer_id,
            producer_name: request.producer_name,
        }))
    }

    async fn send_message(
        &self,
        request: Request<StreamMessage>,
    ) -> Result<Response<MessageResponse>, Status> {
        self.core.wait_unpaused().await;
        let message = request.into_inner();
        let request_id = message.request_id;
        self.core.update(|state| state.topics.publish(message))?;
        Ok(Response::new(MessageResponse { request_id }))
    }
}
