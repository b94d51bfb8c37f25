//! Directory mode through the real `danube-host` binary: connectors added,
//! replaced and removed while records flow (on the test broker and on the
//! real Danube broker); broken replacements, ten connectors side by side,
//! hostile neighbours and SIGHUP (on the test broker, which these tests ask
//! for what it stored).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::directory::{changed_module, place};
use common::{
    Host, broker_table, committed_seq, endpoint, guest, health_detail, http_get, tap_seqs,
    wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::{BrokerKind, Tap, TestBroker, take_turn};

const DEADLINE: Duration = Duration::from_secs(60);

/// A test's directories: `mods` is the one the host runs; configurations are
/// written in `staging` (which also holds the state) and placed from there.
struct Layout {
    _root: tempfile::TempDir,
    root: PathBuf,
    mods: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().to_path_buf();
        let mods = path.join("mods");
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::create_dir_all(path.join("staging")).unwrap();
        Layout {
            _root: root,
            root: path,
            mods,
        }
    }

    /// A connector configuration's text (root keys, state outside `mods`).
    fn config(&self, broker_url: &str, connector: &str, rest: &str) -> String {
        let path = write_config(
            &self.root.join("staging"),
            &format!("{connector}.toml"),
            broker_url,
            connector,
            rest,
        );
        std::fs::read_to_string(path).unwrap()
    }

    fn state_file(&self, connector: &str) -> PathBuf {
        self.root
            .join("staging/state")
            .join(format!("{connector}.state.json"))
    }

    /// Places `NAME.wasm` and `NAME.toml` into `dir`, module first.
    fn add(&self, dir: &Path, name: &str, module: impl AsRef<[u8]>, config: &str) {
        place(dir, &format!("{name}.wasm"), module);
        place(dir, &format!("{name}.toml"), config);
    }

    fn start(&self) -> Host {
        self.start_with(&[])
    }

    fn start_with(&self, args: &[&str]) -> Host {
        let host = Host::start_directory_with(&self.mods, &self.root.join("host.log"), args);
        assert!(
            common::wait_until(DEADLINE, || endpoint(&host).is_some()),
            "no endpoint; log:\n{}",
            host.log()
        );
        host
    }
}

fn datagen_config(topic: &str, extra: &str) -> String {
    format!("[processing]\nmax_in_flight = 200\n\n[datagen]\ntopics = [\"{topic}\"]\n{extra}")
}

fn file_sink_config(out: &Path, topic: &str, subscription: &str, batch_size: u32) -> String {
    format!(
        "[processing]\nbatch_size = {batch_size}\n\n{file_sink}",
        file_sink = common::file_sink_tables(out, topic, subscription)
    )
}

/// The `seq` of every record in a file-sink output file, in file order.
fn written_seqs(out_file: &Path) -> Vec<u64> {
    common::json_lines(out_file)
        .iter()
        .map(|line| line["payload"]["seq"].as_u64().expect("seq in payload"))
        .collect()
}

/// The `seq` of every message the broker holds on `topic`.
fn published_seqs(broker: &TestBroker, topic: &str) -> Vec<u64> {
    broker
        .messages(topic)
        .iter()
        .map(|m| m.attributes["seq"].parse().expect("seq attribute"))
        .collect()
}

/// How often each value occurs beyond its first time.
fn duplicates(seqs: &[u64]) -> usize {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for seq in seqs {
        *counts.entry(*seq).or_default() += 1;
    }
    counts.values().map(|n| n - 1).sum()
}

/// Waits until `count()` grew by `more` from now: records keep flowing.
async fn keeps_flowing(what: &str, host: &Host, more: usize, count: impl Fn() -> usize) {
    let from = count();
    assert!(
        wait_until_async(DEADLINE, || count() >= from + more).await,
        "{what}: stuck at {} (from {from}); log:\n{}",
        count(),
        host.log()
    );
}

async fn logged(host: &Host, needle: &str, times: usize) {
    assert!(
        wait_until_async(DEADLINE, || host.log_count(needle) >= times).await,
        "expected {times} log line(s) with {needle:?}; log:\n{}",
        host.log()
    );
}

