//! Consumers: subscriptions, the message stream, acks and nacks.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use danube_core::proto::consumer_service_server::ConsumerService;
use danube_core::proto::{
    AckRequest, AckResponse, ConsumerRequest, ConsumerResponse, NackRequest, NackResponse,
    ReceiveRequest,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::BrokerService;
use crate::broker::Core;
use crate::topics::Delivery;

/// The `ReceiveMessages` response stream. Dropping it (the client went away,
/// or the broker cut the connection) disconnects the consumer, so that its
/// unacked messages go to the next consumer without waiting for a timeout.
pub(crate) struct MessageStream {
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    core: Arc<Core>,
    consumer_id: u64,
    epoch: u64,
}

impl Stream for MessageStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.deliveries.poll_recv(cx)
    }
}

impl Drop for MessageStream {
    fn drop(&mut self) {
        debug!(consumer_id = self.consumer_id, "message stream closed");
        let (consumer_id, epoch) = (self.consumer_id, self.epoch);
        self.core
            .update(|state| state.topics.detach(consumer_id, epoch));
    }
}

#[tonic::async_trait]
impl ConsumerService for BrokerService {
    type ReceiveMessagesStream = MessageStream;

    async fn subscribe(
        &self,
        request: Request<ConsumerRequest>,
    ) -> Result<Response<ConsumerResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let consumer_id = self.core.update(|state| state.topics.subscribe(&request))?;
        debug!(
            consumer_id,
            topic = %request.topic_name,
            subscription = %request.subscription,
            "consumer subscribed"
        );
        Ok(Response::new(ConsumerResponse {
            request_id: request.request_id,
            consumer_id,
            consumer_name: request.consumer_name,
        }))
    }

    async fn receive_messages(
        &self,
        request: Request<ReceiveRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        self.core.wait_unpaused().await;
        if let Some(refused) = self.core.next_refused_receive() {
            return Err(refused);
        }
        let consumer_id = request.into_inner().consumer_id;
        let (epoch, deliveries) = self.core.update(|state| state.topics.attach(consumer_id))?;
        Ok(Response::new(MessageStream {
            deliveries,
            core: Arc::clone(&self.core),
            consumer_id,
            epoch,
        }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        self.core.update(|state| state.topics.ack(&request))?;
        Ok(Response::new(AckResponse {
            request_id: request.request_id,
        }))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        self.core
            .update(|state| state.topics.nack(&request, Instant::now()))?;
        Ok(Response::new(NackResponse {
            request_id: request.request_id,
        }))
    }
}
