//! Discovery: the test broker serves every topic itself, so a lookup either
//! says "connect to me" or that the topic does not exist.

use danube_core::proto::discovery_server::Discovery;
use danube_core::proto::topic_lookup_response::LookupType;
use danube_core::proto::{TopicLookupRequest, TopicLookupResponse, TopicPartitionsResponse};
use tonic::{Request, Response, Status};

use super::BrokerService;

#[tonic::async_trait]
impl Discovery for BrokerService {
    async fn topic_lookup(
        &self,
        request: Request<TopicLookupRequest>,
    ) -> Result<Response<TopicLookupResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        self.core
            .read(|state| state.topics.lookup(&request.topic))?;
        let url = self.core.url.clone();
        Ok(Response::new(TopicLookupResponse {
            request_id: request.request_id,
            response_type: LookupType::Connect.into(),
            connect_url: url.clone(),
            broker_url: url,
            proxy: false,
        }))
    }

    async fn topic_partitions(
        &self,
        request: Request<TopicLookupRequest>,
    ) -> Result<Response<TopicPartitionsResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let partitions = self
            .core
            .read(|state| state.topics.partitions(&request.topic))?;
        Ok(Response::new(TopicPartitionsResponse {
            request_id: request.request_id,
            partitions,
        }))
    }
}
