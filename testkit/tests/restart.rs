//! Connection faults: a broker restart mid-stream, cut connections, and
//! pauses. The client must recover; the broker must keep its state.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use danube_client::SubType;
use danube_core::proto::consumer_service_client::ConsumerServiceClient;
use danube_core::proto::{ConsumerRequest, ReceiveRequest};
use danube_testkit::TestBroker;
use futures::StreamExt;
use support::{SOON, client, consumer, next, producer, text};

#[tokio::test]
async fn a_restart_mid_stream_is_survived_by_producer_and_consumer() {
    const COUNT: usize = 200;
    let topic = "/default/restarted";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "restart-producer", true).await;
    let (mut receiver, mut messages) = consumer(
        &client,
        topic,
        "restart-consumer",
        "durable",
        SubType::Exclusive,
    )
    .await;

    let sending = tokio::spawn(async move {
        for i in 0..COUNT {
            let payload = format!("event-{i:03}").into_bytes();
            // The client retries `Unavailable` itself, but a send cut off
            // mid-flight by the crash fails with `Unknown`, as against a real
            // broker: the application retries, accepting a possible duplicate.
            let mut attempts = 0;
            while let Err(error) = sender.send(payload.clone(), None).await {
                attempts += 1;
                anyhow::ensure!(attempts < 20, "send {i} keeps failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        anyhow::Ok(())
    });

    let mut seen = BTreeSet::new();
    let mut restarted = false;
    while seen.len() < COUNT {
        let message = next(&mut messages, "the stream to resume").await;
        let payload = text(&message);
        // At-least-once: a message unacked at the crash may come twice, but
        // first sightings stay in order.
        if seen.insert(payload.clone()) {
            assert_eq!(payload, format!("event-{:03}", seen.len() - 1));
        }
        // An ack racing the crash fails; the message is then redelivered.
        let _ = receiver.ack(&message).await;
        if seen.len() == 50 && !restarted {
            restarted = true;
            broker.stop().await;
            let refused =
                tokio::net::TcpStream::connect(broker.url().trim_start_matches("http://")).await;
            assert!(
                refused.is_err(),
                "the port still accepts connections while stopped"
            );
            broker.restart().await.unwrap();
        }
    }
    sending.await.unwrap().unwrap();

    let stored: BTreeSet<Vec<u8>> = broker
        .messages(topic)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        stored.len(),
        COUNT,
        "every event is stored once the dust settles"
    );
    let settled = broker
        .wait_for(SOON, |b| {
            b.subscription(topic, "durable")
                .is_some_and(|s| s.unacked == 0)
        })
        .await;
    assert!(
        settled,
        "stats: {:?}",
        broker.subscription(topic, "durable")
    );
}

#[tokio::test]
async fn dropped_connections_end_streams_and_clients_reconnect() {
    let topic = "/default/cut";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "cut-producer", true).await;
    let (mut receiver, mut messages) =
        consumer(&client, topic, "cut-consumer", "cut", SubType::Exclusive).await;

    // A raw stream, to see the cut itself rather than the client's recovery.
    let mut raw = ConsumerServiceClient::connect(broker.url()).await.unwrap();
    let raw_id = raw
        .subscribe(ConsumerRequest {
            topic_name: topic.into(),
            consumer_name: "raw".into(),
            subscription: "raw".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .consumer_id;
    let mut raw_stream = raw
        .receive_messages(ReceiveRequest {
            request_id: 1,
            consumer_id: raw_id,
        })
        .await
        .unwrap()
        .into_inner();

    for i in 0..5 {
        sender
            .send(format!("before-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let message = next(&mut messages, "messages before the cut").await;
        assert_eq!(text(&message), format!("before-{i}"));
        receiver.ack(&message).await.unwrap();
    }
    for _ in 0..5 {
        assert!(matches!(raw_stream.next().await, Some(Ok(_))));
    }

    broker.drop_connections();
    let ended = tokio::time::timeout(SOON, async {
        // Messages still in flight may arrive first; then the stream must end.
        while let Some(Ok(_)) = raw_stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the raw stream outlived drop_connections");

    for i in 0..5 {
        sender
            .send(format!("after-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let message = next(&mut messages, "messages after the cut").await;
        assert_eq!(text(&message), format!("after-{i}"));
        receiver.ack(&message).await.unwrap();
    }
}

#[tokio::test]
async fn a_paused_broker_holds_rpcs_until_unpaused() {
    let topic = "/default/paused";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "paused-producer", true).await;

    broker.set_paused(true);
    let sending = tokio::spawn(async move { sender.send(b"held".to_vec(), None).await });
    // Checking that something does *not* happen needs a window of time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sending.is_finished(), "a send completed while paused");
    assert!(broker.messages(topic).is_empty());

    broker.set_paused(false);
    let sent = tokio::time::timeout(SOON, sending)
        .await
        .expect("the send resumes");
    sent.unwrap().expect("the held send succeeds");
    assert_eq!(broker.messages(topic).len(), 1);
}
