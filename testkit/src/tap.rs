//! A tap: a consumer of its own on a topic, recording what reached the
//! broker, so that tests can count messages on either broker (only the test
//! broker can be asked for its stored messages).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use danube_client::{DanubeClient, SubType};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One message as the tap received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapMessage {
    /// The topic, or the partition of a partitioned topic, it came from.
    pub topic: String,
    /// Its offset in that topic or partition.
    pub offset: u64,
    pub payload: Vec<u8>,
    pub attributes: HashMap<String, String>,
    pub routing_key: Option<String>,
    /// The schema the producer attached, if any.
    pub schema_id: Option<u64>,
    pub schema_version: Option<u32>,
}

/// A reliable consumer (the real `danube-client`) on subscription
/// [`Tap::SUBSCRIPTION`] of a topic, or of every partition of a partitioned
/// one, that acknowledges and records every message it receives. A new
/// subscription starts at the latest message, so start the tap before the
/// messages to count are published. Dropping the tap stops it.
#[derive(Debug)]
pub struct Tap {
    received: Arc<Mutex<Vec<TapMessage>>>,
    count: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Tap {
    /// The subscription the tap consumes on; it shows in subscription lists.
    pub const SUBSCRIPTION: &'static str = "tap";

    /// Subscribes to `topic` (which must exist) and starts recording.
    pub async fn start(broker_url: &str, topic: &str) -> anyhow::Result<Tap> {
        let client = DanubeClient::builder()
            .service_url(broker_url)
            .build()
            .await
            .with_context(|| format!("tap: connecting to {broker_url}"))?;
        let mut consumer = client
            .new_consumer()
            .with_topic(topic)
            .with_consumer_name("tap")
            .with_subscription(Self::SUBSCRIPTION)
            .with_subscription_type(SubType::Exclusive)
            .build()?;
        consumer
            .subscribe()
            .await
            .with_context(|| format!("tap: subscribing to {topic}"))?;
        let mut messages = consumer.receive().await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let (counter, count) = watch::channel(0);
        let task = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                while let Some(message) = messages.recv().await {
                    lock(&received).push(TapMessage {
                        topic: message.msg_id.topic_name.clone(),
                        offset: message.msg_id.topic_offset,
                        payload: message.payload.to_vec(),
                        attributes: message.attributes.clone(),
                        routing_key: message.routing_key.clone(),
                        schema_id: message.schema_id,
                        schema_version: message.schema_version,
                    });
                    counter.send_modify(|n| *n += 1);
                    // A failed ack shows as a redelivery, which tests see.
                    if let Err(error) = consumer.ack(&message).await {
                        tracing::warn!(%error, "tap: ack failed");
                    }
                }
            }
        });
        Ok(Tap {
            received,
            count,
            task,
        })
    }

    /// Everything received so far, in order of arrival (redeliveries included).
    pub fn messages(&self) -> Vec<TapMessage> {
        lock(&self.received).clone()
    }

    /// Each message once (by topic and offset), in order of first arrival:
    /// what the broker stored.
    pub fn stored(&self) -> Vec<TapMessage> {
        let mut seen = HashSet::new();
        lock(&self.received)
            .iter()
            .filter(|m| seen.insert((m.topic.clone(), m.offset)))
            .cloned()
            .collect()
    }

    /// How many messages were received so far.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `count` messages were received; `false` if
    /// `deadline` passes first.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> bool {
        let mut counter = self.count.clone();
        let reached = tokio::time::timeout(deadline, counter.wait_for(|n| *n >= count)).await;
        // An error means the tap's task ended: then only what it got counts.
        matches!(reached, Ok(Ok(_))) || self.count() >= count
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The list stays consistent whatever panicked while holding it.
fn lock(received: &Mutex<Vec<TapMessage>>) -> std::sync::MutexGuard<'_, Vec<TapMessage>> {
    received.lock().unwrap_or_else(PoisonError::into_inner)
}
