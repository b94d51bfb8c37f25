//! A recorder: a reliable consumer of its own on a topic that keeps each
//! message whole, schema id and version included (which
//! `danube_testkit::Tap` does not keep), for tests that check what a host
//! attached to what it published, on either broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use danube_client::{DanubeClient, SubType};
use danube_core::message::StreamMessage;
use tokio::task::JoinHandle;

/// Records every message of a topic (every partition of a partitioned one)
/// on subscription `recorder`, acknowledging each. A new subscription starts
/// at the latest message: start it before the messages to record are
/// published. Dropping it stops it.
pub struct Recorder {
    received: Arc<Mutex<Vec<StreamMessage>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Subscribes to `topic`, which must exist.
    pub async fn start(broker_url: &str, topic: &str) -> Recorder {
        let client = DanubeClient::builder()
            .service_url(broker_url)
            .build()
            .await
            .unwrap();
        let mut consumer = client
            .new_consumer()
            .with_topic(topic)
            .with_consumer_name("recorder")
            .with_subscription("recorder")
            .with_subscription_type(SubType::Exclusive)
            .build()
            .unwrap();
        consumer
            .subscribe()
            .await
            .unwrap_or_else(|e| panic!("recorder: subscribing to {topic}: {e}"));
        let mut messages = consumer.receive().await.unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                while let Some(message) = messages.recv().await {
                    lock(&received).push(message.clone());
                    // A failed ack shows as a redelivery, which `messages`
                    // leaves out.
                    let _ = consumer.ack(&message).await;
                }
            }
        });
        Recorder { received, task }
    }

    /// Each stored message once (by topic and offset), in order of arrival.
    pub fn messages(&self) -> Vec<StreamMessage> {
        let mut seen = HashSet::new();
        lock(&self.received)
            .iter()
            .filter(|m| seen.insert((m.msg_id.topic_name.clone(), m.msg_id.topic_offset)))
            .cloned()
            .collect()
    }

    /// How many distinct messages were received so far.
    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Waits until at least `count` distinct messages were received.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> bool {
        super::wait_until_async(deadline, || self.count() >= count).await
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(received: &Mutex<Vec<StreamMessage>>) -> std::sync::MutexGuard<'_, Vec<StreamMessage>> {
    received.lock().unwrap_or_else(PoisonError::into_inner)
}
