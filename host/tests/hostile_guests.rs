//! Hostile guests, run through `danube-host run` against the test broker: a
//! guest that loops in `process-batch`, one that traps on a poisoned record,
//! one that connects where it may not and one that reads outside its granted
//! directory. Each is contained (stopped, denied, restarted) with a clear log
//! line, no record is lost, and a second connector on another topic keeps
//! flowing meanwhile. The guest is the `probe-connector` test fixture
//! (host/tests/probe), steered by its `[probe]` table.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::probe::{ProbeSink, final_report, numbers_on, produce, unused_url};
use common::{Host, granted_and_outside, guest, wait_subscribed, wait_until_async, write_config};
use danube_testkit::TestBroker;

const CONFIG: i32 = 2;
const FATAL: i32 = 4;

/// Longest a host may take to end by itself after an `open` fault.
const DEADLINE: Duration = Duration::from_secs(30);

/// Worker restarts come quickly, and a batch that keeps killing workers is
/// given up on after two deaths.
const FAST_RETRY: &str =
    "[retry]\nmax_retries = 2\nretry_backoff_ms = 50\nmax_backoff_ms = 100\n\n";

/// The panic message of the probe's `trap_in_batch_on`.
const BATCH_PANIC_MESSAGE: &str = "probe panics in process-batch on a poisoned record";

/// Runs the probe with `rest` until the host exits by itself; returns the
/// exit code and the host's final report line.
fn run_probe_open(dir: &Path, rest: &str) -> (i32, String, String) {
    let config = write_config(dir, "probe.toml", &unused_url(), "probe", rest);
    let host = Host::start(&guest("probe-connector"), &config, &[]);
    let status = host.wait(DEADLINE);
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    let report = final_report(&log).to_string();
    (status.code().unwrap_or(-1), report, log)
}

/// A datagen-source → file-sink flow on a topic of its own, in two hosts of
/// its own: the connector that must keep flowing beside a hostile one.
struct Bystander {
    source: Host,
    sink: Host,
    out_file: PathBuf,
    count: u64,
}

impl Bystander {
    async fn start(broker: &TestBroker, dir: &Path, count: u64, rate: u64) -> Bystander {
        const TOPIC: &str = "/default/bystander";
        broker.create_topic(TOPIC, 0, true).unwrap();
        let out = dir.join("bystander-out");
        std::fs::create_dir_all(&out).unwrap();
        let sink_config = write_config(
            dir,
            "bystander-sink.toml",
            &broker.url(),
            "bystander-sink",
            &format!(
                "[processing]\nbatch_size = 100\n\n{file_sink}",
                file_sink = common::file_sink_tables(&out, TOPIC, "bystander")
            ),
        );
        let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
        wait_subscribed(broker, &[TOPIC.to_string()], "bystander", &sink).await;
        let source_config = write_config(
            dir,
            "bystander-source.toml",
            &broker.url(),
            "bystander-source",
            &format!(
                "[processing]\nbatch_size = 100\n\n[datagen]\ntopics = [\"{TOPIC}\"]\ncount = {count}\nrate = {rate}\n"
            ),
        );
        let source = Host::start(&guest("datagen-source"), &source_config, &[]);
        Bystander {
            source,
            sink,
            out_file: out.join("records.jsonl"),
            count,
        }
    }

    fn written(&self) -> usize {
        common::json_lines(&self.out_file).len()
    }

    /// Waits for every record, then stops both hosts cleanly.
    async fn finish(self) {
        let all = wait_until_async(Duration::from_secs(60), || {
            self.written() as u64 >= self.count
        })
        .await;
        assert!(
            all,
            "the bystander wrote {} of {} records; source log:\n{}\nsink log:\n{}",
            self.written(),
            self.count,
            self.source.log(),
            self.sink.log()
        );
        let (source, sink) = (self.source, self.sink);
        tokio::task::spawn_blocking(move || {
            assert!(source.terminate(Duration::from_secs(30)).success());
            assert!(sink.terminate(Duration::from_secs(30)).success());
        })
        .await
        .unwrap();
    }
}

/// Counts of each value, for duplicate reports.
fn tally(values: impl IntoIterator<Item = u64>) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
}

