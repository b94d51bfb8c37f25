//! Fault injection through running hosts: a source host stopped or killed
//! mid-flow and started again, and workers killed over and over during a
//! long run, each on the test broker and on the real Danube broker; the test
//! broker restarted and paused mid-flow. Each test counts the records: none
//! missing, duplicates printed and bounded by what was in flight.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Host, broker_table, committed_seq, guest, health_detail, kill_worker, seqs_in_file, tap_seqs,
    wait_subscribed, wait_until_async, worker_pid, write_config,
};
use danube_testkit::{Broker, BrokerConfig, BrokerKind, Tap, TestBroker, take_turn};

/// Retries that outlast every fault below: a broker away for seconds, a
/// worker killed again and again.
const PATIENT_RETRY: &str =
    "[retry]\nmax_retries = 100\nretry_backoff_ms = 20\nmax_backoff_ms = 300\n\n";

/// Sequence numbers in datagen payloads on a broker topic, with counts.
fn seqs_in_broker(broker: &TestBroker, topic: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for m in broker.messages(topic) {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *seen.entry(v["seq"].as_u64().unwrap()).or_default() += 1;
    }
    seen
}

/// Lines in a file, counted without parsing them (cheap enough to poll).
fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Missing sequence numbers below `count`, and duplicates in all.
fn missing_and_duplicates<'a>(
    seen: impl IntoIterator<Item = (&'a u64, &'a usize)> + Clone,
    count: u64,
) -> (Vec<u64>, usize) {
    let present: std::collections::HashSet<u64> =
        seen.clone().into_iter().map(|(s, _)| *s).collect();
    let missing = (0..count).filter(|s| !present.contains(s)).collect();
    let duplicates = seen.into_iter().map(|(_, n)| n - 1).sum();
    (missing, duplicates)
}

/// The `/health` status a host reports (`healthy`, `degraded`, ...), read
/// from the address it logged for its observability endpoints.
fn health(host: &Host) -> String {
    use std::io::{Read, Write};
    let Some(addr) = host
        .log()
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .map(str::to_string)
    else {
        return "no endpoint logged".into();
    };
    let Ok(mut stream) = std::net::TcpStream::connect(&addr) else {
        return "unreachable".into();
    };
    let _ = write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("unreadable: {response}"))
}

