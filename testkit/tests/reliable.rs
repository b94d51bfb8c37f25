//! Reliable dispatch through the real danube-client: ordering, the unacked
//! window, shared subscriptions and redelivery.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use danube_client::SubType;
use danube_testkit::{BrokerConfig, TestBroker};
use support::{SOON, assert_quiet, client, consumer, next, producer, text};

#[tokio::test]
async fn ten_thousand_messages_arrive_in_order_and_are_acked() {
    const COUNT: u64 = 10_000;
    let topic = "/default/bulk";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "bulk-producer", true).await;
    let (mut consumer, mut messages) =
        consumer(&client, topic, "bulk-consumer", "bulk", SubType::Exclusive).await;

    let sending = tokio::spawn(async move {
        for i in 0..COUNT {
            sender
                .send(format!("message-{i}").into_bytes(), None)
                .await?;
        }
        anyhow::Ok(())
    });
    for i in 0..COUNT {
        let message = next(&mut messages, &format!("message {i}")).await;
        assert_eq!(message.msg_id.topic_offset, i);
        assert_eq!(text(&message), format!("message-{i}"));
        consumer.ack(&message).await.unwrap();
    }
    sending.await.unwrap().unwrap();

    let settled = broker
        .wait_for(SOON, |b| {
            b.subscription(topic, "bulk")
                .is_some_and(|s| s.acked == COUNT && s.unacked == 0)
        })
        .await;
    assert!(settled, "stats: {:?}", broker.subscription(topic, "bulk"));
    let stored = broker.messages(topic);
    assert_eq!(stored.len() as u64, COUNT);
    assert!(stored.iter().enumerate().all(|(i, m)| m.offset == i as u64));
    assert_eq!(stored[42].producer_name, "bulk-producer");
    assert_eq!(stored[42].payload, b"message-42");
}