/// A healthy file-sink takes over the probe's subscription on `topic` until
/// all `count` records are acknowledged; it dead-letters poisoned records
/// itself (`fail_on`) to `dlq`. Returns the `i` of each record it wrote.
async fn take_over(
    broker: &TestBroker,
    dir: &Path,
    topic: &str,
    dlq: &str,
    count: u64,
) -> Vec<u64> {
    let out = dir.join("healthy-out");
    std::fs::create_dir_all(&out).unwrap();
    let config = write_config(
        dir,
        "healthy.toml",
        &broker.url(),
        "healthy",
        &format!(
            "[processing]\nbatch_size = 5\n\n[dead_letter]\ntopic = \"{dlq}\"\n\n{file_sink}fail_on = \"poison\"\n",
            file_sink = common::file_sink_tables(&out, topic, "probe")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &config, &[]);
    // Running (and so able to drain on SIGTERM) once it subscribed.
    assert!(
        wait_until_async(Duration::from_secs(30), || sink
            .log()
            .contains("subscribed"))
        .await,
        "the healthy sink did not subscribe; log:\n{}",
        sink.log()
    );
    assert!(
        wait_until_async(Duration::from_secs(30), || broker
            .subscription(topic, "probe")
            .unwrap()
            .acked
            == count)
        .await,
        "{:?}; healthy sink log:\n{}",
        broker.subscription(topic, "probe"),
        sink.log()
    );
    let log = sink.log();
    let status = tokio::task::spawn_blocking(move || sink.terminate(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "{log}");
    common::json_lines(&out.join("records.jsonl"))
        .iter()
        .map(|v| v["payload"]["i"].as_u64().unwrap())
        .collect()
}

#[test]
fn connect_to_a_destination_not_allowed_is_denied() {
    // Something listens, so only the sandbox can make the connect fail.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();

    // The probe's connect under `sandbox` (a `[sandbox]` table, or none):
    // its report and the host's log.
    let connect = |sandbox: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (code, report, log) = run_probe_open(
            dir.path(),
            &format!("{FAST_RETRY}{sandbox}[probe]\nconnect_to = \"{target}\"\n"),
        );
        assert_eq!(code, CONFIG, "log:\n{log}");
        (report, log)
    };

    // No [sandbox] allow at all: no network.
    let (report, _) = connect("");
    assert!(report.contains(&format!("connect {target}: ")), "{report}");
    assert!(
        !report.ends_with(": ok"),
        "the guest connected without any [sandbox] allow: {report}"
    );
    println!("no allow list: {report}");

    // Another port of the same host allowed: this one is still denied, and
    // the host says so.
    let (report, log) = connect(&format!(
        "[sandbox]\nallow = [\"127.0.0.1:{other_port}\"]\n\n"
    ));
    assert!(report.contains(&format!("connect {target}: ")), "{report}");
    assert!(
        !report.ends_with(": ok"),
        "the guest connected to a port not allowed: {report}"
    );
    assert!(
        log.contains("network access denied by [sandbox] allow") && log.contains(&target),
        "no log line names the denied destination:\n{log}"
    );
    println!("other port allowed: {report}");

    // The control: allowed, the same connect succeeds.
    let (report, _) = connect(&format!("[sandbox]\nallow = [\"127.0.0.1:{port}\"]\n\n"));
    assert!(
        report.ends_with(&format!("connect {target}: ok")),
        "an allowed connect failed: {report}"
    );
    drop((listener, other));
}

#[test]
fn read_outside_the_granted_directory_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let (granted, outside) = granted_and_outside(dir.path());

    for path in [
        outside.display().to_string(),
        "/etc/hostname".to_string(),
        format!("{}/../outside.txt", granted.display()),
    ] {
        let (code, report, log) = run_probe_open(
            dir.path(),
            &format!(
                "{FAST_RETRY}[sandbox]\ndirs = [\"{}\"]\n\n[probe]\nread_path = \"{path}\"\n",
                granted.display()
            ),
        );
        assert_eq!(code, CONFIG, "log:\n{log}");
        assert!(report.contains(&format!("read {path}: ")), "{report}");
        assert!(
            !report.contains(": ok ("),
            "the guest read {path} outside its granted directory: {report}"
        );
        println!("{report}");
    }

    // The control: inside the granted directory the same read succeeds.
    let inside = granted.join("inside.txt").display().to_string();
    let (code, report, log) = run_probe_open(
        dir.path(),
        &format!(
            "{FAST_RETRY}[sandbox]\ndirs = [\"{}\"]\n\n[probe]\nread_path = \"{inside}\"\n",
            granted.display()
        ),
    );
    assert_eq!(code, CONFIG, "log:\n{log}");
    assert!(
        report.ends_with(&format!("read {inside}: ok (6 bytes)")),
        "{report}"
    );
}