/// Stops a host with SIGTERM off the async runtime; asserts a clean exit.
async fn terminate(host: Host) {
    let log = host.log();
    let status = tokio::task::spawn_blocking(move || host.terminate(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
}

/// A datagen source writing `count` records at `rate`/s to `topic`.
fn source_config(
    dir: &Path,
    broker_url: &str,
    name: &str,
    topic: &str,
    count: u64,
    rate: u64,
    processing: &str,
) -> PathBuf {
    write_config(
        dir,
        &format!("{name}.toml"),
        broker_url,
        name,
        &format!(
            "{PATIENT_RETRY}[processing]\n{processing}\n\n[datagen]\ntopics = [\"{topic}\"]\ncount = {count}\nrate = {rate}\n"
        ),
    )
}

/// A mid-flow source run: `MID_FLOW_COUNT` records, batches of
/// `MID_FLOW_BATCH`, at most `MID_FLOW_IN_FLIGHT` unacknowledged.
const MID_FLOW_COUNT: u64 = 4_000;
const MID_FLOW_IN_FLIGHT: u64 = 500;
const MID_FLOW_BATCH: u64 = 100;
/// Records on the broker before the source is stopped.
const MID_FLOW_STOP_AT: usize = 1_500;

/// A datagen source host on its own topic and state directory, to be stopped
/// or killed mid-flow and started again; a tap counts what reached the
/// broker.
struct MidFlow {
    broker: Broker,
    tap: Tap,
    topic: String,
    config: PathBuf,
    state_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl MidFlow {
    /// Starts the source and lets it run until 1,500 records are stored.
    async fn start(broker: Broker, name: &str) -> (MidFlow, Host) {
        let topic = format!("/default/{name}");
        broker.create_topic(&topic, 0, true).await.unwrap();
        let tap = Tap::start(&broker.url(), &topic).await.unwrap();
        // The real broker loses what a reliable subscription (the tap's)
        // falls 256 behind on: paced well within what the tap keeps up with.
        let rate = match broker.kind() {
            BrokerKind::Test => 2_000,
            BrokerKind::Real => 400,
        };
        let dir = tempfile::tempdir().unwrap();
        let config = source_config(
            dir.path(),
            &broker.url(),
            name,
            &topic,
            MID_FLOW_COUNT,
            rate,
            &format!("batch_size = {MID_FLOW_BATCH}\nmax_in_flight = {MID_FLOW_IN_FLIGHT}"),
        );
        let state_file = dir.path().join(format!("state/{name}.state.json"));
        let host = Host::start(&guest("datagen-source"), &config, &[]);
        assert!(
            tap.wait_for(MID_FLOW_STOP_AT, Duration::from_secs(30))
                .await,
            "{} records reached the broker; log:\n{}",
            tap.count(),
            host.log()
        );
        let run = MidFlow {
            broker,
            tap,
            topic,
            config,
            state_file,
            _dir: dir,
        };
        (run, host)
    }

    /// Starts the source again and checks that it resumes right after
    /// `committed`, that every record reaches the broker, and that duplicates
    /// stay within what can be in flight at a stop.
    async fn resume_and_count(&self, committed: u64, how_stopped: &str) {
        let count = MID_FLOW_COUNT;
        let second = Host::start(&guest("datagen-source"), &self.config, &[]);
        assert!(
            wait_until_async(Duration::from_secs(60), || tap_seqs(&self.tap).len() as u64
                == count)
            .await,
            "{} of {count} distinct records on {}; log:\n{}",
            tap_seqs(&self.tap).len(),
            self.topic,
            second.log()
        );
        let resumed_at = format!("datagen starting at seq {}", committed + 1);
        assert!(
            second.log().contains(&resumed_at),
            "no {resumed_at:?} in:\n{}",
            second.log()
        );
        terminate(second).await;

        let seen = tap_seqs(&self.tap);
        let (missing, duplicates) = missing_and_duplicates(&seen, count);
        println!(
            "{:?} broker, {how_stopped} and restart: {} records, {duplicates} duplicates",
            self.broker.kind(),
            seen.len()
        );
        assert!(missing.is_empty(), "missing: {missing:?}");
        assert!(
            duplicates as u64 <= MID_FLOW_IN_FLIGHT + MID_FLOW_BATCH,
            "{duplicates} duplicates"
        );
    }
}

danube_testkit::on_both_brokers! {
    /// Stopped mid-flow (SIGTERM: drain, commit, exit 0) and started again
    /// with the same state directory, a source resumes after its last commit:
    /// no sequence number is missing from the topic, and a drained stop
    /// leaves nothing in flight to duplicate.
    async fn source_stopped_mid_flow_resumes_from_its_last_commit(broker: Broker) {
        let (run, first) = MidFlow::start(broker, "resumed").await;
        terminate(first).await;
        let committed = committed_seq(&run.state_file).expect("a commit before the stop");
        // A drained stop commits everything the broker acknowledged: the
        // tap gets exactly that, and nothing more arrives.
        assert!(
            run.tap.wait_for(committed as usize + 1, Duration::from_secs(10)).await,
            "committed seq {committed}, only {} records reached the broker",
            run.tap.count()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stored_at_stop = tap_seqs(&run.tap).len() as u64;
        println!("stopped with {stored_at_stop} records stored, committed seq {committed}");
        assert!(
            stored_at_stop < MID_FLOW_COUNT,
            "the stop came too late to be mid-flow"
        );
        assert_eq!(
            committed + 1,
            stored_at_stop,
            "a drained stop commits everything the broker acknowledged"
        );

        run.resume_and_count(committed, "SIGTERM").await;
    }

    /// Killed outright (SIGKILL of the host and so of its worker), a source
    /// restarted on the same state directory resumes after its last commit:
    /// the duplicates are at most the records that were in flight.
    async fn source_host_killed_mid_flow_resumes_with_duplicates_only_from_in_flight(
        broker: Broker
    ) {
        let (run, first) = MidFlow::start(broker, "killed").await;
        // Dropping the handle SIGKILLs the host; the worker follows it
        // (PR_SET_PDEATHSIG).
        drop(first);
        let committed = committed_seq(&run.state_file).expect("a commit before the kill");
        println!(
            "killed with {} records stored, committed seq {committed}",
            run.tap.count()
        );

        run.resume_and_count(committed, "SIGKILL").await;
    }
}

/// The broker crashes and comes back, then stalls and resumes, while
/// datagen → file-sink runs: both hosts ride it out and every record arrives.
/// Test broker only: the real broker cannot pause, and cannot restart on its
/// data directory (a new one renumbers every topic).
#[tokio::test(flavor = "multi_thread")]
async fn hosts_ride_out_a_broker_restart_and_a_pause() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/weathered";
    const COUNT: u64 = 6_000;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_file = out.join("records.jsonl");
    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "weathered-sink",
        &format!(
            "{PATIENT_RETRY}[processing]\nbatch_size = 100\npublish_timeout_ms = 1000\n\n{file_sink}",
            file_sink = common::file_sink_tables(&out, TOPIC, "s")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;
    let source = Host::start(
        &guest("datagen-source"),
        &source_config(
            dir.path(),
            &broker.url(),
            "weathered-source",
            TOPIC,
            COUNT,
            1_000,
            "batch_size = 100\nmax_in_flight = 500\npublish_timeout_ms = 1000",
        ),
        &[],
    );
    let logs = |sink: &Host, source: &Host| {
        format!("sink log:\n{}\nsource log:\n{}", sink.log(), source.log())
    };

    let reach = |n: usize| {
        let out_file = out_file.clone();
        move || line_count(&out_file) >= n
    };
    assert!(
        wait_until_async(Duration::from_secs(30), reach(1_500)).await,
        "{}",
        logs(&sink, &source)
    );
    broker.stop().await;
    let down_at = line_count(&out_file);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart().await.unwrap();
    println!("broker down for 2 s at {down_at} records written");

    assert!(
        wait_until_async(Duration::from_secs(30), reach(down_at + 1_500)).await,
        "no progress after the restart; {}",
        logs(&sink, &source)
    );
    broker.set_paused(true);
    let paused_at = line_count(&out_file);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.set_paused(false);
    println!("broker paused for 2 s at {paused_at} records written");

    let all = wait_until_async(Duration::from_secs(45), || {
        seqs_in_file(&out_file).len() as u64 == COUNT
    })
    .await;
    assert!(
        all,
        "{} of {COUNT} distinct records written; {}",
        seqs_in_file(&out_file).len(),
        logs(&sink, &source)
    );
    // Both report themselves healthy again.
    let recovered = wait_until_async(Duration::from_secs(10), || {
        health(&source) == "healthy" && health(&sink) == "healthy"
    })
    .await;
    assert!(
        recovered,
        "after the faults: source {}, sink {}",
        health(&source),
        health(&sink)
    );
    // How much of it the hosts had to retry themselves (the client also
    // reconnects on its own, so this may be 0).
    let retries = source.log().matches("retrying operation=").count()
        + sink.log().matches("retrying").count();
    terminate(source).await;
    terminate(sink).await;

    let in_broker = seqs_in_broker(&broker, TOPIC);
    let (missing, broker_duplicates) = missing_and_duplicates(&in_broker, COUNT);
    assert!(missing.is_empty(), "missing in the broker: {missing:?}");
    let written = seqs_in_file(&out_file);
    let (missing, file_duplicates) = missing_and_duplicates(&written, COUNT);
    assert!(missing.is_empty(), "missing in the file: {missing:?}");
    println!(
        "broker restart and pause: {} records, {retries} retries logged by the hosts; duplicates: {broker_duplicates} published twice, {file_duplicates} written twice",
        written.len()
    );
}

/// How hard [`repeated_worker_kills`] hits: `count` records at `rate`/s
/// (0: unpaced), both workers killed every `every` records, with the
/// broker's unacked window `window` (a sink kill rewrites at most that).
struct Battering {
    count: u64,
    every: u64,
    rate: u64,
    window: u64,
}

/// Records from datagen to file-sink while both workers are SIGKILLed every
/// `plan.every` records: the supervisors replace them and nothing is lost;
/// duplicates come only from what each kill caught in flight.
async fn repeated_worker_kills(broker: Broker, plan: Battering) {
    const TOPIC: &str = "/default/battered";
    const MAX_IN_FLIGHT: u64 = 2_000;
    const BATCH: u64 = 500;
    let Battering {
        count,
        every,
        rate,
        window,
    } = plan;
    broker.create_topic(TOPIC, 0, true).await.unwrap();
    // What the source published, duplicates included.
    let tap = Tap::start(&broker.url(), TOPIC).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_file = out.join("records.jsonl");
    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "battered-sink",
        &format!(
            "{PATIENT_RETRY}{broker}[processing]\nbatch_size = {BATCH}\n\n{file_sink}",
            broker = broker_table(&broker),
            file_sink = common::file_sink_tables(&out, TOPIC, "s")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;
    let source = Host::start(
        &guest("datagen-source"),
        &source_config(
            dir.path(),
            &broker.url(),
            "battered-source",
            TOPIC,
            count,
            rate,
            &format!(
                "batch_size = {BATCH}\nmax_in_flight = {MAX_IN_FLIGHT}\nproducers_per_topic = 8"
            ),
        ),
        &[],
    );
    let started = Instant::now();
    let logs = |sink: &Host, source: &Host| {
        format!(
            "sink {}\nsink log:\n{}\nsource log:\n{}",
            health_detail(sink),
            sink.log(),
            source.log()
        )
    };

    let mut kills = 0;
    for threshold in (every..count).step_by(every as usize) {
        let reached = wait_until_async(Duration::from_secs(30), || {
            line_count(&out_file) as u64 >= threshold
        })
        .await;
        assert!(
            reached,
            "stuck at {} records after {kills} kills; {}",
            line_count(&out_file),
            logs(&sink, &source)
        );
        let old_sink = kill_worker(&sink).await;
        let old_source = kill_worker(&source).await;
        kills += 2;
        assert!(
            wait_until_async(Duration::from_secs(20), || {
                worker_pid(sink.pid()).is_some_and(|p| p != old_sink)
                    && worker_pid(source.pid()).is_some_and(|p| p != old_source)
            })
            .await,
            "workers were not replaced; {}",
            logs(&sink, &source)
        );
    }

    let all = wait_until_async(Duration::from_secs(45), || {
        line_count(&out_file) as u64 >= count && seqs_in_file(&out_file).len() as u64 == count
    })
    .await;
    assert!(
        all,
        "{} of {count} distinct records written after {kills} kills; {}",
        seqs_in_file(&out_file).len(),
        logs(&sink, &source)
    );
    let elapsed = started.elapsed();
    terminate(source).await;
    terminate(sink).await;

    let written = seqs_in_file(&out_file);
    let (missing, duplicates) = missing_and_duplicates(&written, count);
    assert!(missing.is_empty(), "missing: {missing:?}");
    let (_, published_twice) = missing_and_duplicates(&tap_seqs(&tap), count);
    println!(
        "{:?} broker: {count} records, {kills} worker kills, {elapsed:?}: {duplicates} duplicates written ({published_twice} published twice by the source)",
        broker.kind()
    );
    // Per source kill at most the uncommitted records (max_in_flight plus a
    // poll); per sink kill at most what it held unacknowledged, the
    // broker's window.
    let bound = (kills as u64 / 2) * (MAX_IN_FLIGHT + BATCH + window);
    assert!(
        duplicates as u64 <= bound,
        "{duplicates} duplicates (bound {bound})"
    );
}

/// [`repeated_worker_kills`] on both brokers. Not through
/// `on_both_brokers!`: the test broker runs with a wider unacked window
/// than the default 10, so that the sink's batches fill up and 50,000
/// unpaced records fit in the time. The real broker (window 10) is paced,
/// since it loses what a subscription falls 256 behind on, so it gets fewer
/// records (the same number of kills per record).
mod fifty_thousand_records_survive_repeated_worker_kills {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn test_broker() {
        const WINDOW: u64 = 2_000;
        let _turn = take_turn(BrokerKind::Test).await;
        let broker = TestBroker::start_with(BrokerConfig {
            max_unacked_messages: WINDOW as usize,
            ..BrokerConfig::default()
        })
        .await
        .unwrap();
        let plan = Battering {
            count: 50_000,
            every: 5_000,
            rate: 0,
            window: WINDOW,
        };
        repeated_worker_kills(Broker::Test(broker), plan).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    #[cfg_attr(
        not(real_broker),
        ignore = "needs the real Danube broker: set DANUBE_BROKER_BIN (README: Testing against the real broker)"
    )]
    async fn real_broker() {
        let _turn = take_turn(BrokerKind::Real).await;
        let broker = Broker::start(BrokerKind::Real).await.unwrap();
        let plan = Battering {
            count: 10_000,
            every: 1_000,
            rate: 500,
            window: 10,
        };
        repeated_worker_kills(broker, plan).await;
    }
}

/// A sink on a flowing topic meets `fault`, which returns once it is over:
/// records must flow again and the sink report itself healthy. Returns the
/// sink's log.
async fn sink_recovers_from(name: &str, fault: impl AsyncFnOnce(&TestBroker, &Host)) -> String {
    let topic = format!("/default/{name}");
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(&topic, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        &format!("{name}-sink"),
        &format!(
            "{PATIENT_RETRY}[processing]\npublish_timeout_ms = 1000\n\n{file_sink}",
            file_sink = common::file_sink_tables(&out, &topic, "s")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
    wait_subscribed(&broker, std::slice::from_ref(&topic), "s", &sink).await;
    let source = Host::start(
        &guest("datagen-source"),
        &source_config(
            dir.path(),
            &broker.url(),
            &format!("{name}-source"),
            &topic,
            0,
            500,
            "publish_timeout_ms = 1000",
        ),
        &[],
    );
    let out_file = out.join("records.jsonl");
    assert!(wait_until_async(Duration::from_secs(30), || line_count(&out_file) > 200).await);
    fault(&broker, &sink).await;
    let before = line_count(&out_file);
    assert!(
        wait_until_async(Duration::from_secs(30), || line_count(&out_file)
            > before + 500)
        .await,
        "records did not flow again; sink log:\n{}",
        sink.log()
    );
    assert!(
        wait_until_async(Duration::from_secs(10), || health(&sink) == "healthy").await,
        "records flow, yet the sink stays {}; log:\n{}",
        health(&sink),
        sink.log()
    );
    let log = sink.log();
    terminate(source).await;
    terminate(sink).await;
    log
}

/// After the broker came back and acknowledgements went through again, a sink
/// reports itself healthy. Test broker only: the real broker cannot restart
/// on its data directory.
#[tokio::test(flavor = "multi_thread")]
async fn sink_health_recovers_after_a_broker_restart() {
    let _turn = take_turn(BrokerKind::Test).await;
    sink_recovers_from("restarted", async |broker, sink| {
        broker.stop().await;
        assert!(
            wait_until_async(Duration::from_secs(20), || health(sink) == "degraded").await,
            "the sink stayed {} with the broker down",
            health(sink)
        );
        broker.restart().await.unwrap();
    })
    .await;
}

/// danube-client gives up a message stream on some errors (one the broker
/// refuses, one cancelled by a restart): the sink subscribes again, as often
/// as it takes. Test broker only: refusing receives on demand and cutting
/// every connection are its fault injection.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_subscribes_again_when_the_client_gives_up_its_stream() {
    let _turn = take_turn(BrokerKind::Test).await;
    const REFUSALS: usize = 3;
    let log = sink_recovers_from("refused", async |broker, _| {
        broker.refuse_receives(REFUSALS, tonic::Code::PermissionDenied);
        broker.drop_connections();
    })
    .await;
    let renewals = log
        .matches("the client ended the message stream; subscribing again")
        .count();
    assert!(renewals >= REFUSALS, "{renewals} renewals; log:\n{log}");
}

/// `state.put` returns once the value is on disk, and fails when it cannot
/// be written: a sink whose state directory became unwritable mid-flow stops
/// on its next put, naming the cause, instead of going on with a position
/// that would be lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_put_that_cannot_reach_the_disk_fails_the_call() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/durable", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = common::probe::ProbeSink::start(
        &broker,
        dir.path(),
        "durable",
        "/default/durable",
        [
            "[processing]\nbatch_size = 1\n",
            "",
            "state_per_batch = true",
        ],
    )
    .await;
    common::probe::produce(&broker, "/default/durable", 1, &[]).await;
    let state = dir.path().join("state");
    let stored = wait_until_async(Duration::from_secs(30), || {
        std::fs::read_to_string(state.join("durable.state.json"))
            .is_ok_and(|t| t.contains("batches"))
    })
    .await;
    assert!(
        stored,
        "the first batch's put never reached the disk:\n{}",
        probe.host.log()
    );
    // The directory becomes a file: nothing can be written there any more.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, "not a directory").unwrap();
    common::probe::produce(&broker, "/default/durable", 1, &[]).await;
    let common::probe::ProbeSink { host, log_file, .. } = probe;
    let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(log_file).unwrap();
    assert_eq!(status.code(), Some(4), "log:\n{log}");
    let report = common::probe::final_report(&log);
    assert!(
        report.contains("the host could not persist the state")
            && report.contains("state directory"),
        "{report}"
    );
}