#[tokio::test]
async fn a_shared_subscription_spreads_messages_each_delivered_once() {
    let topic = "/default/shared";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "shared-producer", true).await;
    let (mut first, mut first_rx) =
        consumer(&client, topic, "worker-1", "workers", SubType::Shared).await;
    let (mut second, mut second_rx) =
        consumer(&client, topic, "worker-2", "workers", SubType::Shared).await;
    assert!(
        broker
            .wait_for(SOON, |b| b
                .subscription(topic, "workers")
                .is_some_and(|s| s.consumers == 2))
            .await
    );

    for i in 0..100 {
        sender
            .send(format!("job-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let (mut seen, mut per_consumer) = (BTreeSet::new(), [0, 0]);
    while seen.len() < 100 {
        let (message, index) = tokio::time::timeout(SOON, async {
            tokio::select! {
                Some(m) = first_rx.recv() => (m, 0),
                Some(m) = second_rx.recv() => (m, 1),
            }
        })
        .await
        .expect("both consumers keep receiving");
        assert!(
            seen.insert(message.msg_id.topic_offset),
            "offset {} delivered twice",
            message.msg_id.topic_offset
        );
        per_consumer[index] += 1;
        let owner = if index == 0 { &mut first } else { &mut second };
        owner.ack(&message).await.unwrap();
    }
    assert_eq!(seen, (0..100).collect());
    assert!(
        per_consumer.iter().all(|&n| n >= 30),
        "uneven spread: {per_consumer:?}"
    );
    assert_quiet(&mut first_rx, Duration::from_millis(100)).await;
    assert_quiet(&mut second_rx, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn unacked_messages_go_to_the_next_consumer_after_a_close() {
    let topic = "/default/handover";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "handover-producer", true).await;
    let (mut leaver, mut leaver_rx) =
        consumer(&client, topic, "leaver", "jobs", SubType::Shared).await;

    for i in 0..5 {
        sender
            .send(format!("job-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let message = next(&mut leaver_rx, "the first consumer's messages").await;
        assert_eq!(message.msg_id.topic_offset, i);
        if i < 2 {
            leaver.ack(&message).await.unwrap();
        }
    }
    leaver.close().await;
    let released = broker
        .wait_for(SOON, |b| {
            b.subscription(topic, "jobs")
                .is_some_and(|s| s.consumers == 0 && s.unacked == 0 && s.redelivery_pending == 3)
        })
        .await;
    assert!(released, "stats: {:?}", broker.subscription(topic, "jobs"));

    // Produced while nobody listens: the subscription's cursor keeps them.
    for i in 5..7 {
        sender
            .send(format!("job-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let (mut heir, mut heir_rx) = consumer(&client, topic, "heir", "jobs", SubType::Shared).await;
    for expected in 2..7 {
        let message = next(&mut heir_rx, "the handed-over messages").await;
        assert_eq!(message.msg_id.topic_offset, expected);
        assert_eq!(text(&message), format!("job-{expected}"));
        heir.ack(&message).await.unwrap();
    }
    let done = broker
        .wait_for(SOON, |b| {
            b.subscription(topic, "jobs")
                .is_some_and(|s| s.acked == 7 && s.unacked == 0)
        })
        .await;
    assert!(done, "stats: {:?}", broker.subscription(topic, "jobs"));
}

#[tokio::test]
async fn a_dropped_consumer_loses_its_messages_to_the_next_after_the_ack_timeout() {
    let topic = "/default/dropped";
    let broker = TestBroker::start_with(BrokerConfig {
        ack_timeout: Duration::from_millis(300),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "dropped-producer", true).await;
    let (dropped, mut dropped_rx) =
        consumer(&client, topic, "dropped", "jobs", SubType::Shared).await;
    for i in 0..3 {
        sender
            .send(format!("job-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        next(&mut dropped_rx, "the doomed consumer's messages").await;
    }
    // No close(): the client's receive task lingers until the broker pushes
    // something at it, which only the ack timeout will do.
    drop(dropped);
    drop(dropped_rx);

    let (mut heir, mut heir_rx) = consumer(&client, topic, "heir", "jobs", SubType::Shared).await;
    let mut offsets = BTreeSet::new();
    while offsets.len() < 3 {
        let message = next(&mut heir_rx, "the dropped consumer's messages").await;
        offsets.insert(message.msg_id.topic_offset);
        heir.ack(&message).await.unwrap();
    }
    assert_eq!(offsets, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn the_unacked_window_limits_deliveries_and_the_ack_timeout_redelivers() {
    let topic = "/default/window";
    let broker = TestBroker::start_with(BrokerConfig {
        max_unacked_messages: 3,
        ack_timeout: Duration::from_millis(400),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "window-producer", true).await;
    let (mut receiver, mut messages) =
        consumer(&client, topic, "slow", "window", SubType::Exclusive).await;
    let started = Instant::now();
    for i in 0..5 {
        sender
            .send(format!("m{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let first: Vec<u64> = {
        let mut offsets = Vec::new();
        for _ in 0..3 {
            offsets.push(next(&mut messages, "the window").await.msg_id.topic_offset);
        }
        offsets
    };
    assert_eq!(first, [0, 1, 2]);
    assert_eq!(
        broker.subscription(topic, "window").map(|s| s.unacked),
        Some(3)
    );

    // Nothing is acked: after the timeout the oldest comes again first, and
    // each of the five is delivered once more at most.
    let again = next(&mut messages, "a redelivery").await;
    assert_eq!(again.msg_id.topic_offset, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "redelivered before the ack timeout"
    );
    receiver.ack(&again).await.unwrap();
    let mut acked = BTreeSet::from([0]);
    while acked.len() < 5 {
        let message = next(&mut messages, "the rest").await;
        assert!(
            acked.insert(message.msg_id.topic_offset),
            "offset {} came twice",
            message.msg_id.topic_offset
        );
        receiver.ack(&message).await.unwrap();
    }
    let stats = broker.subscription(topic, "window").unwrap();
    assert_eq!((stats.acked, stats.delivered), (5, 8));
}

#[tokio::test]
async fn a_nack_redelivers_after_its_delay() {
    let topic = "/default/nack";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "nack-producer", true).await;
    let (mut receiver, mut messages) =
        consumer(&client, topic, "picky", "nack", SubType::Exclusive).await;
    sender.send(b"retry me".to_vec(), None).await.unwrap();

    let message = next(&mut messages, "the first delivery").await;
    let nacked_at = Instant::now();
    receiver
        .nack(&message, Some(200), Some("not yet".into()))
        .await
        .unwrap();
    let again = next(&mut messages, "the redelivery").await;
    assert!(nacked_at.elapsed() >= Duration::from_millis(200));
    assert_eq!(again.msg_id.topic_offset, 0);
    assert_eq!(text(&again), "retry me");
    receiver.ack(&again).await.unwrap();
    assert!(
        broker
            .wait_for(SOON, |b| b
                .subscription(topic, "nack")
                .is_some_and(|s| s.acked == 1 && s.unacked == 0))
            .await
    );
}

#[tokio::test]
async fn a_new_subscription_starts_at_the_latest_message() {
    let topic = "/default/latest";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "latest-producer", true).await;
    for i in 0..3 {
        sender
            .send(format!("old-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let (_consumer, mut messages) =
        consumer(&client, topic, "late", "late", SubType::Exclusive).await;
    sender.send(b"new".to_vec(), None).await.unwrap();
    let message = next(&mut messages, "the first message after subscribing").await;
    assert_eq!(
        (message.msg_id.topic_offset, text(&message).as_str()),
        (3, "new")
    );
}

#[tokio::test]
async fn non_reliable_topics_deliver_to_connected_consumers() {
    let topic = "/default/live";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "live-producer", false).await;
    let (_consumer, mut messages) =
        consumer(&client, topic, "viewer", "live", SubType::Exclusive).await;
    assert!(
        broker
            .wait_for(SOON, |b| b
                .subscription(topic, "live")
                .is_some_and(|s| s.consumers == 1))
            .await
    );
    for i in 0..20 {
        sender
            .send(format!("tick-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            text(&next(&mut messages, "live messages").await),
            format!("tick-{i}")
        );
    }
    assert_eq!(
        broker.subscription(topic, "live").map(|s| s.unacked),
        Some(0)
    );
}

#[tokio::test]
async fn key_shared_keeps_each_key_on_one_consumer() {
    let topic = "/default/keyshared";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "keyed-producer", true).await;
    let (mut a, mut a_rx) = consumer(&client, topic, "a", "by-key", SubType::KeyShared).await;
    let (mut b, mut b_rx) = consumer(&client, topic, "b", "by-key", SubType::KeyShared).await;
    assert!(
        broker
            .wait_for(SOON, |br| br
                .subscription(topic, "by-key")
                .is_some_and(|s| s.consumers == 2))
            .await
    );
    let keys = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
    for round in 0..10 {
        for key in keys {
            sender
                .send_with_key(format!("{key}:{round}").into_bytes(), None, key)
                .await
                .unwrap();
        }
    }
    let mut owner: std::collections::HashMap<String, (usize, u32)> = Default::default();
    for _ in 0..60 {
        let (message, index) = tokio::time::timeout(SOON, async {
            tokio::select! {
                Some(m) = a_rx.recv() => (m, 0),
                Some(m) = b_rx.recv() => (m, 1),
            }
        })
        .await
        .expect("key-shared consumers keep receiving");
        let payload = text(&message);
        let (key, round) = payload.split_once(':').unwrap();
        let round: u32 = round.parse().unwrap();
        assert_eq!(message.routing_key.as_deref(), Some(key));
        let entry = owner.entry(key.to_owned()).or_insert((index, 0));
        assert_eq!(entry.0, index, "key {key} moved between consumers");
        assert_eq!(entry.1, round, "key {key} out of order");
        entry.1 += 1;
        let acker = if index == 0 { &mut a } else { &mut b };
        acker.ack(&message).await.unwrap();
    }
    let used: BTreeSet<usize> = owner.values().map(|(index, _)| *index).collect();
    assert_eq!(used.len(), 2, "all keys went to one consumer: {owner:?}");
}

#[tokio::test]
async fn failover_sends_everything_to_one_consumer_until_it_leaves() {
    let topic = "/default/failover";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let sender = producer(&client, topic, "failover-producer", true).await;
    let (mut active, mut active_rx) =
        consumer(&client, topic, "active", "ha", SubType::FailOver).await;
    let (mut standby, mut standby_rx) =
        consumer(&client, topic, "standby", "ha", SubType::FailOver).await;
    assert!(
        broker
            .wait_for(SOON, |b| b
                .subscription(topic, "ha")
                .is_some_and(|s| s.consumers == 2))
            .await
    );
    for i in 0..5 {
        sender
            .send(format!("a-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let message = next(&mut active_rx, "the active consumer's messages").await;
        assert_eq!(message.msg_id.topic_offset, i);
        active.ack(&message).await.unwrap();
    }
    assert_quiet(&mut standby_rx, Duration::from_millis(100)).await;

    active.close().await;
    for i in 5..10 {
        sender
            .send(format!("b-{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    for i in 5..10 {
        let message = next(&mut standby_rx, "the standby taking over").await;
        assert_eq!(message.msg_id.topic_offset, i);
        standby.ack(&message).await.unwrap();
    }
}
