//! Danube I/O: what the pipelines need of the broker ([`Danube`],
//! [`Publish`], [`Consume`]), its implementation on `danube-client`, and the
//! calls built on it, each bounded in time and retried with backoff where
//! the failure is temporary.
//!
//! The pipelines are generic over [`Danube`] so that their unit tests run on
//! a scripted broker in memory (`supervisor::test_doubles`) with virtual
//! time; everything else runs on `danube-client`.
//!
//! `danube-client` does not connect in `build()` and has no timeout of its own,
//! and a broker that is down at start answers with transport errors: all of it
//! is retried here rather than crashing the connector.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use danube_client::errors::DanubeError;
use danube_client::{Consumer, DanubeClient, Producer, SchemaRegistryClient, SubType};
use danube_core::message::StreamMessage;
use danube_core::proto::SchemaReference;
use tokio::sync::mpsc;

use super::retry::{RetryPolicy, retry};
use crate::contract::{ConsumerConfig, ProducerConfig, SubscriptionType};

/// A failed Danube operation and whether retrying may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DanubeFailure {
    pub message: String,
    pub retryable: bool,
    /// The broker's status code, when it answered.
    pub code: Option<tonic::Code>,
    /// What does not exist on the broker, when that is why it failed.
    pub absent: Option<Absent>,
}

impl DanubeFailure {
    /// The broker refused the request as asked (a bad name, a subscription
    /// held by another consumer, a mismatched topic): asking again cannot
    /// succeed until someone changes a configuration.
    pub fn refused(&self) -> bool {
        use tonic::Code;
        matches!(
            self.code,
            Some(
                Code::InvalidArgument
                    | Code::PermissionDenied
                    | Code::FailedPrecondition
                    | Code::Unauthenticated
                    | Code::AlreadyExists
            )
        )
    }
}

/// Something a topic needs that the broker does not have (yet). Neither is an
/// outage: a topic appears when a producer creates it, a namespace when an
/// operator (or the host, given admin access) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absent {
    Topic,
    Namespace(String),
}

impl Absent {
    /// Reads the broker's and the client's wording: the client reports a
    /// topic without partitions as "No topics found for '/ns/t'", the
    /// broker a subscribe to a missing topic as NotFound "Unable to find the
    /// topic", and a producer in a missing namespace as Unavailable "Unable
    /// to find the namespace NS, ...".
    fn of(e: &DanubeError) -> Option<Absent> {
        match e {
            DanubeError::Unrecoverable(m) if m.starts_with("No topics found") => {
                Some(Absent::Topic)
            }
            DanubeError::FromStatus(status) => {
                let message = status.message();
                if let Some(rest) = message.strip_prefix("Unable to find the namespace ") {
                    let name = rest.split([',', ' ']).next().unwrap_or(rest);
                    Some(Absent::Namespace(name.to_string()))
                } else if status.code() == tonic::Code::NotFound
                    && message.starts_with("Unable to find the topic")
                {
                    Some(Absent::Topic)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
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
            absent: Absent::of(&e),
        }
    }
}

/// Runs one Danube call with a time bound; running out of time is retryable.
pub async fn bounded<T, E: Into<DanubeFailure>>(
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, DanubeFailure> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(DanubeFailure {
            message: format!("no answer from the broker within {} ms", limit.as_millis()),
            retryable: true,
            code: None,
            absent: None,
        }),
    }
}

/// The broker as the pipelines use it: one attempt per call, unbounded in
/// time (callers bound and retry them).
pub trait Danube: Clone + Send + Sync + 'static {
    type Producer: Publish;
    type Consumer: Consume;

    /// Creates a producer on `config.topic` attaching `schema` to its
    /// messages. A namespace the broker lacks fails with
    /// [`Absent::Namespace`].
    fn create_producer(
        &self,
        name: &str,
        config: &ProducerConfig,
        schema: Option<&SchemaReference>,
    ) -> impl Future<Output = Result<Self::Producer, DanubeFailure>> + Send;

