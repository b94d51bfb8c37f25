//! End-to-end pipelines through the real `danube-client` over gRPC, each run
//! against the test broker and against the real Danube broker:
//! datagen-source → broker → file-sink, and the dead-letter path.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Host, committed_seq, guest, reliable_producer, wait_subscribed, write_config};
use danube_testkit::{Broker, BrokerKind, Tap, wait_until};
use serde_json::Value;

/// Generous bound for something that should happen "soon" on a busy machine.
const SOON: Duration = Duration::from_secs(10);

/// Waits until `subscription` acknowledged everything on `topics`, or
/// panics with the host's log.
async fn wait_all_acked(broker: &Broker, topics: &[String], subscription: &str, host: &Host) {
    if let Err(error) = broker
        .wait_acked(topics, subscription, Duration::from_secs(30))
        .await
    {
        panic!("{error:#}; log:\n{}", host.log());
    }
}

danube_testkit::on_both_brokers! {
    async fn ten_thousand_records_flow_from_datagen_to_file_sink_exactly_once(broker: Broker) {
        const COUNT: u64 = 10_000;
        const TOPIC: &str = "/default/e2e";
        const PARTITIONS: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // The sink must find the partitions when it subscribes.
        broker.create_topic(TOPIC, PARTITIONS as u32, true).await.unwrap();
        let partitions: Vec<String> = (0..PARTITIONS)
            .map(|p| format!("{TOPIC}-part-{p}"))
            .collect();
        // What reached the broker, counted by a consumer of its own.
        let tap = Tap::start(&broker.url(), TOPIC).await.unwrap();

        let sink_config = write_config(
            dir.path(),
            "sink.toml",
            &broker.url(),
            "e2e-sink",
            &format!(
                "[processing]\nbatch_size = 200\n\n{broker}{file_sink}",
                broker = common::broker_table(&broker),
                file_sink = common::file_sink_tables(&out, TOPIC, "e2e")
            ),
        );
        let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
        wait_subscribed(&broker, &partitions, "e2e", &sink).await;

        // The real broker drops messages for good once a reliable
        // subscription is more than 256 behind a partition's producer; at
        // 500 records/s over 3 partitions both subscriptions (the sink's and
        // the tap's) keep up, with room for a busy machine.
        let pacing = match broker.kind() {
            BrokerKind::Test => "",
            BrokerKind::Real => "rate = 500\n",
        };
        let source_config = write_config(
            dir.path(),
            "source.toml",
            &broker.url(),
            "e2e-source",
            &format!(
                "[datagen]\ntopics = [\"{TOPIC}\"]\npartitions = {PARTITIONS}\ncount = {COUNT}\nkeys = 16\npayload_size = 100\n{pacing}"
            ),
        );
        let state_file = dir.path().join("state/e2e-source.state.json");
        let source = Host::start(&guest("datagen-source"), &source_config, &[]);

        // While records flow, a committed sequence number is never ahead of
        // the broker: commit follows the broker's ack, so every record up to
        // it reaches the tap soon after.
        let out_file = out.join("records.jsonl");
        let all_written = wait_until(Duration::from_secs(120), || async {
            if let Some(committed) = committed_seq(&state_file) {
                assert!(
                    tap.wait_for(committed as usize + 1, SOON).await,
                    "commit of seq {committed} while only {} records reached the broker",
                    tap.count()
                );
            }
            common::json_lines(&out_file).len() as u64 >= COUNT
        })
        .await;
        assert!(
            all_written,
            "only {} of {COUNT} records written; the sink's /health: {:?}; source log:\n{}\nsink log:\n{}",
            common::json_lines(&out_file).len(),
            common::health(&sink),
            source.log(),
            sink.log()
        );
        assert!(
            wait_until(Duration::from_secs(30), || async {
                committed_seq(&state_file) == Some(COUNT - 1)
            })
            .await,
            "the source did not commit its last record: {:?}",
            committed_seq(&state_file)
        );
        // The broker got each record once: a clean run resends nothing.
        let published: Vec<u64> = tap
            .messages()
            .iter()
            .map(|m| m.attributes["seq"].parse().unwrap())
            .collect();
        assert_eq!(published.len() as u64, COUNT, "records on the broker");
        assert_eq!(published.iter().collect::<HashSet<_>>().len() as u64, COUNT);
        wait_all_acked(&broker, &partitions, "e2e", &sink).await;

        assert!(source.terminate(Duration::from_secs(30)).success());
        let sink_log = sink.log();
        assert!(
            sink.terminate(Duration::from_secs(30)).success(),
            "{sink_log}"
        );

        let lines = common::json_lines(&out_file);
        assert_eq!(
            lines.len() as u64,
            COUNT,
            "a clean run writes each record exactly once"
        );
        let mut seen = vec![false; COUNT as usize];
        // Per key, sequence numbers arrive in increasing order (one key, one
        // partition, one producer lane).
        let mut last_per_key: HashMap<String, u64> = HashMap::new();
        for line in &lines {
            let payload = &line["payload"];
            let seq = payload["seq"].as_u64().expect("seq in payload");
            assert!(!seen[seq as usize], "seq {seq} written twice");
            seen[seq as usize] = true;
            let key = line["key"]
                .as_str()
                .expect("datagen records are keyed")
                .to_string();
            assert_eq!(payload["key"].as_str(), Some(key.as_str()));
            if let Some(prev) = last_per_key.insert(key.clone(), seq) {
                assert!(prev < seq, "key {key}: seq {seq} written after {prev}");
            }
            assert_eq!(
                line["attributes"]["seq"].as_str(),
                Some(seq.to_string().as_str())
            );
        }
        assert!(seen.iter().all(|s| *s));
    }

    async fn an_invalid_record_is_dead_lettered_and_the_rest_of_its_batch_lands(broker: Broker) {
        // Neither name is a prefix of the other: the real broker takes a
        // topic name's prefix for a partitioned base name.
        const TOPIC: &str = "/default/records";
        const DLQ: &str = "/default/dead-letters";
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        // Created ahead of the host's dead-letter producer (which is
        // reliable), so that the tap is there for the first dead letter.
        broker.create_topic(DLQ, 0, true).await.unwrap();
        let dead_letters = Tap::start(&broker.url(), DLQ).await.unwrap();

        let sink_config = write_config(
            dir.path(),
            "sink.toml",
            &broker.url(),
            "dlq-sink",
            &format!(
                "[processing]\nbatch_size = 50\nbatch_timeout_ms = 200\nlinger_ms = 100\n\n[dead_letter]\ntopic = \"{DLQ}\"\n\n{file_sink}fail_on = \"poison\"\n",
                file_sink = common::file_sink_tables(&out, TOPIC, "s")
            ),
        );
        let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
        wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;

        let producer = reliable_producer(&broker.url(), TOPIC).await;
        for i in 0..20u32 {
            let payload = serde_json::json!({ "i": i, "poison": i == 7 });
            let attrs = HashMap::from([("origin".to_string(), "test".to_string())]);
            producer
                .send(payload.to_string().into_bytes(), Some(attrs))
                .await
                .unwrap();
        }

        let out_file = out.join("records.jsonl");
        assert!(
            wait_until(SOON * 3, || async {
                common::json_lines(&out_file).len() >= 19 && dead_letters.count() == 1
            })
            .await,
            "written {}, dead-lettered {}; log:\n{}",
            common::json_lines(&out_file).len(),
            dead_letters.count(),
            sink.log()
        );
        // Every record is acknowledged, the dead-lettered one included.
        wait_all_acked(&broker, &[TOPIC.to_string()], "s", &sink).await;
        let written: Vec<u64> = common::json_lines(&out_file)
            .iter()
            .map(|l| l["payload"]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(written, (0..20).filter(|i| *i != 7).collect::<Vec<u64>>());

        let dead = &dead_letters.messages()[0];
        let payload: Value = serde_json::from_slice(&dead.payload).unwrap();
        assert_eq!(payload["i"], 7);
        assert_eq!(dead.attributes["dlq.error_class"], "invalid_data");
        assert!(
            dead.attributes["dlq.error"].contains("poison"),
            "{:?}",
            dead.attributes
        );
        assert_eq!(dead.attributes["dlq.topic"], TOPIC);
        assert_eq!(dead.attributes["dlq.offset"], "7");
        assert_eq!(
            dead.attributes["origin"], "test",
            "the record's own attributes are kept"
        );
        assert!(sink.terminate(Duration::from_secs(30)).success());
    }
}