/// Replaces `name`'s module with other bytes, then its configuration with
/// `config`, each time waiting for the swap and for records to flow again.
async fn replace_module_then_config(
    layout: &Layout,
    host: &Host,
    name: &str,
    module: &Path,
    config: String,
    flowing: impl Fn() -> usize,
) {
    let started = format!("{name}: starting");
    let starts = host.log_count(&started);
    place(
        &layout.mods,
        &format!("{name}.wasm"),
        changed_module(module, "v2"),
    );
    logged(host, &started, starts + 1).await;
    keeps_flowing(
        &format!("after {name}'s module changed"),
        host,
        300,
        &flowing,
    )
    .await;
    place(&layout.mods, &format!("{name}.toml"), config);
    logged(host, &started, starts + 2).await;
    keeps_flowing(
        &format!("after {name}'s configuration changed"),
        host,
        300,
        &flowing,
    )
    .await;
}

/// Waits until `connector` drained and stopped: it leaves `/health` then.
async fn gone_from_health(host: &Host, connector: &str) {
    let gone = wait_until_async(DEADLINE, || {
        !health(host).1["connectors"]
            .as_object()
            .unwrap()
            .contains_key(connector)
    })
    .await;
    assert!(gone, "{connector} still runs; log:\n{}", host.log());
}

fn health(host: &Host) -> (u16, serde_json::Value) {
    let (status, body) = http_get(&endpoint(host).unwrap(), "/health");
    (status, serde_json::from_str(&body).unwrap())
}

