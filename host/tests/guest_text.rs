//! What a guest says reaches the host bounded and escaped: a hostile guest
//! cannot grow the supervisor's memory through metric names, amplify a huge
//! health detail on `/health`, flood the log, forge log lines or terminal
//! escapes, or hand back more records than it was asked for. The guests are
//! the probe fixtures (host/tests/probe, host/tests/probe-source).

mod common;

use std::time::Duration;

use common::probe::{ProbeSink, final_report, unused_url};
use common::{Host, guest, http_get, wait_until, write_config};
use danube_testkit::TestBroker;

/// A probe sink named `name` on a fresh test broker, subscribed to `topic`,
/// with its `[sandbox]` and `[probe]` tables; the broker and the directory
/// live as long as the caller keeps them.
async fn probe_sink(
    name: &str,
    topic: &str,
    tables: [&str; 3],
) -> (TestBroker, tempfile::TempDir, ProbeSink) {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(topic, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = ProbeSink::start(&broker, dir.path(), name, topic, tables).await;
    (broker, dir, probe)
}

/// The supervisor's peak resident memory, from /proc.
fn peak_rss_mb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// 200 counters named by distinct 1 MiB strings: each is refused (too long)
/// and warned about once, but what the supervisor keeps and logs of each is
/// a bounded prefix, so its memory stays near its baseline instead of
/// growing by the 200 MiB the names weigh.
#[tokio::test(flavor = "multi_thread")]
async fn refused_metric_names_do_not_grow_the_supervisor() {
    let (_broker, _dir, probe) = probe_sink(
        "metric-names",
        "/default/names",
        [
            "",
            "memory_mb = 64",
            "metric_names = 200\nmetric_name_mb = 1",
        ],
    )
    .await;
    // Metric frames precede open's reply, so all were handled by now.
    let log = probe.host.log();
    let refused = log
        .lines()
        .filter(|l| l.contains("connector metric refused"))
        .count();
    assert_eq!(refused, 200, "log:\n{}", &log[..log.len().min(4000)]);
    let peak = peak_rss_mb(probe.host.pid());
    println!("supervisor peak RSS after 200 names of 1 MiB: {peak} MiB");
    assert!(peak < 100, "the supervisor peaked at {peak} MiB");
    assert!(
        log.len() < 1 << 20,
        "the host logged {} bytes for 200 refused names",
        log.len()
    );
    assert!(log.contains("more bytes cut]"), "names were not cut");
}

/// A health detail of 8 MiB is served cut to a few KiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_health_detail_is_served_bounded() {
    let (_broker, _dir, probe) = probe_sink(
        "huge-health",
        "/default/huge-health",
        ["", "", "health_detail_mb = 8"],
    )
    .await;
    let mut body = String::new();
    let cut = wait_until(Duration::from_secs(30), || {
        if let Some(addr) = common::endpoint(&probe.host) {
            body = http_get(&addr, "/health").1;
        }
        body.contains("more bytes cut]")
    });
    assert!(
        cut,
        "/health never showed the cut detail: {}",
        &body[..body.len().min(2000)]
    );
    assert!(body.len() < 64 * 1024, "/health is {} bytes", body.len());
}

/// 5,000 lines logged at once: a second's budget of them is written, the
/// rest dropped and counted, and the count is reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_flood_is_cut_to_the_budget_and_counted() {
    let (_broker, _dir, probe) = probe_sink(
        "log-flood",
        "/default/log-flood",
        ["", "", "log_flood = 5000"],
    )
    .await;
    let log = probe.host.log();
    assert!(log.contains("log flood done"), "log:\n{log}");
    let written = log.lines().filter(|l| l.contains("log flood line")).count();
    let dropped: usize = log
        .lines()
        .filter(|l| l.contains("the excess was dropped"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("dropped_lines="))?
                .parse::<usize>()
                .ok()
        })
        .sum();
    println!("flood of 5000: {written} written, {dropped} dropped and counted");
    assert!(written <= 2000, "{written} lines of the flood were written");
    assert_eq!(written + dropped, 5000, "lines lost without a count");
}

/// An error text with a newline, a forged JSON log line and terminal escapes
/// comes out escaped, on one line, in the log and the final report.
#[test]
fn guest_text_cannot_forge_log_lines_or_terminal_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let forged = r#"{"level":"INFO","message":"connector stopped cleanly"}"#;
    let config = write_config(
        dir.path(),
        "probe.toml",
        &unused_url(),
        "forger",
        &format!(
            "[probe]\nconfig_error = {}\n",
            toml::Value::String(format!("bad\n{forged}\u{1b}[2J\u{1b}]0;owned\u{7}"))
        ),
    );
    let host = Host::start(&guest("probe-connector"), &config, &[]);
    let status = host.wait(Duration::from_secs(30));
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(2), "log:\n{log}");
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{7}'),
        "raw escapes in:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line:\n{log}"
    );
    let report = final_report(&log);
    assert!(
        report.contains(r"bad\n{") && report.contains(r"\u{1b}[2J"),
        "{report}"
    );
}

/// Every state put rewrites and syncs the store: 5,000 puts as fast as the
/// guest can are all stored, but at the store's pace of 1,000 a second, so
/// they take at least four seconds (the first second's 1,000 go at once).
#[test]
fn state_writes_are_paced_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "probe.toml",
        &unused_url(),
        "state-writer",
        "[probe]\nstate_puts = 5000\n",
    );
    let host = Host::start(&guest("probe-connector"), &config, &[]);
    let status = host.wait(Duration::from_secs(60));
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(2), "log:\n{log}");
    let report = final_report(&log);
    let millis: u64 = report
        .split_once("refused in ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(report.contains("5000 ok, 0 refused"), "{report}");
    assert!(millis >= 4000, "5000 puts took {millis} ms: {report}");
    println!("{report}");
}

/// A source that breaks the poll's contract: more records than `max` (the
/// bound on the host's in-flight records), or a record with 100 KiB of
/// attributes (metadata the host holds until the broker acknowledges). The
/// host refuses the poll, publishes none of it, and stops the connector with
/// a message naming the fault.
#[tokio::test(flavor = "multi_thread")]
async fn a_poll_breaking_its_contract_is_refused() {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic("/default/overfill", 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, probe, fault) in [
        (
            "overfilling-source",
            "overfill_poll = true",
            "poll returned 51 records when asked for at most 50 (poll's `max`)",
        ),
        (
            "attribute-source",
            "attribute_kb = 100",
            "with 102403 bytes of key and attributes, more than the host's 65536 bytes",
        ),
    ] {
        let config = write_config(
            dir.path(),
            &format!("{name}.toml"),
            &broker.url(),
            name,
            &format!(
                "[retry]\nmax_retries = 1\nretry_backoff_ms = 50\n\n[processing]\nbatch_size = 50\n\n[probe]\ntopic = \"/default/overfill\"\n{probe}\n"
            ),
        );
        let host = Host::start(&guest("probe-source"), &config, &[]);
        let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(30)))
            .await
            .unwrap();
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        assert_eq!(status.code(), Some(4), "log:\n{log}");
        let report = final_report(&log);
        assert!(report.contains(fault), "{report}");
    }
    let published = broker.messages("/default/overfill").len();
    assert_eq!(published, 0, "records of a refused poll were published");
}
