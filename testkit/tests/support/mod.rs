//! Helpers shared by the integration tests: clients against a test broker,
//! and receiving with deadlines so that no test can hang.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use danube_client::{Consumer, DanubeClient, Producer, SubType};
use danube_core::message::StreamMessage;
use danube_testkit::TestBroker;
use tokio::sync::mpsc::Receiver;

/// Generous bound for anything that should happen "soon" on a busy machine.
pub const SOON: Duration = Duration::from_secs(10);

pub async fn client(broker: &TestBroker) -> DanubeClient {
    DanubeClient::builder()
        .service_url(broker.url())
        .build()
        .await
        .expect("client builds")
}

pub async fn producer(client: &DanubeClient, topic: &str, name: &str, reliable: bool) -> Producer {
    let mut builder = client.new_producer().with_topic(topic).with_name(name);
    if reliable {
        builder = builder.with_reliable_dispatch();
    }
    let mut producer = builder.build().expect("producer builds");
    producer.create().await.expect("producer is created");
    producer
}

pub async fn consumer(
    client: &DanubeClient,
    topic: &str,
    name: &str,
    subscription: &str,
    kind: SubType,
) -> (Consumer, Receiver<StreamMessage>) {
    let mut consumer = client
        .new_consumer()
        .with_topic(topic)
        .with_consumer_name(name)
        .with_subscription(subscription)
        .with_subscription_type(kind)
        .build()
        .expect("consumer builds");
    consumer.subscribe().await.expect("consumer subscribes");
    let messages = consumer.receive().await.expect("consumer receives");
    (consumer, messages)
}

/// The next message, or a panic naming what was awaited.
pub async fn next(messages: &mut Receiver<StreamMessage>, what: &str) -> StreamMessage {
    match tokio::time::timeout(SOON, messages.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("stream closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Asserts that nothing arrives for a short while (used only to check that
/// something does *not* happen, never to wait for something that should).
pub async fn assert_quiet(messages: &mut Receiver<StreamMessage>, window: Duration) {
    if let Ok(Some(message)) = tokio::time::timeout(window, messages.recv()).await {
        panic!(
            "unexpected message at offset {}",
            message.msg_id.topic_offset
        );
    }
}

pub fn text(message: &StreamMessage) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}