/// A guest that never returns from `process-batch` is stopped by the call
/// timeout each time, its worker replaced, and the records it held are never
/// acknowledged as written. Meanwhile another connector keeps flowing.
#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_in_process_batch_is_stopped_and_others_keep_flowing() {
    const TOPIC: &str = "/default/looping";
    const DLQ: &str = "/default/looping-dlq";
    const COUNT: u64 = 5;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bystander = Bystander::start(&broker, dir.path(), 4_000, 500).await;
    assert!(
        wait_until_async(Duration::from_secs(30), || bystander.written() > 0).await,
        "the bystander never started flowing; sink log:\n{}",
        bystander.sink.log()
    );

    let config = write_config(
        dir.path(),
        "probe.toml",
        &broker.url(),
        "looping",
        &format!(
            "{FAST_RETRY}[sandbox]\ncall_timeout_ms = 300\n\n[dead_letter]\ntopic = \"{DLQ}\"\n\n[probe]\ntopic = \"{TOPIC}\"\nloop_in_batch = true\n"
        ),
    );
    let probe = Host::start(&guest("probe-connector"), &config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "probe", &probe).await;
    produce(&broker, TOPIC, COUNT, &[]).await;

    // The first stop and restart.
    let stopped = "the guest did not return within [sandbox] call_timeout_ms = 300 and was stopped";
    assert!(
        wait_until_async(Duration::from_secs(20), || {
            let log = probe.log();
            log.contains(stopped) && log.contains("worker died; restarting it")
        })
        .await,
        "the looping guest was not stopped and restarted; log:\n{}",
        probe.log()
    );
    let flowing_from = bystander.written();
    let misbehaving_since = Instant::now();

    // The host settles it: by dead-lettering the records after `max_retries`
    // worker deaths (and carrying on), or by giving up on the connector with
    // a final report. Either way soon, and the bystander flows meanwhile.
    let settled = wait_until_async(Duration::from_secs(20), || {
        broker.subscription(TOPIC, "probe").unwrap().acked == COUNT
            || probe.log().contains("danube-host: connector looping:")
    })
    .await;
    let log = probe.log();
    assert!(settled, "neither settled nor stopped; log:\n{log}");
    let stops = log
        .lines()
        .filter(|l| l.contains("guest trapped; the instance is discarded") && l.contains(stopped))
        .count();
    assert!(stops >= 2, "stopped only {stops} times; log:\n{log}");
    let window = misbehaving_since.elapsed();
    let flowed = bystander.written() - flowing_from;
    println!(
        "the looping guest was stopped {stops} times; the bystander wrote {flowed} records meanwhile ({window:?}); final report: {:?}",
        log.lines().rev().find(|l| l.starts_with("danube-host: "))
    );
    assert!(
        flowed > 0,
        "the bystander stalled for {window:?} while the probe looped; sink log:\n{}",
        bystander.sink.log()
    );

    // Nothing was acknowledged except through the dead-letter topic: no
    // record the guest never wrote is taken for written.
    let sub = broker.subscription(TOPIC, "probe").unwrap();
    let dead = numbers_on(&broker, DLQ);
    assert!(
        sub.acked as usize <= dead.len(),
        "{} acked, only {} dead-lettered; log:\n{log}",
        sub.acked,
        dead.len()
    );
    drop(probe);

    // Nothing is lost: what the probe did not dead-letter is still there for
    // a healthy sink.
    let written = take_over(&broker, dir.path(), TOPIC, DLQ, COUNT).await;
    let all = tally(written.iter().chain(&numbers_on(&broker, DLQ)).copied());
    let missing: Vec<u64> = (0..COUNT).filter(|i| !all.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost records: {missing:?}");
    bystander.finish().await;
}