    /// The topics a consumer of `topic` would subscribe to: `topic` itself,
    /// or its partitions `topic-part-N`; empty when neither exists yet.
    fn partitions(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<String>, DanubeFailure>> + Send;

    /// Subscribes as `config` says. A topic that does not exist yet fails
    /// with [`Absent::Topic`].
    fn subscribe(
        &self,
        consumer_name: &str,
        config: &ConsumerConfig,
    ) -> impl Future<Output = Result<Self::Consumer, DanubeFailure>> + Send;

    /// The schema registry's client.
    fn schema_registry(&self) -> SchemaRegistryClient;
}

/// A producer: one send at a time, answered once the broker stored it.
pub trait Publish: Send + Sync + 'static {
    fn send(
        &self,
        payload: Vec<u8>,
        attributes: HashMap<String, String>,
        key: Option<&str>,
    ) -> impl Future<Output = Result<(), DanubeFailure>> + Send;
}

/// A subscription's consumer.
pub trait Consume: Send + Sync + 'static {
    /// Starts the message stream.
    fn receive(
        &mut self,
    ) -> impl Future<Output = Result<mpsc::Receiver<StreamMessage>, DanubeFailure>> + Send;

    fn ack(
        &mut self,
        message: &StreamMessage,
    ) -> impl Future<Output = Result<(), DanubeFailure>> + Send;

    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

impl Danube for DanubeClient {
    type Producer = Producer;
    type Consumer = Consumer;

    async fn create_producer(
        &self,
        name: &str,
        config: &ProducerConfig,
        schema: Option<&SchemaReference>,
    ) -> Result<Producer, DanubeFailure> {
        let mut builder = self
            .new_producer()
            .with_topic(config.topic.clone())
            .with_name(name.to_string());
        if config.reliable {
            builder = builder.with_reliable_dispatch();
        }
        // As danube-connect: 1 is a partitioned topic of one partition.
        if config.partitions > 0 {
            builder = builder.with_partitions(config.partitions as usize);
        }
        if let Some(schema) = schema {
            builder = builder.with_schema_reference(schema.clone());
        }
        let mut producer = builder.build()?;
        producer.create().await?;
        Ok(producer)
    }

    async fn partitions(&self, topic: &str) -> Result<Vec<String>, DanubeFailure> {
        use danube_core::proto::TopicLookupRequest;
        use danube_core::proto::discovery_client::DiscoveryClient;
        let channel = self.get_service_channel().await?;
        let response = DiscoveryClient::new(channel)
            .topic_partitions(TopicLookupRequest {
                request_id: 0,
                topic: topic.to_string(),
            })
            .await
            .map_err(DanubeError::FromStatus)?;
        Ok(response.into_inner().partitions)
    }

    async fn subscribe(
        &self,
        consumer_name: &str,
        config: &ConsumerConfig,
    ) -> Result<Consumer, DanubeFailure> {
        let sub_type = match config.subscription_type {
            SubscriptionType::Exclusive => SubType::Exclusive,
            SubscriptionType::Shared => SubType::Shared,
            SubscriptionType::Failover => SubType::FailOver,
            SubscriptionType::KeyShared => SubType::KeyShared,
        };
        let mut consumer = self
            .new_consumer()
            .with_topic(config.topic.clone())
            .with_consumer_name(consumer_name.to_string())
            .with_subscription(config.subscription.clone())
            .with_subscription_type(sub_type)
            .build()?;
        consumer.subscribe().await?;
        Ok(consumer)
    }

    fn schema_registry(&self) -> SchemaRegistryClient {
        self.schema()
    }
}

impl Publish for Producer {
    async fn send(
        &self,
        payload: Vec<u8>,
        attributes: HashMap<String, String>,
        key: Option<&str>,
    ) -> Result<(), DanubeFailure> {
        match key {
            Some(key) => self.send_with_key(payload, Some(attributes), key).await,
            None => Producer::send(self, payload, Some(attributes)).await,
        }
        .map(drop)
        .map_err(DanubeFailure::from)
    }
}

