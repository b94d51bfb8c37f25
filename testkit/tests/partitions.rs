//! Partitioned topics: the client creates `<topic>-part-<i>` producers and
//! routes keys by hash; the broker lists the partitions for consumers.

mod support;

use std::collections::HashMap;

use danube_client::SubType;
use danube_testkit::TestBroker;
use support::{client, consumer, next, text};

#[tokio::test]
async fn keyed_messages_stay_on_one_partition_in_order() {
    let topic = "/default/keyed";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let mut sender = client
        .new_producer()
        .with_topic(topic)
        .with_name("keyed-producer")
        .with_partitions(3)
        .with_reliable_dispatch()
        .build()
        .unwrap();
    sender.create().await.unwrap();
    let partitions: Vec<String> = (0..3).map(|i| format!("{topic}-part-{i}")).collect();
    assert_eq!(broker.topic_names(), partitions);

    let (mut receiver, mut messages) = consumer(
        &client,
        topic,
        "keyed-consumer",
        "keyed",
        SubType::Exclusive,
    )
    .await;
    let keys: Vec<String> = (0..8).map(|k| format!("customer-{k}")).collect();
    for round in 0..25 {
        for key in &keys {
            let payload = format!("{key}:{round}").into_bytes();
            sender.send_with_key(payload, None, key).await.unwrap();
        }
    }

    // key -> (partition it arrived from, next round expected)
    let mut progress: HashMap<String, (String, u32)> = HashMap::new();
    for _ in 0..keys.len() * 25 {
        let message = next(&mut messages, "keyed messages").await;
        let payload = text(&message);
        let (key, round) = payload.split_once(':').unwrap();
        let partition = message.msg_id.topic_name.clone();
        let entry = progress
            .entry(key.to_owned())
            .or_insert((partition.clone(), 0));
        assert_eq!(entry.0, partition, "key {key} arrived from two partitions");
        assert_eq!(
            round.parse::<u32>().unwrap(),
            entry.1,
            "key {key} out of order"
        );
        entry.1 += 1;
        receiver.ack(&message).await.unwrap();
    }

    // The broker's view agrees: each key lives in exactly one partition.
    let mut homes: HashMap<String, Vec<&str>> = HashMap::new();
    for partition in &partitions {
        let stored = broker.messages(partition);
        assert!(stored.iter().enumerate().all(|(i, m)| m.offset == i as u64));
        for message in stored {
            let key = message.routing_key.expect("keyed messages keep their key");
            let home = homes.entry(key).or_default();
            if !home.contains(&partition.as_str()) {
                home.push(partition);
            }
        }
    }
    assert_eq!(homes.len(), keys.len());
    assert!(homes.values().all(|home| home.len() == 1), "{homes:?}");
    let used: std::collections::BTreeSet<_> = homes.values().map(|home| home[0]).collect();
    assert!(used.len() > 1, "all keys hashed to one partition");
}
