//! Observability through a running host: `/metrics` counts what moved,
//! `/health` follows the broker, and a batch's trace id reaches the guest.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    Host, endpoint, guest, http_get, reliable_producer, wait_subscribed, wait_until_async,
    write_config,
};
use danube_testkit::TestBroker;

/// Parses Prometheus text into `name{labels}` → value, checking every sample
/// line has the `name{labels} value` shape.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

/// The value of the series `name` whose labels include all of `labels`.
fn value(metrics: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .iter()
        .find(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_moved_and_trace_ids_reach_the_guest() {
    const TOPIC: &str = "/default/observed";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "observed-sink",
        &format!(
            "[processing]\nbatch_size = 10\nlinger_ms = 50\n\n{file_sink}fail_on = \"poison\"\n",
            file_sink = common::file_sink_tables(&out, TOPIC, "s")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &config, &[("LOG_LEVEL", "debug")]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;
    let addr = endpoint(&sink).expect("the host logs where it serves metrics");
    assert_eq!(http_get(&addr, "/ready").0, 200);

    let producer = reliable_producer(&broker.url(), TOPIC).await;
    for i in 0..30u32 {
        let payload = serde_json::json!({ "i": i, "poison": i % 10 == 3 });
        producer
            .send(payload.to_string().into_bytes(), None)
            .await
            .unwrap();
    }
    assert!(
        wait_until_async(Duration::from_secs(30), || broker
            .subscription(TOPIC, "s")
            .is_some_and(|s| s.acked == 30))
        .await
    );

    let labels = [("connector", "observed-sink"), ("topic", TOPIC)];
    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    assert_eq!(
        value(&m, "connector_messages_received_total", &labels),
        Some(30.0),
        "{text}"
    );
    assert_eq!(
        value(&m, "connector_messages_sent_total", &labels),
        Some(27.0),
        "{text}"
    );
    assert_eq!(
        value(&m, "connector_dead_lettered_total", &labels),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "connector_errors_total",
            &[("connector", "observed-sink"), ("class", "invalid_data")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &m,
            "connector_guest_file_sink_lines_written_total",
            &[("connector", "observed-sink")]
        ),
        Some(27.0),
        "the guest's own counter"
    );
    let batches = value(
        &m,
        "connector_processing_duration_seconds_count",
        &[("connector", "observed-sink"), ("call", "process_batch")],
    )
    .unwrap();
    assert!(
        batches >= 3.0,
        "{batches} batches for 30 records of batch_size 10"
    );
    assert!(
        value(
            &m,
            "connector_memory_bytes",
            &[("connector", "observed-sink")]
        )
        .unwrap()
            > 0.0
    );
    let (status, health) = http_get(&addr, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "healthy");

    // Every batch's trace id appears on the host's line and on the guest's.
    let log = sink.log();
    let trace_of = |line: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("trace_id="))
            .map(|t| t.trim_matches('"').to_string())
    };
    let host_traces: Vec<String> = log
        .lines()
        .filter(|l| l.contains("processing batch"))
        .filter_map(trace_of)
        .collect();
    let guest_traces: Vec<String> = log
        .lines()
        .filter(|l| l.contains("wrote ") && l.contains("records"))
        .filter_map(trace_of)
        .collect();
    assert!(!guest_traces.is_empty(), "{log}");
    for t in &guest_traces {
        assert!(
            host_traces.contains(t),
            "guest trace {t} has no host line; log:\n{log}"
        );
    }
    assert!(sink.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_degraded_while_the_broker_is_down_and_recovers() {
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "source.toml",
        &broker.url(),
        "observed-source",
        "[retry]\nmax_retries = 50\nretry_backoff_ms = 50\nmax_backoff_ms = 300\n\n[processing]\npublish_timeout_ms = 500\n\n[datagen]\ntopics = [\"/default/health\"]\nrate = 200\n",
    );
    let source = Host::start(&guest("datagen-source"), &config, &[]);
    assert!(
        wait_until_async(Duration::from_secs(30), || !broker
            .messages("/default/health")
            .is_empty())
        .await,
        "{}",
        source.log()
    );
    let addr = endpoint(&source).unwrap();
    let status = |addr: &str| {
        let (code, body) = http_get(addr, "/health");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (code, v["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status(&addr), (200, "healthy".to_string()));

    broker.stop().await;
    assert!(
        wait_until_async(Duration::from_secs(20), || status(&addr).1 == "degraded").await,
        "health stayed {:?} with the broker down; log:\n{}",
        status(&addr),
        source.log()
    );
    assert_eq!(status(&addr).0, 200, "degraded still answers 200");
    let before = broker.messages("/default/health").len();

    broker.restart().await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(30), || status(&addr).1 == "healthy").await,
        "health stayed {:?} after the broker returned; log:\n{}",
        status(&addr),
        source.log()
    );
    assert!(
        wait_until_async(Duration::from_secs(30), || broker
            .messages("/default/health")
            .len()
            > before)
        .await,
        "records flow again"
    );
    let m = parse_metrics(&http_get(&addr, "/metrics").1);
    assert!(
        value(
            &m,
            "connector_retries_total",
            &[("connector", "observed-source"), ("operation", "publish")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(source.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_connector_health_check_marks_it_degraded() {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/probe", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "probe.toml",
        &broker.url(),
        "ailing",
        "[processing]\nhealth_interval_ms = 100\n\n[probe]\nunhealthy = \"disk full (probe)\"\n",
    );
    let probe = Host::start(&guest("probe-connector"), &config, &[]);
    wait_subscribed(&broker, &["/default/probe".to_string()], "probe", &probe).await;
    let addr = endpoint(&probe).unwrap();
    let health = || {
        let (code, body) = http_get(&addr, "/health");
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        )
    };
    assert!(
        wait_until_async(Duration::from_secs(10), || health().1["status"]
            == "degraded")
        .await,
        "{:?}",
        health()
    );
    let (code, body) = health();
    assert_eq!(code, 200);
    let detail = body["connectors"]["ailing"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("disk full (probe)"), "{detail}");
    assert!(probe.terminate(Duration::from_secs(30)).success());
}
