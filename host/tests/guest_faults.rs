//! Guests that misbehave in `open`, run through `danube-host run`: a panic, a
//! peek at the host's environment, an endless loop, a memory hog and a
//! configuration error. Each one must end the host promptly with the
//! documented exit code and one clear final line naming the connector and
//! the cause, never hang it. The guest is the `probe-connector` test fixture
//! (host/tests/probe), steered by its `[probe]` table.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::probe::{final_report, unused_url};
use common::{Host, guest, wait_until_async, write_config};
use danube_testkit::TestBroker;

const CONFIG: i32 = 2;
const FATAL: i32 = 4;

/// Longest any of these faults may take to end the host. Loading a cached
/// module takes milliseconds; the rest is the fault itself.
const DEADLINE: Duration = Duration::from_secs(30);

/// The panic message of the probe's `panic_in_open`.
const PANIC_MESSAGE: &str = "probe panics in open as asked";

/// A dead worker is restarted once, soon: the faults below are deterministic,
/// so the restart fails the same way and the host gives up quickly.
const FAST_RESTART: &str =
    "[retry]\nmax_retries = 1\nretry_backoff_ms = 50\nmax_backoff_ms = 100\n\n";

/// A probe allocating 64 MiB under a 32 MiB cap.
const OVER_MEMORY_MB: &str = "[sandbox]\nmemory_mb = 32\n\n[probe]\nalloc_mb = 64\n";

/// What one run ended with.
struct Ended {
    code: i32,
    elapsed: Duration,
    log: String,
}

impl Ended {
    /// The host's final report.
    fn report(&self) -> &str {
        final_report(&self.log)
    }
}

/// Runs the probe with `rest` (tables after the root keys, after
/// [`FAST_RESTART`]) until it exits by itself within [`DEADLINE`].
fn run_probe(dir: &Path, rest: &str, env: &[(&str, &str)]) -> Ended {
    let rest = format!("{FAST_RESTART}{rest}");
    let config = write_config(dir, "probe.toml", &unused_url(), "probe", &rest);
    let started = Instant::now();
    let host = Host::start(&guest("probe-connector"), &config, env);
    let status = host.wait(DEADLINE);
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    Ended {
        code: status.code().unwrap_or(-1),
        elapsed,
        log,
    }
}

/// Runs the probe with `rest` (as [`run_probe`]) and asserts that it ends
/// with the fatal code and a final report holding every one of `phrases`.
fn run_probe_to_fatal(rest: &str, phrases: &[&str]) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let ended = run_probe(dir.path(), rest, &[]);
    assert_eq!(ended.code, FATAL, "log:\n{}", ended.log);
    let report = ended.report();
    for phrase in phrases {
        assert!(report.contains(phrase), "missing {phrase:?} in: {report}");
    }
    ended
}

#[test]
fn panic_in_open_names_the_connector_and_the_panic_message() {
    run_probe_to_fatal(
        "[probe]\npanic_in_open = true\n",
        &[
            "danube-host: connector probe:",
            "open",
            "the guest panicked",
            PANIC_MESSAGE,
        ],
    );
}

#[test]
fn guest_sees_none_of_the_hosts_environment() {
    let dir = tempfile::tempdir().unwrap();
    // The probe fails `open` with a configuration error telling what it saw.
    let ended = run_probe(
        dir.path(),
        "[probe]\nreport_env = \"SECRET_TOKEN\"\n",
        &[("SECRET_TOKEN", "xyz-secret-4711")],
    );
    assert_eq!(ended.code, CONFIG, "log:\n{}", ended.log);
    let report = ended.report();
    assert!(
        report.contains("env SECRET_TOKEN = <unset>; 0 variables visible"),
        "the guest saw the host's environment: {report}"
    );
    assert!(
        !ended.log.contains("xyz-secret-4711"),
        "the secret reached the log:\n{}",
        ended.log
    );
}

#[test]
fn endless_loop_in_open_is_stopped_by_the_call_timeout() {
    let ended = run_probe_to_fatal(
        "[sandbox]\ncall_timeout_ms = 500\n\n[probe]\nloop_in_open = true\n",
        &[
            "danube-host: connector probe:",
            "open",
            "call_timeout_ms = 500",
        ],
    );
    // It was the timeout that ended it: not sooner, and not much later.
    assert!(
        ended.elapsed >= Duration::from_millis(500),
        "stopped after {:?}, before its time limit",
        ended.elapsed
    );
    assert!(
        ended.elapsed < Duration::from_secs(10),
        "took {:?} to stop a 500 ms call",
        ended.elapsed
    );
}

#[test]
fn allocation_past_memory_mb_is_stopped_naming_the_limit() {
    run_probe_to_fatal(
        OVER_MEMORY_MB,
        &["danube-host: connector probe:", "open", "memory_mb"],
    );
}

#[test]
fn allocation_past_memory_mb_is_stopped() {
    // The part of `allocation_past_memory_mb_is_stopped_naming_the_limit`
    // that holds today: the guest is stopped in `open` with a trap.
    run_probe_to_fatal(
        OVER_MEMORY_MB,
        &["danube-host: connector probe:", "in open: the guest"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allocation_within_memory_mb_is_allowed() {
    // The control for the memory tests: the same allocation under a larger
    // cap opens, subscribes and runs until it is told to stop.
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/probe", 1, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "probe.toml",
        &broker.url(),
        "probe",
        "[sandbox]\nmemory_mb = 128\n\n[probe]\nalloc_mb = 64\ntopic = \"/default/probe\"\n",
    );
    let host = Host::start(&guest("probe-connector"), &config, &[]);
    // Subscribed, or the host reported why it gave up (then fail at once).
    wait_until_async(DEADLINE, || {
        broker.subscription("/default/probe", "probe").is_some()
            || host.log().contains("danube-host: ")
    })
    .await;
    assert!(
        broker.subscription("/default/probe", "probe").is_some(),
        "the probe never subscribed; log:\n{}",
        host.log()
    );
    let log = host.log();
    let status = tokio::task::spawn_blocking(move || host.terminate(DEADLINE))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
}

#[test]
fn config_error_in_open_exits_with_the_configuration_code() {
    let dir = tempfile::tempdir().unwrap();
    let ended = run_probe(
        dir.path(),
        "[probe]\nconfig_error = \"`topic` must name a topic the probe likes\"\n",
        &[],
    );
    assert_eq!(ended.code, CONFIG, "log:\n{}", ended.log);
    let report = ended.report();
    assert!(
        report.starts_with("danube-host: connector probe: ")
            && report.contains("probe.toml")
            && report.ends_with("[probe] `topic` must name a topic the probe likes"),
        "{report}"
    );
}

#[test]
fn fatal_error_in_open_exits_with_the_fatal_code() {
    let dir = tempfile::tempdir().unwrap();
    let ended = run_probe(
        dir.path(),
        "[probe]\nfatal_error = \"the probe gives up\"\n",
        &[],
    );
    assert_eq!(ended.code, FATAL, "log:\n{}", ended.log);
    let report = ended.report();
    assert!(
        report.starts_with("danube-host: connector probe: ")
            && report.ends_with("fatal: the probe gives up"),
        "{report}"
    );
}
