//! Danube I/O: the client, producers and consumers, each call bounded in time
//! and retried with backoff where the failure is temporary.
//!
//! `danube-client` does not connect in `build()` and has no timeout of its own,
//! and a broker that is down at start answers with transport errors: all of it
//! is retried here rather than crashing the connector.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use danube_client::errors::DanubeError;
use danube_client::{Consumer, DanubeClient, Producer, SubType};
use danube_core::proto::SchemaReference;

use super::retry::{RetryPolicy, retry};
use crate::protocol::{ConsumerConfig, ProducerConfig, SubscriptionType};

/// A failed Danube operation and whether retrying may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DanubeFailure {
    pub message: String,
    pub retryable: bool,
    /// The broker's status code, when it answered.
    pub code: Option<tonic::Code>,
}

impl From<DanubeError> for DanubeFailure {
    fn from(e: DanubeError) -> Self {
        use tonic::Code;
        let retryable = match &e {
            DanubeError::TonicTransportError(_) => true,
            DanubeError::FromStatus(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Unknown
                    | Code::Cancelled
            ),
            _ => false,
        };
        let message = match &e {
            DanubeError::FromStatus(status) => {
                format!("{:?}: {}", status.code(), status.message())
            }
            other => other.to_string(),
        };
        let code = match &e {
            DanubeError::FromStatus(status) => Some(status.code()),
            _ => None,
        };
        DanubeFailure {
            message,
            retryable,
            code,
        }
    }
}

/// Runs one Danube call with a time bound; running out of time is retryable.
pub async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, DanubeError>>,
) -> Result<T, DanubeFailure> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(DanubeFailure::from),
        Err(_) => Err(DanubeFailure {
            message: format!("no answer from the broker within {} ms", limit.as_millis()),
            retryable: true,
            code: None,
        }),
    }
}

/// Connects to the broker, retrying while it is unreachable.
pub async fn connect(
    url: &str,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<DanubeClient, DanubeFailure> {
    retry(policy, "connect", || async {
        let client = bounded(limit, DanubeClient::builder().service_url(url).build())
            .await
            .map_err(split)?;
        Ok(client)
    })
    .await
}

/// Creates a producer as `config` says, attaching `schema` to its messages,
/// retrying temporary failures.
pub async fn create_producer(
    client: &DanubeClient,
    name: &str,
    config: &ProducerConfig,
    schema: Option<&SchemaReference>,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<Producer, DanubeFailure> {
    retry(policy, "create_producer", || async {
        let mut builder = client
            .new_producer()
            .with_topic(config.topic.clone())
            .with_name(name.to_string());
        if config.reliable {
            builder = builder.with_reliable_dispatch();
        }
        if config.partitions > 1 {
            builder = builder.with_partitions(config.partitions as usize);
        }
        if let Some(schema) = schema {
            builder = builder.with_schema_reference(schema.clone());
        }
        let mut producer = builder
            .build()
            .map_err(|e| (DanubeFailure::from(e), false))?;
        bounded(limit, producer.create()).await.map_err(split)?;
        Ok(producer)
    })
    .await
    .map_err(|e| DanubeFailure {
        message: format!(
            "cannot create a producer on {}: {}",
            config.topic, e.message
        ),
        ..e
    })
}

/// Publishes one message, retrying temporary failures.
pub async fn publish(
    producer: &Producer,
    payload: &[u8],
    attributes: &[(String, String)],
    key: Option<&str>,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<(), DanubeFailure> {
    retry(policy, "publish", || async {
        let attributes: HashMap<String, String> = attributes.iter().cloned().collect();
        let data = payload.to_vec();
        let sent = match key {
            Some(key) => bounded(limit, producer.send_with_key(data, Some(attributes), key)).await,
            None => bounded(limit, producer.send(data, Some(attributes))).await,
        };
        sent.map(drop).map_err(split)
    })
    .await
}

/// Subscribes as `config` says, retrying while the broker is unreachable or
/// the topic does not exist yet (a sink may start before its source).
pub async fn subscribe(
    client: &DanubeClient,
    consumer_name: &str,
    config: &ConsumerConfig,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<Consumer, DanubeFailure> {
    let sub_type = match config.subscription_type {
        SubscriptionType::Exclusive => SubType::Exclusive,
        SubscriptionType::Shared => SubType::Shared,
        SubscriptionType::Failover => SubType::FailOver,
        SubscriptionType::KeyShared => SubType::KeyShared,
    };
    retry(policy, "subscribe", || async {
        let mut consumer = client
            .new_consumer()
            .with_topic(config.topic.clone())
            .with_consumer_name(consumer_name.to_string())
            .with_subscription(config.subscription.clone())
            .with_subscription_type(sub_type.clone())
            .build()
            .map_err(|e| (DanubeFailure::from(e), false))?;
        match bounded(limit, consumer.subscribe()).await {
            Ok(()) => Ok(consumer),
            Err(e) if e.message.starts_with("NotFound") => Err((e, true)),
            Err(e) => Err(split(e)),
        }
    })
    .await
    .map_err(|e| DanubeFailure {
        message: format!(
            "cannot subscribe to {} as {}: {}",
            config.topic, config.subscription, e.message
        ),
        ..e
    })
}

/// An error and whether to retry it, as [`retry`] takes it.
pub fn split(e: DanubeFailure) -> (DanubeFailure, bool) {
    let retryable = e.retryable;
    (e, retryable)
}
