//! A sink whose external system fails: `process-batch` returns retryable
//! errors (the probe's `fail_retryably`). For a while, and backoff carries
//! every record through; for good, and `[retry] on_exhausted` decides: the
//! batch goes to the dead-letter topic and the connector goes on, or the
//! connector stops with its records unacknowledged. Records are counted in
//! each case.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Host, guest, reliable_producer, wait_subscribed, wait_until_async, write_config};
use danube_testkit::TestBroker;

const TOPIC: &str = "/default/flaky";
const DLQ: &str = "/default/flaky-dlq";
const COUNT: u64 = 20;
const FATAL: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(30);

/// A flaky probe sink on [`TOPIC`], writing what it accepts to a file.
struct Flaky {
    broker: TestBroker,
    host: Host,
    out_file: PathBuf,
    log_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Flaky {
    /// Starts the probe with `fail_retryably = failures` and `retry` as its
    /// `[retry]` table, then produces [`COUNT`] records `{"i": N}`.
    async fn start(failures: &str, retry: &str) -> Flaky {
        let broker = TestBroker::start().await.unwrap();
        broker.create_topic(TOPIC, 0, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let out_file = out.join("probe.jsonl");
        let config = write_config(
            dir.path(),
            "probe.toml",
            &broker.url(),
            "flaky",
            &format!(
                "[retry]\nretry_backoff_ms = 50\nmax_backoff_ms = 200\n{retry}\n\n[processing]\nbatch_size = 5\n\n[dead_letter]\ntopic = \"{DLQ}\"\n\n[sandbox]\ndirs = [\"{out}\"]\n\n[probe]\ntopic = \"{TOPIC}\"\nfail_retryably = {failures}\nwrite_to = \"{file}\"\n",
                out = out.display(),
                file = out_file.display()
            ),
        );
        let host = Host::start(&guest("probe-connector"), &config, &[]);
        wait_subscribed(&broker, &[TOPIC.to_string()], "probe", &host).await;
        let producer = reliable_producer(&broker.url(), TOPIC).await;
        for i in 0..COUNT {
            producer
                .send(serde_json::json!({ "i": i }).to_string().into_bytes(), None)
                .await
                .unwrap();
        }
        Flaky {
            broker,
            host,
            out_file,
            log_file: config.with_extension("log"),
            _dir: dir,
        }
    }

    fn acked(&self) -> u64 {
        self.broker.subscription(TOPIC, "probe").unwrap().acked
    }

    async fn wait_acked(&self, count: u64) {
        assert!(
            wait_until_async(DEADLINE, || self.acked() == count).await,
            "{:?}; log:\n{}",
            self.broker.subscription(TOPIC, "probe"),
            self.host.log()
        );
    }

    fn written(&self) -> Vec<u64> {
        numbers(&self.out_file)
    }

    /// The `i` of each dead-lettered record, and its `dlq.error`.
    fn dead_lettered(&self) -> Vec<(u64, String)> {
        self.broker
            .messages(DLQ)
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                (v["i"].as_u64().unwrap(), m.attributes["dlq.error"].clone())
            })
            .collect()
    }

    async fn stop(self) {
        let log = self.host.log();
        let host = self.host;
        let status = tokio::task::spawn_blocking(move || host.terminate(DEADLINE))
            .await
            .unwrap();
        assert!(status.success(), "log:\n{log}");
    }
}

/// The `i` of each JSON line in a file.
fn numbers(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_a_while_recovers_with_nothing_lost() {
    let flaky = Flaky::start("3", "max_retries = 5").await;
    flaky.wait_acked(COUNT).await;
    // Each record written exactly once: a failed call wrote nothing.
    assert_eq!(sorted(flaky.written()), (0..COUNT).collect::<Vec<_>>());
    assert!(flaky.dead_lettered().is_empty());
    let retries = flaky.host.log().matches("batch failed; retrying").count();
    assert_eq!(retries, 3, "log:\n{}", flaky.host.log());
    flaky.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_good_dead_letters_its_batches_by_default() {
    let flaky = Flaky::start("\"forever\"", "max_retries = 2").await;
    flaky.wait_acked(COUNT).await;
    let dead = flaky.dead_lettered();
    assert_eq!(
        sorted(dead.iter().map(|(i, _)| *i).collect()),
        (0..COUNT).collect::<Vec<_>>()
    );
    for (_, error) in &dead {
        assert!(
            error.starts_with("retryable: retries exhausted: writing failed 3 times, last: probe fails retryably as asked"),
            "{error}"
        );
    }
    assert!(flaky.written().is_empty());
    // Still running: no final report.
    assert!(!flaky.host.log().contains("danube-host: connector"));
    flaky.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_good_stops_when_on_exhausted_says_so() {
    let flaky = Flaky::start("\"forever\"", "max_retries = 2\non_exhausted = \"stop\"").await;
    let Flaky {
        broker,
        host,
        out_file,
        log_file,
        _dir,
    } = flaky;
    let status = tokio::task::spawn_blocking(move || host.wait(DEADLINE))
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(status.code(), Some(FATAL), "log:\n{log}");
    let report = log
        .lines()
        .rev()
        .find(|l| l.starts_with("danube-host: connector flaky: "))
        .unwrap_or_else(|| panic!("no final report in:\n{log}"));
    assert!(
        report.contains("writing a batch kept failing after 2 retries")
            && report.ends_with("will be delivered again ([retry] on_exhausted = \"stop\")"),
        "{report}"
    );
    // Nothing acknowledged, written or dead-lettered: all of it is still on
    // the subscription for the next run.
    let sub = broker.subscription(TOPIC, "probe").unwrap();
    assert_eq!(sub.acked, 0, "{sub:?}");
    assert!(numbers(&out_file).is_empty());
    assert!(broker.messages(DLQ).is_empty());
}
