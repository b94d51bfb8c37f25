//! Topics and namespaces the broker does not have (yet): a sink started
//! before its topic waits for it, degraded with the reason, and picks up
//! partitions created after it subscribed.

mod common;

use std::time::Duration;

use common::{Host, guest, reliable_producer, wait_health, write_config};
use danube_testkit::TestBroker;

const DEADLINE: Duration = Duration::from_secs(60);

/// A file-sink on `topic` that looks for its topic often, so the tests need
/// not wait for the default backoff.
fn sink(dir: &std::path::Path, broker: &TestBroker, topic: &str) -> Host {
    let out = dir.join("out");
    let config = write_config(
        dir,
        "sink.toml",
        &broker.url(),
        "waiting-sink",
        &format!(
            "[retry]\nretry_backoff_ms = 50\nmax_backoff_ms = 300\n\n[broker]\ncheck_interval_ms = 200\n\n{}",
            common::file_sink_tables(&out, topic, "s")
        ),
    );
    Host::start(&guest("file-sink"), &config, &[])
}

fn status(doc: &serde_json::Value) -> (&str, &str) {
    let c = &doc["connectors"]["waiting-sink"];
    (
        c["status"].as_str().unwrap_or(""),
        c["detail"].as_str().unwrap_or(""),
    )
}

/// Publishes `seqs` as `{"seq": n}` through a new reliable producer.
async fn publish(broker: &TestBroker, topic: &str, seqs: std::ops::Range<u64>) {
    let producer = reliable_producer(&broker.url(), topic).await;
    for seq in seqs {
        producer
            .send(format!("{{\"seq\":{seq}}}").into_bytes(), None)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_started_before_its_topic_waits_for_it_then_consumes() {
    const TOPIC: &str = "/default/later";
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = sink(dir.path(), &broker, TOPIC);

    let doc = wait_health(&host, DEADLINE, "the sink says it waits for its topic", |doc| {
        status(doc) == (
            "degraded",
            "waiting for topic /default/later: it does not exist yet; subscription s starts when a producer creates it",
        )
    })
    .await;
    assert_eq!(doc["status"], "degraded");
    assert!(host.log().contains("waiting for topic /default/later"));

    // A producer creates the topic; the sink subscribes, healthy again.
    let producer = reliable_producer(&broker.url(), TOPIC).await;
    wait_health(
        &host,
        DEADLINE,
        "the sink subscribes once the topic exists",
        |doc| status(doc) == ("healthy", "running"),
    )
    .await;
    common::wait_subscribed(&broker, &[TOPIC.to_string()], "s", &host).await;
    for seq in 0..50u64 {
        producer
            .send(format!("{{\"seq\":{seq}}}").into_bytes(), None)
            .await
            .unwrap();
    }
    let out = dir.path().join("out/records.jsonl");
    assert!(
        common::wait_until_async(DEADLINE, || common::json_lines(&out).len() >= 50).await,
        "only {} of 50 written; log:\n{}",
        common::json_lines(&out).len(),
        host.log()
    );
    let seqs: Vec<u64> = common::json_lines(&out)
        .iter()
        .map(|l| l["payload"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    assert!(host.terminate(DEADLINE).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_created_after_the_sink_subscribed_are_consumed_too() {
    const TOPIC: &str = "/default/growing";
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Only the first partition exists when the sink starts.
    broker
        .create_topic(&format!("{TOPIC}-part-0"), 0, true)
        .unwrap();
    let host = sink(dir.path(), &broker, TOPIC);
    let partitions: Vec<String> = (0..3).map(|p| format!("{TOPIC}-part-{p}")).collect();
    common::wait_subscribed(&broker, &partitions[..1], "s", &host).await;

    for partition in &partitions[1..] {
        broker.create_topic(partition, 0, true).unwrap();
    }
    // The sink subscribes again, now to all three.
    common::wait_subscribed(&broker, &partitions, "s", &host).await;
    for (p, partition) in partitions.iter().enumerate() {
        let first = p as u64 * 100;
        publish(&broker, partition, first..first + 20).await;
    }
    let out = dir.path().join("out/records.jsonl");
    assert!(
        common::wait_until_async(DEADLINE, || common::json_lines(&out).len() >= 60).await,
        "only {} of 60 written; log:\n{}",
        common::json_lines(&out).len(),
        host.log()
    );
    let mut seqs: Vec<u64> = common::json_lines(&out)
        .iter()
        .map(|l| l["payload"]["seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    let expected: Vec<u64> = [0..20, 100..120, 200..220].into_iter().flatten().collect();
    assert_eq!(seqs, expected, "every record of every partition, once");
    assert!(host.log().contains("partitions created since subscribing"));
    assert!(host.terminate(DEADLINE).success());
}