/// The designed end of a batch that keeps killing workers: after
/// `max_retries` worker deaths its records go to the dead-letter topic and
/// the connector goes on. `limit` is the `[sandbox]` table that stops the
/// looping guest, `stopped` what the log says when it does. One record per
/// batch, so that several batches wait while one kills workers: each must be
/// charged with its own deaths only, or the restart budget runs out first.
async fn endless_loop_in_process_batch_ends_in_the_dead_letter_topic(limit: &str, stopped: &str) {
    const TOPIC: &str = "/default/looping";
    const DLQ: &str = "/default/looping-dlq";
    const COUNT: u64 = 5;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "probe.toml",
        &broker.url(),
        "looping",
        &format!(
            "{FAST_RETRY}[processing]\nbatch_size = 1\n\n[sandbox]\n{limit}\n\n[dead_letter]\ntopic = \"{DLQ}\"\n\n[probe]\ntopic = \"{TOPIC}\"\nloop_in_batch = true\n"
        ),
    );
    let probe = Host::start(&guest("probe-connector"), &config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "probe", &probe).await;
    produce(&broker, TOPIC, COUNT, &[]).await;
    assert!(
        wait_until_async(Duration::from_secs(30), || {
            numbers_on(&broker, DLQ).len() as u64 >= COUNT
        })
        .await,
        "dead-lettered {:?}; log:\n{}",
        numbers_on(&broker, DLQ),
        probe.log()
    );
    // Each once, and in order: a batch waiting behind the culprit is not
    // overtaken when they are replayed.
    assert_eq!(
        numbers_on(&broker, DLQ),
        (0..COUNT).collect::<Vec<_>>(),
        "log:\n{}",
        probe.log()
    );
    let m = &broker.messages(DLQ)[0];
    assert!(
        m.attributes["dlq.error"].contains("died"),
        "{:?}",
        m.attributes
    );
    let log = probe.log();
    let stops = log.lines().filter(|l| l.contains(stopped)).count();
    assert!(
        stops >= 2,
        "stopped {stops} times by {stopped:?}; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_stopped_by_the_call_timeout_ends_in_the_dead_letter_topic() {
    endless_loop_in_process_batch_ends_in_the_dead_letter_topic(
        "call_timeout_ms = 300",
        "the guest did not return within [sandbox] call_timeout_ms = 300 and was stopped",
    )
    .await;
}

/// Fuel stops the same loop deterministically, long before its generous
/// time limit.
#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_stopped_by_fuel_ends_in_the_dead_letter_topic() {
    endless_loop_in_process_batch_ends_in_the_dead_letter_topic(
        "call_timeout_ms = 600000\nfuel = 20000000",
        "the guest used up its [sandbox] fuel = 20000000 for one call and was stopped",
    )
    .await;
}

/// A sink that leaks memory on every batch: each time it reaches
/// `[sandbox] memory_mb` it is stopped naming the limit, its worker replaced
/// with a fresh instance and the batch replayed. Each record is written
/// exactly once (a batch is stopped before it writes), none is
/// dead-lettered, and the connector never gives up, since every worker gets
/// work done before it dies.
#[tokio::test(flavor = "multi_thread")]
async fn a_memory_leak_is_stopped_at_its_limit_and_loses_nothing() {
    const TOPIC: &str = "/default/leaking";
    const DLQ: &str = "/default/leaking-dlq";
    const COUNT: u64 = 60;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = ProbeSink::start(
        &broker,
        dir.path(),
        "leaking",
        TOPIC,
        [
            &format!(
                "{FAST_RETRY}[processing]\nbatch_size = 5\n\n[dead_letter]\ntopic = \"{DLQ}\""
            ),
            "memory_mb = 32",
            "leak_mb_per_batch = 8",
        ],
    )
    .await;
    produce(&broker, TOPIC, COUNT, &[]).await;
    let probe = &sink.host;
    assert!(
        wait_until_async(Duration::from_secs(60), || {
            broker.subscription(TOPIC, "probe").unwrap().acked == COUNT
        })
        .await,
        "{:?}; log:\n{}",
        broker.subscription(TOPIC, "probe"),
        probe.log()
    );
    let log = probe.log();
    let stops = log
        .lines()
        .filter(|l| l.contains("the guest exceeded its memory limit ([sandbox] memory_mb)"))
        .count();
    let restarts = log.matches("worker died; restarting it").count();
    assert!(
        stops >= 2 && restarts >= 2,
        "{stops} stops, {restarts} restarts; log:\n{log}"
    );
    assert!(!log.contains("danube-host: connector"), "{log}");
    let mut written = sink.written();
    written.sort();
    assert_eq!(written, (0..COUNT).collect::<Vec<_>>());
    assert!(numbers_on(&broker, DLQ).is_empty());
    println!(
        "{COUNT} records written once each across {restarts} workers stopped at their memory limit"
    );
    let status = tokio::task::spawn_blocking(move || sink.host.terminate(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

/// A source that never returns from `poll`: stopped by the call timeout each
/// time, its worker replaced, until the restart budget is spent and the host
/// ends with the fatal code, naming the call and the limit.
#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_in_poll_is_stopped_until_the_connector_gives_up() {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/probe", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "source.toml",
        &broker.url(),
        "looping-source",
        &format!("{FAST_RETRY}[sandbox]\ncall_timeout_ms = 300\n\n[probe]\nloop_in_poll = true\n"),
    );
    let host = Host::start(&guest("probe-source"), &config, &[]);
    let status = tokio::task::spawn_blocking(move || host.wait(DEADLINE))
        .await
        .unwrap();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(FATAL), "log:\n{log}");
    let stopped =
        "in poll: the guest did not return within [sandbox] call_timeout_ms = 300 and was stopped";
    let stops = log
        .lines()
        .filter(|l| l.contains("guest trapped; the instance is discarded") && l.contains("poll"))
        .count();
    // The first worker and one per restart.
    assert_eq!(stops, 3, "log:\n{log}");
    let report = final_report(&log);
    assert!(
        report.starts_with(
            "danube-host: connector looping-source: the worker died 3 times in a row, last: "
        ) && report.ends_with(stopped),
        "{report}"
    );
}

