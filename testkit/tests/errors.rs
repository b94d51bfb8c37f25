//! Bad input gets a proper gRPC status, never a panic, and the broker keeps
//! serving afterwards.

mod support;

use danube_client::SubType;
use danube_client::errors::DanubeError;
use danube_core::proto::consumer_service_client::ConsumerServiceClient;
use danube_core::proto::producer_service_client::ProducerServiceClient;
use danube_core::proto::{AckRequest, MsgId, ProducerRequest, ReceiveRequest, StreamMessage};
use danube_testkit::{BrokerConfig, TestBroker};
use support::{client, consumer, next, producer, text};
use tonic::Code;

fn code(error: &DanubeError) -> Option<Code> {
    error.extract_status().map(|status| status.code())
}

#[tokio::test]
async fn an_invalid_topic_name_is_an_invalid_argument() {
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    for bad in ["no-slashes", "/only-namespace", "/a/b/c", "/ns/bad topic"] {
        let mut producer = client
            .new_producer()
            .with_topic(bad)
            .with_name("p")
            .build()
            .unwrap();
        let error = producer.create().await.expect_err(bad);
        assert_eq!(code(&error), Some(Code::InvalidArgument), "{bad}: {error}");
    }
    assert!(broker.topic_names().is_empty());
}

/// (A missing topic: see the conformance test.) Unknown consumer ids and
/// subscriptions are NotFound; a missing msg_id is invalid.
#[tokio::test]
async fn unknown_consumers_and_subscriptions_are_not_found() {
    let broker = TestBroker::start().await.unwrap();
    let mut raw = ConsumerServiceClient::connect(broker.url()).await.unwrap();
    let status = raw
        .receive_messages(ReceiveRequest {
            request_id: 0,
            consumer_id: 4242,
        })
        .await
        .expect_err("no such consumer");
    assert_eq!(status.code(), Code::NotFound);
    let status = raw.ack(AckRequest::default()).await.expect_err("no msg_id");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_unknown_producer_id_is_not_found() {
    let broker = TestBroker::start().await.unwrap();
    let mut raw = ProducerServiceClient::connect(broker.url()).await.unwrap();
    let status = raw
        .send_message(StreamMessage {
            msg_id: Some(MsgId {
                producer_id: 777,
                topic_name: "/default/ghost".into(),
                ..Default::default()
            }),
            payload: b"boo".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect_err("no such producer");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("777"), "{}", status.message());
    let status = raw
        .send_message(StreamMessage::default())
        .await
        .expect_err("no msg_id");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_oversized_payload_is_refused_clearly_and_the_broker_carries_on() {
    let topic = "/default/big";
    let broker = TestBroker::start_with(BrokerConfig {
        max_payload_bytes: 1024,
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "big-producer", true).await;
    let (_consumer, mut messages) = consumer(&client, topic, "c", "s", SubType::Exclusive).await;

    let error = sender
        .send(vec![0; 1025], None)
        .await
        .expect_err("over the limit");
    assert_eq!(code(&error), Some(Code::InvalidArgument), "{error}");
    let message = error.extract_status().unwrap().message().to_owned();
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );

    sender
        .send(vec![b'x'; 1024], None)
        .await
        .expect("at the limit is fine");
    let delivered = next(&mut messages, "the message at the limit").await;
    assert_eq!(delivered.payload.len(), 1024);
    assert_eq!(broker.messages(topic).len(), 1);
}

#[tokio::test]
async fn the_default_limit_is_five_mebibytes() {
    let topic = "/default/huge";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "huge-producer", false).await;
    let error = sender
        .send(vec![0; 5 * 1024 * 1024 + 1], None)
        .await
        .expect_err("over the default limit");
    assert_eq!(code(&error), Some(Code::InvalidArgument), "{error}");
    sender
        .send(b"small".to_vec(), None)
        .await
        .expect("small messages still pass");
    assert_eq!(broker.messages(topic).len(), 1);
}

#[tokio::test]
async fn conflicting_requests_get_precise_codes() {
    let topic = "/default/conflicts";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "reliable-one", true).await;

    let mut raw = ProducerServiceClient::connect(broker.url()).await.unwrap();
    let status = raw
        .create_producer(ProducerRequest {
            producer_name: "non-reliable-one".into(),
            topic_name: topic.into(),
            dispatch_strategy: 0,
            ..Default::default()
        })
        .await
        .expect_err("strategy mismatch");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let (_first, mut messages) =
        consumer(&client, topic, "owner", "solo", SubType::Exclusive).await;
    let mut intruder = client
        .new_consumer()
        .with_topic(topic)
        .with_consumer_name("intruder")
        .with_subscription("solo")
        .with_subscription_type(SubType::Exclusive)
        .build()
        .unwrap();
    let error = intruder.subscribe().await.expect_err("exclusive is taken");
    assert_eq!(code(&error), Some(Code::PermissionDenied), "{error}");

    sender.send(b"still fine".to_vec(), None).await.unwrap();
    assert_eq!(
        text(&next(&mut messages, "a message after the refusals").await),
        "still fine"
    );
}