danube_testkit::on_both_brokers! {
    async fn connectors_added_replaced_and_removed_while_records_flow_lose_nothing(
        broker: Broker
    ) {
        const TOPIC: &str = "/default/dir-flow";
        const SINK_BATCH: u32 = 50;
        // The source's rate before and after its configuration is replaced.
        // The real broker loses what a reliable subscription falls 256
        // behind on, and each sink swap leaves its subscription without a
        // consumer for a moment: paced so that such a moment stays short of
        // 256 records.
        let (rate, new_rate) = match broker.kind() {
            BrokerKind::Test => (400, 600),
            BrokerKind::Real => (150, 200),
        };
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        // What the source published, counted by a consumer of its own.
        let tap = Tap::start(&broker.url(), TOPIC).await.unwrap();
        let layout = Layout::new();
        let (out, audit_out) = (layout.root.join("out"), layout.root.join("audit-out"));
        let out_file = out.join("records.jsonl");
        let host = layout.start();
        let failure = |host: &Host| {
            format!("sink {}\nlog:\n{}", health_detail(host), host.log())
        };

        // Added: a sink, then a source, into the running host.
        let sink_module = guest("file-sink");
        let source_module = guest("datagen-source");
        let sink_config = |batch| {
            layout.config(
                &broker.url(),
                "sink",
                &format!(
                    "{}{}",
                    broker_table(&broker),
                    file_sink_config(&out, TOPIC, "main", batch)
                ),
            )
        };
        layout.add(
            &layout.mods,
            "sink",
            std::fs::read(&sink_module).unwrap(),
            &sink_config(SINK_BATCH),
        );
        wait_subscribed(&broker, &[TOPIC.to_string()], "main", &host).await;
        let source_config = |rate| {
            layout.config(
                &broker.url(),
                "source",
                &datagen_config(TOPIC, &format!("rate = {rate}\n")),
            )
        };
        layout.add(
            &layout.mods,
            "source",
            std::fs::read(&source_module).unwrap(),
            &source_config(rate),
        );
        let written = || written_seqs(&out_file).len();
        keeps_flowing("first records", &host, 300, written).await;

        // Replaced: the source's module (other bytes), then its configuration.
        replace_module_then_config(
            &layout,
            &host,
            "source",
            &source_module,
            source_config(new_rate),
            written,
        )
        .await;

        // Added then removed: a second sink on its own subscription.
        layout.add(
            &layout.mods,
            "audit",
            std::fs::read(&sink_module).unwrap(),
            &layout.config(
                &broker.url(),
                "audit",
                &format!(
                    "{}{}",
                    broker_table(&broker),
                    file_sink_config(&audit_out, TOPIC, "audit", 20)
                ),
            ),
        );
        wait_subscribed(&broker, &[TOPIC.to_string()], "audit", &host).await;
        let audit_file = audit_out.join("records.jsonl");
        keeps_flowing("audit sink", &host, 200, || written_seqs(&audit_file).len()).await;
        std::fs::remove_file(layout.mods.join("audit.wasm")).unwrap();
        gone_from_health(&host, "audit").await;
        let metrics = http_get(&endpoint(&host).unwrap(), "/metrics").1;
        assert!(
            !metrics.contains("connector=\"audit\"") && metrics.contains("connector=\"sink\""),
            "a removed connector's series stay, or the others went:\n{metrics}"
        );
        let audit = written_seqs(&audit_file);
        let audit_dups = duplicates(&audit);
        println!(
            "audit sink: wrote {} records ({audit_dups} duplicates)",
            audit.len()
        );
        // Only the test broker can say who is connected and what exactly a
        // subscription acknowledged.
        if let Some(test) = broker.as_test() {
            let unsubscribed = wait_until_async(DEADLINE, || {
                test.subscription(TOPIC, "audit")
                    .is_some_and(|s| s.consumers == 0)
            })
            .await;
            assert!(unsubscribed, "the audit sink's consumer is still connected");
            // It drained: everything it acknowledged is written, and
            // everything it wrote was acknowledged.
            let audit_sub = test.subscription(TOPIC, "audit").unwrap();
            println!("broker counts {} acked by the audit sink", audit_sub.acked);
            assert_eq!(audit_sub.acked as usize, audit.len() - audit_dups);
        }
        keeps_flowing("after the audit sink was removed", &host, 300, written).await;

        // Replaced: the sink's module, then its configuration.
        replace_module_then_config(
            &layout,
            &host,
            "sink",
            &sink_module,
            sink_config(SINK_BATCH * 2),
            written,
        )
        .await;

        // Removed: the source drains, committing the last record the broker
        // took (once the tap has it too).
        std::fs::remove_file(layout.mods.join("source.toml")).unwrap();
        gone_from_health(&host, "source").await;
        let last_published = || tap_seqs(&tap).keys().next_back().copied();
        let mut last = None;
        assert!(
            wait_until_async(DEADLINE, || {
                last = last_published();
                last.is_some() && committed_seq(&layout.state_file("source")) == last
            })
            .await,
            "the removed source committed {:?}, the broker holds up to {last:?}; log:\n{}",
            committed_seq(&layout.state_file("source")),
            host.log()
        );
        let last = last.unwrap();
        // The sink catches up with every record ever published.
        let everything = wait_until_async(DEADLINE, || {
            let mut seqs = written_seqs(&out_file);
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len() as u64 == last + 1
        })
        .await;
        assert!(
            everything,
            "the sink did not write 0..={last}; {}",
            failure(&host)
        );
        if let Err(error) = broker
            .wait_acked(&[TOPIC.to_string()], "main", Duration::from_secs(30))
            .await
        {
            panic!("{error:#}; {}", failure(&host));
        }
        let status = host.terminate(DEADLINE);
        assert!(status.success(), "exit status {status:?}");

        let published = tap_seqs(&tap);
        let source_dups: usize = published.values().map(|n| n - 1).sum();
        let written = written_seqs(&out_file);
        let sink_dups = duplicates(&written);
        println!(
            "{:?} broker, flow: {} records (seq 0..={last}); broker holds {} ({source_dups} duplicates), sink wrote {} ({sink_dups} duplicates)",
            broker.kind(),
            last + 1,
            published.len() + source_dups,
            written.len()
        );
        assert_eq!(
            published.len(),
            last as usize + 1,
            "no gap in what was published"
        );
        assert!(
            audit.iter().all(|s| published.contains_key(s)),
            "the audit sink wrote records the broker never had"
        );
        // Two source swaps, each re-sending at most what was in flight
        // (max_in_flight = 200); two sink swaps, each re-writing at most its
        // batches in flight (2 of 100).
        assert!(source_dups <= 2 * 200, "{source_dups} duplicates published");
        assert!(
            sink_dups <= source_dups + 2 * 2 * 100,
            "{sink_dups} duplicates written"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_is_rejected_and_the_running_connector_keeps_going() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/dir-broken";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let layout = Layout::new();
    let host = layout.start();
    let module = std::fs::read(guest("datagen-source")).unwrap();
    let good_config = layout.config(&broker.url(), "gen", &datagen_config(TOPIC, "rate = 300\n"));
    layout.add(&layout.mods, "gen", &module, &good_config);
    let published = || broker.messages(TOPIC).len();
    keeps_flowing("first records", &host, 100, published).await;

    // A configuration with a key the connector does not know.
    let misspelt = layout.config(&broker.url(), "gen", &datagen_config(TOPIC, "rat = 300\n"));
    place(&layout.mods, "gen.toml", &misspelt);
    logged(&host, "gen: rejected", 1).await;
    let rejection = host
        .log()
        .lines()
        .find(|l| l.contains("gen: rejected"))
        .unwrap()
        .to_string();
    println!("{rejection}");
    for phrase in [
        "gen.toml",
        "unknown key `datagen.rat`",
        "did you mean `datagen.rate`",
        "the running version keeps running",
    ] {
        assert!(
            rejection.contains(phrase),
            "{phrase:?} missing from: {rejection}"
        );
    }
    keeps_flowing("after the bad configuration", &host, 100, published).await;
    place(&layout.mods, "gen.toml", &good_config);
    logged(&host, "gen: back to the version that runs", 1).await;

    // A module of another world (a component exporting no connector).
    place(&layout.mods, "gen.wasm", b"\0asm\x0d\0\x01\0");
    logged(&host, "gen: rejected", 2).await;
    let rejection = host
        .log()
        .lines()
        .filter(|l| l.contains("gen: rejected"))
        .nth(1)
        .unwrap()
        .to_string();
    println!("{rejection}");
    for phrase in ["gen.wasm", "exports no connector interface"] {
        assert!(
            rejection.contains(phrase),
            "{phrase:?} missing from: {rejection}"
        );
    }
    keeps_flowing("after the wrong-world module", &host, 100, published).await;

    // A module still being copied (written in place, cut short) is waited on.
    std::fs::write(layout.mods.join("gen.wasm"), &module[..module.len() / 2]).unwrap();
    logged(&host, "gen: the module ends early", 1).await;
    keeps_flowing("while a copy is in progress", &host, 100, published).await;
    std::fs::write(layout.mods.join("gen.wasm"), &module).unwrap();
    logged(&host, "gen: back to the version that runs", 2).await;

    assert_eq!(host.log_count("gen: rejected"), 2, "log:\n{}", host.log());
    assert_eq!(
        host.log_count("gen: starting"),
        1,
        "the first version ran throughout"
    );
    let (code, health) = health(&host);
    assert_eq!(
        (code, &health["connectors"]["gen"]["status"]),
        (200, &serde_json::json!("healthy"))
    );
    keeps_flowing("at the end", &host, 100, published).await;
    assert!(host.terminate(DEADLINE).success());
    let seqs = published_seqs(&broker, TOPIC);
    assert_eq!(duplicates(&seqs), 0, "the source never restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_connectors_run_side_by_side_and_a_failed_one_does_not_stop_them() {
    let _turn = take_turn(BrokerKind::Test).await;
    const COUNT: u64 = 300;
    let broker = TestBroker::start().await.unwrap();
    let layout = Layout::new();
    let module = std::fs::read(guest("datagen-source")).unwrap();
    let topic = |i: usize| format!("/default/dir-ten-{i}");
    for i in 0..10 {
        broker.create_topic(&topic(i), 0, true).unwrap();
        let config = layout.config(
            &broker.url(),
            &format!("gen{i}"),
            &datagen_config(&topic(i), &format!("count = {COUNT}\n")),
        );
        layout.add(&layout.mods, &format!("gen{i}"), &module, &config);
    }
    // Passes validation (the schema takes any string) but its guest
    // refuses the value when it opens.
    let refused = layout.config(&broker.url(), "refused", &datagen_config("not-a-topic", ""));
    layout.add(&layout.mods, "refused", &module, &refused);
    let host = layout.start();

    for i in 0..10 {
        let all = wait_until_async(DEADLINE, || {
            let mut seqs = published_seqs(&broker, &topic(i));
            seqs.sort_unstable();
            seqs.dedup();
            seqs == (0..COUNT).collect::<Vec<_>>()
        })
        .await;
        assert!(
            all,
            "gen{i} published {} of {COUNT}; log:\n{}",
            broker.messages(&topic(i)).len(),
            host.log()
        );
    }
    let settled = wait_until_async(DEADLINE, || {
        let connectors = health(&host).1["connectors"].clone();
        connectors["refused"]["status"] == "unhealthy"
            && (0..10).all(|i| connectors[format!("gen{i}")]["status"] == "healthy")
    })
    .await;
    let (code, report) = health(&host);
    println!("/health: {report}");
    assert!(settled, "/health: {report}; log:\n{}", host.log());
    assert_eq!(report["connectors"].as_object().unwrap().len(), 11);
    assert_eq!(
        (code, &report["status"]),
        (503, &serde_json::json!("unhealthy"))
    );
    let metrics = http_get(&endpoint(&host).unwrap(), "/metrics").1;
    for i in 0..10 {
        let line = format!(
            "connector_messages_sent_total{{connector=\"gen{i}\",topic=\"{}\"}} {COUNT}",
            topic(i)
        );
        assert!(metrics.contains(&line), "{line} missing from /metrics");
    }
    assert!(host.terminate(DEADLINE).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rescans_a_change_the_watcher_cannot_see() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    let layout = Layout::new();
    let module = std::fs::read(guest("datagen-source")).unwrap();
    let topic = |name: &str| format!("/default/dir-hup-{name}");
    let config = |name: &str| {
        layout.config(
            &broker.url(),
            name,
            &datagen_config(&topic(name), "rate = 200\n"),
        )
    };
    for name in ["a", "b", "c"] {
        broker.create_topic(&topic(name), 0, true).unwrap();
    }
    // `mods` is a symlink to a release directory, re-pointed atomically on
    // deploy: the watcher follows the directory it resolved at start.
    let (release1, release2) = (layout.root.join("release-1"), layout.root.join("release-2"));
    std::fs::create_dir_all(&release1).unwrap();
    std::fs::create_dir_all(&release2).unwrap();
    std::fs::remove_dir(&layout.mods).unwrap();
    std::os::unix::fs::symlink(&release1, &layout.mods).unwrap();
    layout.add(&release1, "a", &module, &config("a"));
    let host = layout.start();
    let published = |name: &str| broker.messages(&topic(name)).len();
    keeps_flowing("a", &host, 50, || published("a")).await;

    layout.add(&release2, "a", &module, &config("a"));
    layout.add(&release2, "b", &module, &config("b"));
    let next = layout.root.join("mods.next");
    std::os::unix::fs::symlink(&release2, &next).unwrap();
    std::fs::rename(&next, &layout.mods).unwrap();
    // Well past the settling time, b has not started: nothing saw the change.
    keeps_flowing("a while b is not seen", &host, 200, || published("a")).await;
    assert_eq!((published("b"), host.log_count("b: starting")), (0, 0));

    host.signal(libc::SIGHUP);
    keeps_flowing("b after SIGHUP", &host, 50, || published("b")).await;
    assert_eq!(
        host.log_count("a: starting"),
        1,
        "a is the same pair in both releases"
    );
    // The new directory is watched: c starts without a signal.
    layout.add(&release2, "c", &module, &config("c"));
    keeps_flowing("c", &host, 50, || published("c")).await;
    assert_eq!(host.log_count("SIGHUP"), 1);
    assert!(host.terminate(DEADLINE).success());
}

/// Hostile guests in the same host as a working flow: a sink that loops in
/// `process-batch` and a source that loops in `poll` are stopped again and
/// again (the second until it is given up on), while datagen → file-sink
/// beside them in the same process keeps flowing and stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_leave_their_neighbours_in_the_same_host_flowing() {
    let _turn = take_turn(BrokerKind::Test).await;
    const FLOW: &str = "/default/dir-neighbours";
    const LOOPING: &str = "/default/dir-looping";
    const TIMEOUT: &str = "[retry]\nmax_retries = 2\nretry_backoff_ms = 50\nmax_backoff_ms = 100\n\n\
                           [sandbox]\ncall_timeout_ms = 300\n";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(FLOW, 0, true).unwrap();
    broker.create_topic(LOOPING, 0, true).unwrap();
    broker.create_topic("/default/probe", 0, true).unwrap();
    let layout = Layout::new();
    let out = layout.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out_file = out.join("records.jsonl");
    let sink = layout.config(
        &broker.url(),
        "writer",
        &file_sink_config(&out, FLOW, "writer", 50),
    );
    layout.add(
        &layout.mods,
        "writer",
        std::fs::read(guest("file-sink")).unwrap(),
        &sink,
    );
    let source = layout.config(&broker.url(), "gen", &datagen_config(FLOW, "rate = 500\n"));
    layout.add(
        &layout.mods,
        "gen",
        std::fs::read(guest("datagen-source")).unwrap(),
        &source,
    );
    let looper = layout.config(
        &broker.url(),
        "looper",
        &format!("{TIMEOUT}\n[probe]\ntopic = \"{LOOPING}\"\nloop_in_batch = true\n"),
    );
    layout.add(
        &layout.mods,
        "looper",
        std::fs::read(guest("probe-connector")).unwrap(),
        &looper,
    );
    let poller = layout.config(
        &broker.url(),
        "poller",
        &format!("{TIMEOUT}\n[probe]\nloop_in_poll = true\n"),
    );
    layout.add(
        &layout.mods,
        "poller",
        std::fs::read(guest("probe-source")).unwrap(),
        &poller,
    );
    let host = layout.start();
    wait_subscribed(&broker, &[LOOPING.to_string()], "probe", &host).await;
    common::probe::produce(&broker, LOOPING, 5, &[]).await;

    // Both hostile guests are stopped by the call timeout, more than once.
    let stopped = "did not return within [sandbox] call_timeout_ms = 300 and was stopped";
    let trapped = |call: &str| {
        host.log()
            .lines()
            .filter(|l| l.contains(stopped) && l.contains(call))
            .count()
    };
    assert!(
        wait_until_async(DEADLINE, || trapped("process_batch") >= 2
            && trapped("poll") >= 2)
        .await,
        "the looping guests were not stopped repeatedly; log:\n{}",
        host.log()
    );
    // Meanwhile, and after, the neighbours flow.
    keeps_flowing("file-sink beside hostile guests", &host, 500, || {
        written_seqs(&out_file).len()
    })
    .await;
    let settled = wait_until_async(DEADLINE, || {
        let connectors = health(&host).1["connectors"].clone();
        connectors["poller"]["status"] == "unhealthy"
            && connectors["gen"]["status"] == "healthy"
            && connectors["writer"]["status"] == "healthy"
    })
    .await;
    let (_, report) = health(&host);
    assert!(settled, "/health: {report}; log:\n{}", host.log());
    keeps_flowing("file-sink after a neighbour gave up", &host, 500, || {
        written_seqs(&out_file).len()
    })
    .await;
    assert!(host.terminate(DEADLINE).success());
    let seqs = written_seqs(&out_file);
    let published: std::collections::BTreeSet<u64> =
        published_seqs(&broker, FLOW).into_iter().collect();
    assert!(
        seqs.iter().all(|s| published.contains(s)),
        "the file holds records the broker never had"
    );
    println!(
        "{} records written beside hostile guests, {} duplicates",
        seqs.len(),
        duplicates(&seqs)
    );
}

/// The copies the workers load live in a directory of this host's own: a
/// fresh one under a random name, readable by this user alone, and gone
/// when the host stops. A directory another local user could predict
/// (`/tmp/danube-host-<pid>`) and create first would let them replace the
/// module a restarted worker loads.
#[tokio::test(flavor = "multi_thread")]
async fn module_copies_live_in_a_private_directory_removed_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    broker
        .create_topic("/default/dir-private", 0, true)
        .unwrap();
    let layout = Layout::new();
    let module = std::fs::read(guest("datagen-source")).unwrap();
    let config = layout.config(
        &broker.url(),
        "private",
        &datagen_config("/default/dir-private", "rate = 100\n"),
    );
    layout.add(&layout.mods, "private", &module, &config);
    let host = layout.start();
    logged(&host, "module loaded", 1).await;
    let copy = host
        .log()
        .lines()
        .find(|l| l.contains("module loaded"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("module=")))
        .map(std::path::PathBuf::from)
        .unwrap();
    let dir = copy.parent().unwrap().to_path_buf();
    assert_ne!(
        dir.file_name().unwrap().to_string_lossy(),
        format!("danube-host-{}", host.pid()),
        "a predictable directory"
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
    assert!(host.terminate(DEADLINE).success());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// `danube-host dev` on a datagen source: a watched source file changes and
/// the build (a copy of the module into place) runs, then the connector is
/// started again; a configuration that does not validate is reported while
/// the running one keeps publishing; the mended one starts again. Every
/// restart resumes from the last commit: each record is published once.
/// The records are printed as they flow.
#[tokio::test(flavor = "multi_thread")]
async fn dev_rebuilds_and_restarts_on_changes_resuming_from_the_last_commit() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/dev";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let module = dir.path().join("dev.wasm");
    std::fs::copy(guest("datagen-source"), &module).unwrap();
    let tables = |rate: &str| datagen_config(TOPIC, &format!("rate = {rate}\n"));
    let config = write_config(dir.path(), "dev.toml", &broker.url(), "dev", &tables("200"));
    let build = format!(
        "cp {} {}",
        guest("datagen-source").display(),
        module.display()
    );
    let watch = src.to_str().unwrap();
    let host = Host::start_dev(&module, &config, &["--build", &build, "--watch", watch]);
    let published = |n: usize| {
        let broker = &broker;
        move || broker.messages(TOPIC).len() >= n
    };
    let said = |host: &Host, line: &str, n: usize| host.log().matches(line).count() >= n;

    assert!(
        wait_until_async(DEADLINE, published(100)).await,
        "{}",
        host.log()
    );
    // The records as they flow, a sample of them: topic, attributes, payload.
    let shown = wait_until_async(DEADLINE, || {
        said(&host, r#"  -> /default/dev seq="#, 5) && said(&host, r#" {"seq":"#, 5)
    })
    .await;
    assert!(shown, "{}", host.log());
    std::fs::write(src.join("lib.rs"), "// changed").unwrap();
    let rebuilt = wait_until_async(DEADLINE, || {
        said(&host, "building: cp ", 1) && said(&host, "restarted dev", 1)
    })
    .await;
    assert!(rebuilt, "{}", host.log());

    // A key the connector does not have: reported, and it keeps publishing.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}rtae = 1\n")).unwrap();
    let refused = wait_until_async(DEADLINE, || {
        said(&host, "unknown key `datagen.rtae`", 1)
            && said(&host, "dev keeps running as it was", 1)
    })
    .await;
    assert!(refused, "{}", host.log());
    let before = broker.messages(TOPIC).len();
    assert!(
        wait_until_async(DEADLINE, published(before + 100)).await,
        "{}",
        host.log()
    );

    std::fs::write(&config, good.replace("rate = 200", "rate = 300")).unwrap();
    assert!(
        wait_until_async(DEADLINE, || said(&host, "restarted dev", 2)).await,
        "{}",
        host.log()
    );
    let before = broker.messages(TOPIC).len();
    assert!(
        wait_until_async(DEADLINE, published(before + 100)).await,
        "{}",
        host.log()
    );
    assert!(host.terminate(DEADLINE).success());

    let seqs = published_seqs(&broker, TOPIC);
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "each record once, none skipped");
}

/// An ingress connector replaced in place (module, then configuration)
/// listens on the same port again: the old version closes its listener
/// before the new one starts, and every request answered 200 is stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_ingress_replaced_in_place_listens_on_its_port_again() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/dir-hooks";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let layout = Layout::new();
    let host = layout.start();
    let port = common::server::free_port();
    let config = |extra: &str| {
        layout.config(
            &broker.url(),
            "hook",
            &format!(
                "[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
                 [[endpoints]]\npath = \"/in\"\ndanube_topic = \"{TOPIC}\"\nreliable_dispatch = true\n{extra}"
            ),
        )
    };
    let module = guest("webhook-source");
    layout.add(
        &layout.mods,
        "hook",
        std::fs::read(&module).unwrap(),
        &config(""),
    );
    // Posts until a 200 comes back: how a sender rides out a swap.
    let answered = || async {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let deadline = std::time::Instant::now() + DEADLINE;
            while std::time::Instant::now() < deadline {
                let sent = agent.post(format!("http://127.0.0.1:{port}/in")).send("{}");
                if sent.is_ok_and(|r| r.status() == 200) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
        .await
        .unwrap()
    };
    assert!(
        answered().await,
        "the first version never answered; log:\n{}",
        host.log()
    );
    let started = "hook: starting";
    place(&layout.mods, "hook.wasm", changed_module(&module, "v2"));
    logged(&host, started, 2).await;
    assert!(
        answered().await,
        "the new module never answered; log:\n{}",
        host.log()
    );
    place(
        &layout.mods,
        "hook.toml",
        config("forward_headers = [\"x-event\"]"),
    );
    logged(&host, started, 3).await;
    assert!(
        answered().await,
        "the new configuration never answered; log:\n{}",
        host.log()
    );
    assert_eq!(host.log_count("cannot listen"), 0, "log:\n{}", host.log());
    assert!(
        broker
            .wait_for(DEADLINE, |b| b.messages(TOPIC).len() >= 3)
            .await
    );
    assert!(host.terminate(DEADLINE).success());
}

/// The directory decides which connectors run and with which files; the
/// management API whether each is paused. A connector paused through the
/// API and then replaced by a change of its file stays paused; its files
/// removed, it is gone from the API; put back, it starts as it was left
/// (paused), and resumed it publishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_through_the_api_outlives_a_change_of_the_directory() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/dir-api";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let layout = Layout::new();
    let host = layout.start_with(&["--api"]);
    let addr = endpoint(&host).unwrap();
    let module = std::fs::read(guest("datagen-source")).unwrap();
    let config = layout.config(&broker.url(), "gen", &datagen_config(TOPIC, "rate = 200\n"));
    layout.add(&layout.mods, "gen", &module, &config);
    let entry = || {
        let (status, body) = common::http_get(&addr, "/connectors/gen");
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let published = || broker.messages(TOPIC).len();
    keeps_flowing("first records", &host, 50, published).await;

    let (status, _) = common::http_call(&addr, "POST", "/connectors/gen/pause", &[]);
    assert_eq!(status, 200);
    let changed = layout.config(&broker.url(), "gen", &datagen_config(TOPIC, "rate = 150\n"));
    place(&layout.mods, "gen.toml", &changed);
    let replaced = wait_until_async(DEADLINE, || {
        let (status, entry) = entry();
        status == 200
            && entry["config"]["connector"]["rate"] == 150
            && entry["state"] == "paused"
            && entry["world"] == "source"
    })
    .await;
    assert!(replaced, "{:?}; log:\n{}", entry(), host.log());

    std::fs::remove_file(layout.mods.join("gen.toml")).unwrap();
    assert!(
        wait_until_async(DEADLINE, || entry().0 == 404).await,
        "{:?}",
        entry()
    );
    place(&layout.mods, "gen.toml", &changed);
    let back = wait_until_async(DEADLINE, || {
        let (status, entry) = entry();
        status == 200 && entry["state"] == "paused" && entry["world"] == "source"
    })
    .await;
    assert!(back, "{:?}; log:\n{}", entry(), host.log());
    let (status, _) = common::http_call(&addr, "POST", "/connectors/gen/resume", &[]);
    assert_eq!(status, 200);
    keeps_flowing("resumed", &host, 50, published).await;
    assert!(host.terminate(DEADLINE).success());
}
