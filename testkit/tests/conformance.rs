//! The test broker against the real one: each scenario goes through the real
//! `danube-client` (and the admin API), runs once per broker, and asserts the
//! same outcome on both. A difference the test broker keeps on purpose is in
//! the README, not here.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use danube_client::{DanubeClient, SchemaType, SubType};
use danube_core::admin_proto::broker_admin_client::BrokerAdminClient;
use danube_core::admin_proto::topic_admin_client::TopicAdminClient;
use danube_core::admin_proto::{DescribeTopicRequest, Empty, TopicRequest};
use danube_core::proto::ConsumerRequest;
use danube_core::proto::consumer_service_client::ConsumerServiceClient;
use danube_testkit::{Broker, Tap};
use support::{SOON, assert_quiet, consumer, next, producer, text};
use tonic::Code;

async fn client(broker: &Broker) -> DanubeClient {
    DanubeClient::builder()
        .service_url(broker.url())
        .build()
        .await
        .expect("client builds")
}

/// The window of delivered but unacked messages per reliable subscription.
const MAX_UNACKED: usize = 10;

danube_testkit::on_both_brokers! {
    /// The client asks for the topic's partitions first and gives up on an
    /// empty answer, before any Subscribe; the Subscribe RPC itself answers
    /// NotFound (the host reads both as "not there yet").
    async fn subscribing_to_a_missing_topic_is_refused(broker: Broker) {
        let client = client(&broker).await;
        let mut consumer = client
            .new_consumer()
            .with_topic("/default/missing")
            .with_consumer_name("c")
            .with_subscription("s")
            .build()
            .unwrap();
        let error = consumer.subscribe().await.expect_err("no such topic");
        assert!(
            error.to_string().contains("No topics found for '/default/missing'"),
            "{error}"
        );
        let mut raw = ConsumerServiceClient::connect(broker.url()).await.unwrap();
        let status = raw
            .subscribe(ConsumerRequest {
                topic_name: "/default/missing".into(),
                consumer_name: "c".into(),
                subscription: "s".into(),
                ..Default::default()
            })
            .await
            .expect_err("no such topic");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "Unable to find the topic: /default/missing");
    }

    async fn a_new_subscription_starts_at_the_latest_message(broker: Broker) {
        let topic = "/default/latest";
        let client = client(&broker).await;
        let sender = producer(&client, topic, "p", true).await;
        for i in 0..3 {
            sender.send(format!("old-{i}").into_bytes(), None).await.unwrap();
        }
        let (_consumer, mut messages) =
            consumer(&client, topic, "c", "late", SubType::Exclusive).await;
        sender.send(b"new".to_vec(), None).await.unwrap();
        let first = next(&mut messages, "the message sent after subscribing").await;
        assert_eq!(text(&first), "new");
        assert_eq!(first.msg_id.topic_offset, 3);
    }

    /// Partitions are topics `<topic>-part-<i>`; a consumer on the base name
    /// (here the tap) reads all of them, and a key always goes to one.
    async fn partitions_are_found_by_base_name_and_keys_stay_on_one(broker: Broker) {
        let topic = "/default/parts";
        broker.create_topic(topic, 3, true).await.unwrap();
        let partitions: BTreeSet<String> = (0..3).map(|i| format!("{topic}-part-{i}")).collect();
        let tap = Tap::start(&broker.url(), topic).await.unwrap();
        let client = client(&broker).await;
        let mut sender = client
            .new_producer()
            .with_topic(topic)
            .with_name("keyed")
            .with_partitions(3)
            .with_reliable_dispatch()
            .build()
            .unwrap();
        sender.create().await.unwrap();
        let keys: Vec<String> = (0..8).map(|k| format!("key-{k}")).collect();
        for round in 0..5 {
            for key in &keys {
                let payload = format!("{key}:{round}").into_bytes();
                sender.send_with_key(payload, None, key).await.unwrap();
            }
        }
        let count = keys.len() * 5;
        assert!(tap.wait_for(count, SOON).await, "{} of {count} arrived", tap.count());

        let mut homes: HashMap<String, BTreeSet<String>> = HashMap::new();
        for message in tap.messages() {
            assert!(partitions.contains(&message.topic), "{}", message.topic);
            let key = message.routing_key.expect("keyed messages keep their key");
            homes.entry(key).or_default().insert(message.topic);
        }
        assert_eq!(homes.len(), keys.len());
        assert!(homes.values().all(|home| home.len() == 1), "a key on two partitions: {homes:?}");
        let used: BTreeSet<&String> = homes.values().flatten().collect();
        assert!(used.len() > 1, "all keys on one partition: {homes:?}");
        for partition in &partitions {
            assert_eq!(broker.subscriptions(partition).await.unwrap(), [Tap::SUBSCRIPTION]);
        }
    }

    /// `Unavailable`, which the client retries a few times before giving up;
    /// the wording is the broker's own (typo included), for callers to match.
    async fn a_producer_on_a_missing_namespace_is_unavailable(broker: Broker) {
        let client = client(&broker).await;
        let mut sender = client
            .new_producer()
            .with_topic("/iot/x")
            .with_name("p")
            .build()
            .unwrap();
        let error = sender.create().await.expect_err("no namespace iot");
        let status = error.extract_status().unwrap_or_else(|| panic!("not a status: {error}"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "Unable to find the namespace iot, the topic can be created only for an exisiting namespace"
        );
    }

    async fn a_created_namespace_takes_topics(broker: Broker) {
        let namespaces = || async {
            let mut admin = BrokerAdminClient::connect(broker.admin_url()).await.unwrap();
            admin.list_namespaces(Empty {}).await.unwrap().into_inner().namespaces
        };
        assert_eq!(namespaces().await, ["default", "system"]);
        broker.create_namespace("iot").await.unwrap();
        let again = broker.create_namespace("iot").await.expect_err("exists");
        assert_eq!(again.code(), Code::NotFound);
        assert_eq!(
            again.message(),
            "Unable to create the namespace iot due to Namespace iot already exists."
        );
        assert_eq!(namespaces().await, ["default", "iot", "system"]);

        let client = client(&broker).await;
        let sender = producer(&client, "/iot/x", "p", true).await;
        let (_consumer, mut messages) =
            consumer(&client, "/iot/x", "c", "s", SubType::Exclusive).await;
        sender.send(b"in iot".to_vec(), None).await.unwrap();
        assert_eq!(text(&next(&mut messages, "a message on /iot/x").await), "in iot");
    }

    /// The admin API refuses a topic that exists, or one that would sit
    /// beside partitions of the same base name (or the reverse), wrapping
    /// the reason in `NotFound`; a producer gets the reason itself.
    async fn topics_are_created_once_and_never_beside_partitions(broker: Broker) {
        broker.create_topic("/default/plain", 0, true).await.unwrap();
        broker.create_topic("/default/split", 2, true).await.unwrap();
        let refusals = [
            (
                broker.create_topic("/default/plain", 0, true).await,
                "Unable to create the topic /default/plain due to ",
                "Topic '/default/plain' already exists",
            ),
            (
                broker.create_topic("/default/plain", 2, true).await,
                "Unable to create the topic /default/plain-part-0 due to ",
                "a non-partitioned topic '/default/plain' already exists",
            ),
            (
                broker.create_topic("/default/split", 0, true).await,
                "Unable to create the topic /default/split due to ",
                "partitioned topics with this base name already exist (found 2 partitions)",
            ),
        ];
        for (refused, start, reason) in refusals {
            let status = refused.expect_err(reason);
            assert_eq!(status.code(), Code::NotFound, "{}", status.message());
            assert!(status.message().starts_with(start), "{}", status.message());
            assert!(status.message().contains(reason), "{}", status.message());
        }

        let client = client(&broker).await;
        let mut beside = client
            .new_producer()
            .with_topic("/default/split")
            .with_name("p")
            .with_reliable_dispatch()
            .build()
            .unwrap();
        let error = beside.create().await.expect_err("beside the partitions");
        let status = error.extract_status().unwrap_or_else(|| panic!("not a status: {error}"));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            status.message().starts_with("Cannot create topic '/default/split': partitioned topics"),
            "{}",
            status.message()
        );
    }

    async fn a_subscription_that_never_acks_gets_ten(broker: Broker) {
        let topic = "/default/window";
        let client = client(&broker).await;
        let sender = producer(&client, topic, "p", true).await;
        let (_consumer, mut messages) =
            consumer(&client, topic, "c", "slow", SubType::Exclusive).await;
        for i in 0..3 * MAX_UNACKED {
            sender.send(format!("{i}").into_bytes(), None).await.unwrap();
        }
        for offset in 0..MAX_UNACKED as u64 {
            let message = next(&mut messages, "a message within the window").await;
            assert_eq!(message.msg_id.topic_offset, offset);
        }
        assert_quiet(&mut messages, Duration::from_secs(1)).await;
    }

    /// A consumer that comes back under the same name gets what it had not
    /// acknowledged, before anything new.
    async fn unacked_messages_come_again_after_a_reconnect(broker: Broker) {
        let topic = "/default/again";
        let client = client(&broker).await;
        let sender = producer(&client, topic, "p", true).await;
        let (mut first, mut messages) =
            consumer(&client, topic, "c", "s", SubType::Exclusive).await;
        for i in 0..15 {
            sender.send(format!("{i}").into_bytes(), None).await.unwrap();
        }
        let mut unacked = BTreeSet::new();
        for _ in 0..MAX_UNACKED {
            unacked.insert(next(&mut messages, "a first delivery").await.msg_id.topic_offset);
        }
        first.close().await;

        let (mut second, mut messages) =
            consumer(&client, topic, "c", "s", SubType::Exclusive).await;
        let mut again = BTreeSet::new();
        for _ in 0..MAX_UNACKED {
            let message = next(&mut messages, "a redelivery").await;
            again.insert(message.msg_id.topic_offset);
            second.ack(&message).await.unwrap();
        }
        assert_eq!(again, unacked);
        for offset in MAX_UNACKED as u64..15 {
            let message = next(&mut messages, "the rest").await;
            assert_eq!(message.msg_id.topic_offset, offset);
            second.ack(&message).await.unwrap();
        }
    }

    async fn a_producer_with_the_other_dispatch_strategy_is_refused(broker: Broker) {
        let topic = "/default/strategy";
        let client = client(&broker).await;
        let _reliable = producer(&client, topic, "reliable", true).await;
        let mut other = client
            .new_producer()
            .with_topic(topic)
            .with_name("non-reliable")
            .build()
            .unwrap();
        let error = other.create().await.expect_err("strategy mismatch");
        let status = error.extract_status().unwrap_or_else(|| panic!("not a status: {error}"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "Producer requested dispatch strategy does not match topic strategy"
        );
    }

    async fn the_schema_registry_counts_versions_and_refuses_incompatible_ones(broker: Broker) {
        const V1: &str = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
        // Adds an optional field: backward compatible.
        const V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#;
        // Changes the type of `id`: not backward compatible.
        const V3: &str = r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}"#;
        let client = client(&broker).await;
        let schemas = client.schema();
        let register = |definition: &'static str| {
            schemas
                .register_schema("orders-value")
                .with_type(SchemaType::JsonSchema)
                .with_schema_data(definition.as_bytes().to_vec())
                .execute()
        };
        let latest = || async { schemas.get_latest_schema("orders-value").await.unwrap().version };

        let id = register(V1).await.unwrap();
        assert_eq!(latest().await, 1);
        assert_eq!(register(V1).await.unwrap(), id, "the same definition again");
        assert_eq!(latest().await, 1);
        assert_eq!(register(V2).await.unwrap(), id, "versions share the subject's id");
        assert_eq!(latest().await, 2);
        let error = register(V3).await.expect_err("incompatible");
        let status = error.extract_status().unwrap_or_else(|| panic!("not a status: {error}"));
        assert_eq!(status.code(), Code::Internal, "{}", status.message());
        assert!(
            status.message().starts_with(
                "Failed to register schema: Schema is not compatible with subject 'orders-value' (mode: Backward)"
            ),
            "{}",
            status.message()
        );
        assert_eq!(schemas.list_versions("orders-value").await.unwrap(), [1, 2]);

        // A definition comes back in the registry's own JSON form, the
        // schema as registered inside.
        let stored = schemas.get_latest_schema("orders-value").await.unwrap().schema_definition;
        let form: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(form["JsonSchema"]["raw_schema"], V2, "{form}");
    }

    async fn a_subscription_is_listed_and_described(broker: Broker) {
        let topic = "/default/described";
        broker.create_topic(topic, 0, true).await.unwrap();
        assert!(broker.subscriptions(topic).await.unwrap().is_empty());
        let client = client(&broker).await;
        let (_consumer, _messages) =
            consumer(&client, topic, "c", "sub-a", SubType::Shared).await;

        assert_eq!(broker.subscriptions(topic).await.unwrap(), ["sub-a"]);
        let mut admin = TopicAdminClient::connect(broker.admin_url()).await.unwrap();
        // The real broker may repeat a name; nothing else may be listed.
        let listed = admin
            .list_subscriptions(TopicRequest { name: topic.into() })
            .await
            .unwrap()
            .into_inner()
            .subscriptions;
        assert!(!listed.is_empty() && listed.iter().all(|s| s == "sub-a"), "{listed:?}");
        let described = admin
            .describe_topic(DescribeTopicRequest { name: topic.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(described.name, topic);
        assert_eq!(described.delivery, "Reliable");
        assert!(described.subscriptions.iter().all(|s| s == "sub-a"), "{described:?}");
        assert!(!described.subscriptions.is_empty());
        assert_eq!(described.schema_subject, None);
    }
}
