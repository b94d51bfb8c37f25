//! A sink whose external system fails: `process-batch` returns retryable
//! errors (the probe's `fail_retryably`). For a while, and backoff carries
//! every record through; for good, and `[retry] on_exhausted` decides: the
//! batch goes to the dead-letter topic and the connector goes on, or the
//! connector stops with its records unacknowledged. Records are counted in
//! each case.

mod common;

use std::time::Duration;

use common::probe::{ProbeSink, final_report, numbers_on, produce};
use common::wait_until_async;
use danube_testkit::TestBroker;

const TOPIC: &str = "/default/flaky";
const DLQ: &str = "/default/flaky-dlq";
const COUNT: u64 = 20;
const FATAL: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(30);

/// A flaky probe sink and the broker it reads from.
struct Flaky {
    broker: TestBroker,
    sink: ProbeSink,
    _dir: tempfile::TempDir,
}

impl Flaky {
    /// Starts the probe with `fail_retryably = failures` and `retry` in its
    /// `[retry]` table, then produces [`COUNT`] records.
    async fn start(failures: &str, retry: &str) -> Flaky {
        let broker = TestBroker::start().await.unwrap();
        broker.create_topic(TOPIC, 0, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sink = ProbeSink::start(
            &broker,
            dir.path(),
            "flaky",
            TOPIC,
            [
                &format!(
                    "[retry]\nretry_backoff_ms = 50\nmax_backoff_ms = 200\n{retry}\n\n[processing]\nbatch_size = 5\n\n[dead_letter]\ntopic = \"{DLQ}\""
                ),
                "",
                &format!("fail_retryably = {failures}"),
            ],
        )
        .await;
        produce(&broker, TOPIC, COUNT, &[]).await;
        Flaky {
            broker,
            sink,
            _dir: dir,
        }
    }

    fn acked(&self) -> u64 {
        self.broker.subscription(TOPIC, "probe").unwrap().acked
    }

    async fn wait_all_acked(&self) {
        assert!(
            wait_until_async(DEADLINE, || self.acked() == COUNT).await,
            "{:?}; log:\n{}",
            self.broker.subscription(TOPIC, "probe"),
            self.sink.host.log()
        );
    }

    /// Stops the host with SIGTERM; it must drain and exit 0.
    async fn stop(self) {
        let log = self.sink.host.log();
        let host = self.sink.host;
        let status = tokio::task::spawn_blocking(move || host.terminate(DEADLINE))
            .await
            .unwrap();
        assert!(status.success(), "log:\n{log}");
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_a_while_recovers_with_nothing_lost() {
    let flaky = Flaky::start("3", "max_retries = 5").await;
    flaky.wait_all_acked().await;
    // Each record written exactly once: a failed call wrote nothing.
    assert_eq!(sorted(flaky.sink.written()), (0..COUNT).collect::<Vec<_>>());
    assert!(numbers_on(&flaky.broker, DLQ).is_empty());
    let log = flaky.sink.host.log();
    assert_eq!(
        log.matches("batch failed; retrying").count(),
        3,
        "log:\n{log}"
    );
    flaky.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_good_dead_letters_its_batches_by_default() {
    let flaky = Flaky::start("\"forever\"", "max_retries = 2").await;
    flaky.wait_all_acked().await;
    assert_eq!(
        sorted(numbers_on(&flaky.broker, DLQ)),
        (0..COUNT).collect::<Vec<_>>()
    );
    for message in flaky.broker.messages(DLQ) {
        let error = &message.attributes["dlq.error"];
        assert!(
            error.starts_with("retryable: retries exhausted: writing failed 3 times, last: probe fails retryably as asked"),
            "{error}"
        );
    }
    assert!(flaky.sink.written().is_empty());
    // Still running: no final report.
    assert!(!flaky.sink.host.log().contains("danube-host: connector"));
    flaky.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_failing_for_good_stops_when_on_exhausted_says_so() {
    let flaky = Flaky::start("\"forever\"", "max_retries = 2\non_exhausted = \"stop\"").await;
    let Flaky { broker, sink, _dir } = flaky;
    let ProbeSink {
        host,
        out_file,
        log_file,
    } = sink;
    let status = tokio::task::spawn_blocking(move || host.wait(DEADLINE))
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(status.code(), Some(FATAL), "log:\n{log}");
    let report = final_report(&log);
    assert!(
        report.starts_with(
            "danube-host: connector flaky: writing a batch kept failing after 2 retries"
        ) && report.ends_with("will be delivered again ([retry] on_exhausted = \"stop\")"),
        "{report}"
    );
    // Nothing acknowledged, written or dead-lettered: all of it is still on
    // the subscription for the next run.
    let sub = broker.subscription(TOPIC, "probe").unwrap();
    assert_eq!(sub.acked, 0, "{sub:?}");
    assert!(!out_file.exists() || std::fs::read_to_string(&out_file).unwrap().is_empty());
    assert!(broker.messages(DLQ).is_empty());
}
