//! The dead-letter topic: records that can never be delivered (a sink could
//! not write them, a source produced them against their topic's schema) are
//! published there with their payload and attributes, plus why they failed
//! and where they came from.

use std::time::Duration;

use danube_core::message::StreamMessage;
use tokio::sync::OnceCell;

use super::danube::{self, Danube, DanubeFailure};
use super::retry::RetryPolicy;
use crate::config::ConnectorConfig;
use crate::contract::{ConnectorError, SourceRecord};

/// A record on its way to the dead-letter topic.
pub struct Rejected<'r> {
    pub payload: &'r [u8],
    pub attributes: Vec<(String, String)>,
    pub key: Option<&'r str>,
    /// The topic it was read from (sink) or meant for (source).
    pub topic: &'r str,
    /// Its offset in that topic, for a consumed message.
    pub offset: Option<u64>,
}

impl<'r> Rejected<'r> {
    /// A message a sink consumed.
    pub fn consumed(message: &'r StreamMessage) -> Rejected<'r> {
        Rejected {
            payload: &message.payload,
            attributes: message
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            key: message.routing_key.as_deref(),
            topic: &message.msg_id.topic_name,
            offset: Some(message.msg_id.topic_offset),
        }
    }

    /// A record a source produced and that was not published.
    pub fn produced(record: &'r SourceRecord) -> Rejected<'r> {
        Rejected {
            payload: &record.payload,
            attributes: record.attributes.clone(),
            key: record.key.as_deref(),
            topic: &record.topic,
            offset: None,
        }
    }
}

/// The connector's dead-letter topic; its producer is created on first use.
pub struct DeadLetter<D: Danube> {
    pub topic: String,
    connector: String,
    admin_url: Option<String>,
    producer: OnceCell<D::Producer>,
    danube: D,
    policy: RetryPolicy,
    limit: Duration,
}

impl<D: Danube> DeadLetter<D> {
    pub fn new(
        danube: &D,
        config: &ConnectorConfig,
        policy: &RetryPolicy,
        limit: Duration,
    ) -> DeadLetter<D> {
        DeadLetter {
            topic: config.dead_letter_topic(),
            connector: config.host.connector_name.clone(),
            admin_url: config.host.broker.admin_url.clone(),
            producer: OnceCell::new(),
            danube: danube.clone(),
            policy: policy.clone(),
            limit,
        }
    }

    /// Publishes `rejected` with the attributes `dlq.error`, `dlq.error_class`,
    /// `dlq.topic`, `dlq.offset` (when known) and `dlq.connector`.
    pub async fn send(
        &self,
        rejected: Rejected<'_>,
        error: &ConnectorError,
    ) -> Result<(), DanubeFailure> {
        let producer = self
            .producer
            .get_or_try_init(|| async {
                let config = crate::contract::ProducerConfig {
                    topic: self.topic.clone(),
                    partitions: 0,
                    reliable: true,
                    schema_subject: None,
                };
                let name = format!(
                    "{}-dead-letter-{:08x}",
                    self.connector,
                    rand::random::<u32>()
                );
                danube::create_producer(
                    &self.danube,
                    self.admin_url.as_deref(),
                    &name,
                    &config,
                    None,
                    &self.policy,
                    self.limit,
                )
                .await
            })
            .await?;
        let mut attributes = rejected.attributes;
        attributes.extend([
            ("dlq.error".to_string(), error.to_string()),
            ("dlq.error_class".to_string(), error.class().to_string()),
            ("dlq.topic".to_string(), rejected.topic.to_string()),
            ("dlq.connector".to_string(), self.connector.clone()),
        ]);
        if let Some(offset) = rejected.offset {
            attributes.push(("dlq.offset".to_string(), offset.to_string()));
        }
        tracing::warn!(topic = %rejected.topic, offset = ?rejected.offset, error = %error, dead_letter_topic = %self.topic, "record dead-lettered");
        danube::publish(
            producer,
            rejected.payload,
            &attributes,
            rejected.key,
            &self.policy,
            self.limit,
        )
        .await
    }
}
