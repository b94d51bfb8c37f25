//! End-to-end pipelines through the real `danube-client` over gRPC, against the
//! test broker: datagen-source → broker → file-sink, and the dead-letter path.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    Host, committed_seq, guest, reliable_producer, wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::TestBroker;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_records_flow_from_datagen_to_file_sink_exactly_once() {
    const COUNT: u64 = 10_000;
    const TOPIC: &str = "/default/e2e";
    const PARTITIONS: usize = 3;
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    broker.create_topic(TOPIC, PARTITIONS as u32, true).unwrap();

    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "e2e-sink",
        &format!(
            "[processing]\nbatch_size = 200\n\n{file_sink}",
            file_sink = common::file_sink_tables(&out, TOPIC, "e2e")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
    let partitions: Vec<String> = (0..PARTITIONS)
        .map(|p| format!("{TOPIC}-part-{p}"))
        .collect();
    wait_subscribed(&broker, &partitions, "e2e", &sink).await;

    let source_config = write_config(
        dir.path(),
        "source.toml",
        &broker.url(),
        "e2e-source",
        &format!(
            "[datagen]\ntopics = [\"{TOPIC}\"]\npartitions = {PARTITIONS}\ncount = {COUNT}\nkeys = 16\npayload_size = 100\n"
        ),
    );
    let state_file = dir.path().join("state/e2e-source.state.json");
    let source = Host::start(&guest("datagen-source"), &source_config, &[]);

    // While records flow, a committed sequence number is never ahead of what
    // the broker holds: commit follows the broker's ack. The state is read
    // before the broker, and both only grow.
    let stored = |broker: &TestBroker| -> u64 {
        (0..PARTITIONS)
            .map(|p| broker.messages(&format!("{TOPIC}-part-{p}")).len() as u64)
            .sum()
    };
    let out_file = out.join("records.jsonl");
    let all_written = wait_until_async(Duration::from_secs(120), || {
        if let Some(committed) = committed_seq(&state_file) {
            let in_broker = stored(&broker);
            assert!(
                committed < in_broker,
                "commit of seq {committed} while the broker holds only {in_broker} records"
            );
        }
        common::json_lines(&out_file).len() as u64 >= COUNT
    })
    .await;
    assert!(
        all_written,
        "only {} of {COUNT} records written; source log:\n{}\nsink log:\n{}",
        common::json_lines(&out_file).len(),
        source.log(),
        sink.log()
    );
    assert!(
        wait_until_async(Duration::from_secs(30), || committed_seq(&state_file)
            == Some(COUNT - 1))
        .await,
        "the source did not commit its last record: {:?}",
        committed_seq(&state_file)
    );

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
    for p in 0..PARTITIONS {
        let sub = broker
            .subscription(&format!("{TOPIC}-part-{p}"), "e2e")
            .unwrap();
        assert_eq!(
            sub.unacked, 0,
            "partition {p} has unacked messages after the drain"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_record_is_dead_lettered_and_the_rest_of_its_batch_lands() {
    const TOPIC: &str = "/default/dlq-input";
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    broker.create_topic(TOPIC, 0, true).unwrap();

    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "dlq-sink",
        &format!(
            "[processing]\nbatch_size = 50\nbatch_timeout_ms = 200\nlinger_ms = 100\n\n[dead_letter]\ntopic = \"/default/dlq\"\n\n{file_sink}fail_on = \"poison\"\n",
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
        wait_until_async(Duration::from_secs(30), || common::json_lines(&out_file)
            .len()
            >= 19
            && broker.messages("/default/dlq").len() == 1
            && broker
                .subscription(TOPIC, "s")
                .is_some_and(|s| s.acked == 20))
        .await,
        "written {}, dead-lettered {}, sub {:?}; log:\n{}",
        common::json_lines(&out_file).len(),
        broker.messages("/default/dlq").len(),
        broker.subscription(TOPIC, "s"),
        sink.log()
    );
    let written: Vec<u64> = common::json_lines(&out_file)
        .iter()
        .map(|l| l["payload"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(written, (0..20).filter(|i| *i != 7).collect::<Vec<u64>>());

    let dead = &broker.messages("/default/dlq")[0];
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