impl Consume for Consumer {
    async fn receive(&mut self) -> Result<mpsc::Receiver<StreamMessage>, DanubeFailure> {
        Ok(Consumer::receive(self).await?)
    }

    async fn ack(&mut self, message: &StreamMessage) -> Result<(), DanubeFailure> {
        Ok(Consumer::ack(self, message).await?)
    }

    async fn close(&mut self) {
        Consumer::close(self).await
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
/// retrying temporary failures. A namespace the broker does not have is
/// created through `admin_url` when the operator gave the host the admin
/// API, and otherwise stops the producer with what to do: the broker
/// answers it as Unavailable, which retrying would never mend.
pub async fn create_producer<D: Danube>(
    danube: &D,
    admin_url: Option<&str>,
    name: &str,
    config: &ProducerConfig,
    schema: Option<&SchemaReference>,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<D::Producer, DanubeFailure> {
    retry(policy, "create_producer", || async {
        match bounded(limit, danube.create_producer(name, config, schema)).await {
            Ok(producer) => Ok(producer),
            Err(DanubeFailure {
                absent: Some(Absent::Namespace(namespace)),
                ..
            }) => Err(namespace_missing(&namespace, admin_url, limit).await),
            Err(e) => Err(split(e)),
        }
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

/// A producer's namespace does not exist: created through `admin_url`
/// where the host has the admin API (then the producer is tried again),
/// otherwise a failure saying what to do, not retried.
async fn namespace_missing(
    namespace: &str,
    admin_url: Option<&str>,
    limit: Duration,
) -> (DanubeFailure, bool) {
    let (message, again) = match admin_url {
        Some(admin_url) => match create_namespace(admin_url, namespace, limit).await {
            Ok(()) => {
                tracing::info!(namespace, admin_url, "created the namespace on the broker");
                (
                    format!("the namespace `{namespace}` was just created"),
                    true,
                )
            }
            Err(e) => (
                format!(
                    "the namespace `{namespace}` does not exist and creating it through {admin_url} failed: {e}"
                ),
                true,
            ),
        },
        None => (
            format!(
                "the namespace `{namespace}` does not exist on the broker: create it (danube-admin-cli namespaces create {namespace}, or the broker's bootstrap_namespaces), or give the host the broker's admin API ([broker] admin_url) to create it"
            ),
            false,
        ),
    };
    let failure = DanubeFailure {
        message,
        retryable: false,
        code: Some(tonic::Code::Unavailable),
        absent: None,
    };
    (failure, again)
}

/// Creates `namespace` through the broker's admin API. One that exists
/// already counts as created (another host may have been first).
pub async fn create_namespace(
    admin_url: &str,
    namespace: &str,
    limit: Duration,
) -> Result<(), String> {
    use danube_core::admin_proto::NamespaceRequest;
    use danube_core::admin_proto::namespace_admin_client::NamespaceAdminClient;
    let call = async {
        let mut admin = NamespaceAdminClient::connect(admin_url.to_string())
            .await
            .map_err(|e| format!("cannot reach it: {e}"))?;
        match admin
            .create_namespace(NamespaceRequest {
                name: namespace.to_string(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.message().contains("already exists") => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
}

/// Publishes one message, retrying temporary failures.
pub async fn publish(
    producer: &impl Publish,
    payload: &[u8],
    attributes: &[(String, String)],
    key: Option<&str>,
    policy: &RetryPolicy,
    limit: Duration,
) -> Result<(), DanubeFailure> {
    retry(policy, "publish", || async {
        let attributes: HashMap<String, String> = attributes.iter().cloned().collect();
        bounded(limit, producer.send(payload.to_vec(), attributes, key))
            .await
            .map_err(split)
    })
    .await
}

/// An error and whether to retry it, as [`retry`] takes it.
pub fn split(e: DanubeFailure) -> (DanubeFailure, bool) {
    let retryable = e.retryable;
    (e, retryable)
}