/// A guest that traps on poisoned records: its worker is replaced and the
/// batch replayed; after `max_retries` worker deaths the batch holding the
/// poisoned record goes to the dead-letter topic and the connector carries
/// on. Every record is either written or on the dead-letter topic (a healthy
/// sink taking over the subscription afterwards finds nothing left), and a
/// poisoned record is never written.
async fn trap_on_poisoned_records(name: &str, count: u64, poisons: &[u64]) {
    let topic = format!("/default/{name}");
    let dlq = format!("/default/{name}-dlq");
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(&topic, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let probe_file = out.join("probe.jsonl");

    let config = write_config(
        dir.path(),
        "probe.toml",
        &broker.url(),
        name,
        &format!(
            "{FAST_RETRY}[processing]\nbatch_size = 5\n\n[dead_letter]\ntopic = \"{dlq}\"\n\n[sandbox]\ndirs = [\"{out}\"]\n\n[probe]\ntopic = \"{topic}\"\ntrap_in_batch_on = \"poison\"\nwrite_to = \"{file}\"\n",
            out = out.display(),
            file = probe_file.display()
        ),
    );
    let probe = Host::start(&guest("probe-connector"), &config, &[]);
    wait_subscribed(&broker, std::slice::from_ref(&topic), "probe", &probe).await;
    produce(&broker, &topic, count, poisons).await;

    // The trap is reported with the guest's own panic message, and the worker
    // replaced.
    assert!(
        wait_until_async(Duration::from_secs(20), || {
            let log = probe.log();
            log.contains("the guest panicked: ")
                && log.contains(BATCH_PANIC_MESSAGE)
                && log.contains("worker died; restarting it")
        })
        .await,
        "log:\n{}",
        probe.log()
    );
    // The host settles every record itself and keeps running.
    let settled = wait_until_async(Duration::from_secs(30), || {
        broker.subscription(&topic, "probe").unwrap().acked == count
            || probe.log().contains("danube-host: connector ")
    })
    .await;
    let probe_log = probe.log();
    assert!(
        settled && !probe_log.contains("danube-host: connector "),
        "{:?}; log:\n{probe_log}",
        broker.subscription(&topic, "probe")
    );
    let deaths = probe_log.matches("worker died; restarting it").count();
    drop(probe);

    // Nothing is left for a healthy sink taking over the subscription.
    let by_sink = take_over(&broker, dir.path(), &topic, &dlq, count).await;

    let by_probe: Vec<u64> = common::json_lines(&probe_file)
        .iter()
        .map(|v| v["i"].as_u64().unwrap())
        .collect();
    let dead = numbers_on(&broker, &dlq);
    for poison in poisons {
        assert!(
            !by_probe.contains(poison) && !by_sink.contains(poison),
            "the poisoned record {poison} was written"
        );
        assert!(
            dead.contains(poison),
            "the poisoned record {poison} is not on {dlq}"
        );
    }
    let all = tally(by_probe.iter().chain(&by_sink).chain(&dead).copied());
    let missing: Vec<u64> = (0..count).filter(|i| !all.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost records: {missing:?}");
    let duplicates: usize = all.values().map(|n| n - 1).sum();
    let mut dead_sorted = dead.clone();
    dead_sorted.sort();
    println!(
        "{name}: {deaths} worker deaths; written by the probe {}, by a healthy sink afterwards {}, dead-lettered {} {dead_sorted:?}; duplicates {duplicates}",
        by_probe.len(),
        by_sink.len(),
        dead.len(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_on_a_poisoned_record_loses_nothing() {
    trap_on_poisoned_records("poisoned", 40, &[17]).await;
}

/// A second poisoned record soon after the first: each batch gets its own
/// `max_retries` deaths before it is dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn two_poisoned_records_are_both_dead_lettered() {
    trap_on_poisoned_records("twice-poisoned", 60, &[12, 41]).await;
}

/// A sink that attaches to a subscription it was not given (another
/// connector's, taking its messages) and a source that publishes to a topic
/// outside its patterns are stopped as configuration errors before anything
/// is created on the broker; within the rules the same connectors run.
#[tokio::test(flavor = "multi_thread")]
async fn topics_and_subscriptions_outside_the_sandbox_are_refused() {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/probe", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, module: &str, rest: &str| {
        let config = write_config(
            dir.path(),
            &format!("{name}.toml"),
            &broker.url(),
            name,
            rest,
        );
        let host = Host::start(&guest(module), &config, &[]);
        (host, config.with_extension("log"))
    };
    let ends = |(host, log): (Host, PathBuf)| async move {
        let status = tokio::task::spawn_blocking(move || host.wait(DEADLINE))
            .await
            .unwrap();
        let log = std::fs::read_to_string(log).unwrap();
        (status.code().unwrap_or(-1), final_report(&log).to_string())
    };

    let (code, report) = ends(run(
        "thief",
        "probe-connector",
        "[sandbox]\nsubscriptions = [\"thief-*\"]\n\n[probe]\nsubscription = \"pg-sink\"\n",
    ))
    .await;
    assert_eq!(code, CONFIG, "{report}");
    assert!(
        report.contains(
            "subscription \"pg-sink\", which [sandbox] subscriptions = [\"thief-*\"] does not allow"
        ),
        "{report}"
    );
    assert!(broker.subscription("/default/probe", "pg-sink").is_none());

    let (code, report) = ends(run(
        "spray",
        "probe-source",
        "[sandbox]\ntopics = [\"/default/spray-*\"]\n\n[probe]\ntopic = \"/default/probe\"\n",
    ))
    .await;
    assert_eq!(code, CONFIG, "{report}");
    assert!(
        report.contains("publish to \"/default/probe\", which [sandbox] topics = [\"/default/spray-*\"] does not allow"),
        "{report}"
    );

    // The control: within its rules the sink subscribes.
    let (host, _log) = run(
        "allowed",
        "probe-connector",
        "[sandbox]\ntopics = [\"/default/*\"]\nsubscriptions = [\"probe\"]\n\n[probe]\n",
    );
    common::wait_subscribed(&broker, &["/default/probe".to_string()], "probe", &host).await;
    assert!(host.terminate(DEADLINE).success());
}

/// A name lookup is a way out (a guest could send what it read as
/// `<data>.attacker.example` to any DNS server on the path), so a guest may
/// look up the host names of its `[sandbox] allow` entries alone: `localhost`
/// is refused to a guest allowed `127.0.0.1:PORT`, though the address it
/// names is allowed, and resolves for one allowed `localhost:PORT`.
#[test]
fn only_names_in_the_allow_list_are_looked_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = |allow: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (code, report, log) = run_probe_open(
            dir.path(),
            &format!(
                "{FAST_RETRY}[sandbox]\nallow = [\"{allow}\"]\n\n[probe]\nconnect_to = \"localhost:{port}\"\n"
            ),
        );
        assert_eq!(code, CONFIG, "log:\n{log}");
        (report, log)
    };
    let (report, log) = connect(&format!("127.0.0.1:{port}"));
    assert!(
        report.contains(&format!("connect localhost:{port}: cannot resolve")),
        "{report}"
    );
    assert!(
        log.contains("name lookup denied: not a host of [sandbox] allow or lookup")
            && log.contains("localhost"),
        "no log line names the refused lookup:\n{log}"
    );
    let (report, _) = connect(&format!("localhost:{port}"));
    assert!(
        report.ends_with(&format!("connect localhost:{port}: ok")),
        "an allowed name did not resolve: {report}"
    );
    drop(listener);
}
