//! Fault injection: worker processes killed mid-flow are replaced, and the
//! records are counted — nothing missing, duplicates only from batches in
//! flight. And the other way round: signals meant for the host (a terminal's
//! Ctrl-C, a service manager's stop) leave its worker alone, so that the host
//! can drain.

mod common;

use std::time::Duration;

use common::{
    Host, committed_seq, guest, kill_worker, seqs_in_file, wait_subscribed, wait_until_async,
    worker_pid, write_config,
};
use danube_testkit::{Broker, BrokerKind, Tap, TestBroker, take_turn};

#[tokio::test(flavor = "multi_thread")]
async fn killed_workers_are_replaced_and_no_record_is_lost() {
    let _turn = take_turn(BrokerKind::Test).await;
    const COUNT: u64 = 6_000;
    const TOPIC: &str = "/default/supervised";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_file = out.join("records.jsonl");

    let sink_config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "supervised-sink",
        &format!(
            "[retry]\nretry_backoff_ms = 50\n\n[processing]\nbatch_size = 100\n\n{file_sink}",
            file_sink = common::file_sink_tables(&out, TOPIC, "s")
        ),
    );
    let sink = Host::start(&guest("file-sink"), &sink_config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;
    // A paced source, so the kills land mid-flow.
    let source_config = write_config(
        dir.path(),
        "source.toml",
        &broker.url(),
        "supervised-source",
        &format!(
            "[retry]\nretry_backoff_ms = 50\n\n[processing]\nbatch_size = 100\nmax_in_flight = 500\n\n[datagen]\ntopics = [\"{TOPIC}\"]\ncount = {COUNT}\nrate = 1000\n"
        ),
    );
    let source = Host::start(&guest("datagen-source"), &source_config, &[]);

    // Kill each side's worker twice while records flow.
    for (round, fraction) in [(0, 5), (1, 2)] {
        let threshold = COUNT as usize / fraction;
        assert!(
            wait_until_async(Duration::from_secs(60), || seqs_in_file(&out_file).len()
                >= threshold)
            .await,
            "round {round}: stuck at {} records; sink log:\n{}\nsource log:\n{}",
            seqs_in_file(&out_file).len(),
            sink.log(),
            source.log()
        );
        let old_sink = kill_worker(&sink).await;
        let old_source = kill_worker(&source).await;
        // New workers take their place.
        assert!(
            wait_until_async(Duration::from_secs(30), || {
                worker_pid(sink.pid()).is_some_and(|p| p != old_sink)
                    && worker_pid(source.pid()).is_some_and(|p| p != old_source)
            })
            .await,
            "workers were not restarted; sink log:\n{}\nsource log:\n{}",
            sink.log(),
            source.log()
        );
    }

    assert!(
        wait_until_async(Duration::from_secs(90), || seqs_in_file(&out_file).len()
            as u64
            == COUNT)
        .await,
        "{} of {COUNT} distinct records written; sink log:\n{}\nsource log:\n{}",
        seqs_in_file(&out_file).len(),
        sink.log(),
        source.log()
    );
    assert!(source.terminate(Duration::from_secs(30)).success());
    assert!(sink.terminate(Duration::from_secs(30)).success());

    let seen = seqs_in_file(&out_file);
    assert!(
        (0..COUNT).all(|seq| seen.contains_key(&seq)),
        "a record is missing"
    );
    // Duplicates come only from what was in flight at a kill: per kill at
    // most the source's uncommitted records (max_in_flight 500 plus a poll of
    // 100) or the sink's two batches of 100; four kills.
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(duplicates <= 4 * 600, "{duplicates} duplicates");
    let log = std::fs::read_to_string(dir.path().join("sink.log")).unwrap();
    assert!(log.contains("worker died; restarting it"), "{log}");
}

/// An upgrade in place replaces the `danube-host` file under a running host:
/// a worker restarted after that still starts, and is the running version.
/// The worker is killed while idle: it is replaced at once, not when the
/// next record comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_restarts_after_the_binary_on_disk_was_replaced() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/upgraded";
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_file = out.join("records.jsonl");
    let binary = dir.path().join("danube-host");
    std::fs::copy(common::host_bin(), &binary).unwrap();
    let config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "upgraded-sink",
        &format!(
            "[retry]\nretry_backoff_ms = 50\n\n{file_sink}",
            file_sink = common::file_sink_tables(&out, TOPIC, "s")
        ),
    );
    let sink = Host::start_binary(&binary, &guest("file-sink"), &config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "s", &sink).await;
    let producer = common::reliable_producer(&broker.url(), TOPIC).await;
    let send = async |seqs: std::ops::Range<u64>| {
        for seq in seqs {
            let payload = format!(r#"{{"seq":{seq}}}"#).into_bytes();
            producer.send(payload, None).await.unwrap();
        }
    };
    let written = |count: usize| seqs_in_file(&out_file).len() >= count;
    send(0..10).await;
    assert!(
        wait_until_async(Duration::from_secs(30), || written(10)).await,
        "log:\n{}",
        sink.log()
    );

    // The file on disk goes; what takes its place is not a program.
    std::fs::remove_file(&binary).unwrap();
    std::fs::write(&binary, "#!/bin/false\n").unwrap();
    let old = kill_worker(&sink).await;
    let mut new = None;
    assert!(
        wait_until_async(Duration::from_secs(30), || {
            new = worker_pid(sink.pid()).filter(|p| *p != old);
            new.is_some()
        })
        .await,
        "no new worker; log:\n{}",
        sink.log()
    );
    // Named for top and ps, though started through /proc/self/exe. It names
    // itself: until then (between fork and exec, and just after exec) the
    // child shows as the host's thread, then as `exe`.
    let comm_file = format!("/proc/{}/comm", new.unwrap());
    let mut comm = String::new();
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            comm = std::fs::read_to_string(&comm_file).unwrap_or_default();
            comm.trim() == "danube-worker"
        })
        .await,
        "the new worker is called {comm:?}"
    );
    send(10..20).await;
    assert!(
        wait_until_async(Duration::from_secs(30), || written(20)).await,
        "log:\n{}",
        sink.log()
    );
    assert!(sink.terminate(Duration::from_secs(30)).success());
}

/// How a stop signal reaches a host and its worker.
#[derive(Clone, Copy)]
enum Delivery {
    /// To the host's process group: Ctrl-C in a terminal, `timeout`,
    /// `tini -g`.
    Group,
    /// To each of its processes, the worker first: systemd's default
    /// `KillMode=control-group`, which signals every process in the unit's
    /// cgroup whatever its process group.
    EveryProcess,
}

danube_testkit::on_both_brokers! {
    async fn sigterm_to_the_hosts_process_group_drains_and_exits_0(broker: Broker) {
        stopped_by_a_signal(broker, "group-term", libc::SIGTERM, Delivery::Group).await;
    }

    async fn sigint_to_the_hosts_process_group_drains_and_exits_0(broker: Broker) {
        stopped_by_a_signal(broker, "group-int", libc::SIGINT, Delivery::Group).await;
    }

    async fn sigterm_to_every_process_of_the_host_drains_and_exits_0(broker: Broker) {
        stopped_by_a_signal(broker, "every-term", libc::SIGTERM, Delivery::EveryProcess).await;
    }
}

/// A datagen source, its host leading a process group of its own, stopped
/// mid-flow by `signal`: the worker ignores the signals meant for the host and
/// sits in a process group of its own, so the host drains through it and exits
/// 0, with no worker death or restart, and the last commit covers every
/// record the broker stored.
async fn stopped_by_a_signal(broker: Broker, name: &str, signal: i32, delivery: Delivery) {
    let topic = format!("/default/{name}");
    broker.create_topic(&topic, 0, true).await.unwrap();
    let tap = Tap::start(&broker.url(), &topic).await.unwrap();
    // The real broker drops what a subscription (the tap's) falls 256 behind.
    let rate = match broker.kind() {
        BrokerKind::Test => 2000,
        BrokerKind::Real => 500,
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{name}.toml"),
        &broker.url(),
        name,
        &format!(
            "[processing]\nbatch_size = 100\nmax_in_flight = 500\n\n[datagen]\ntopics = [\"{topic}\"]\nrate = {rate}\n"
        ),
    );
    let state_file = dir.path().join(format!("state/{name}.state.json"));
    let log_file = config.with_extension("log");
    let host = Host::start_group_leader(&guest("datagen-source"), &config, &[]);
    assert!(
        tap.wait_for(500, Duration::from_secs(30)).await
            && wait_until_async(Duration::from_secs(10), || committed_seq(&state_file)
                .is_some())
            .await,
        "not flowing; log:\n{}",
        host.log()
    );

    let worker = worker_pid(host.pid()).expect("the host has a worker");
    let ignored = ignored_signals(worker);
    for (number, signal) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
        // In the terminal's background, it must not stop on writing logs.
        (libc::SIGTTOU, "SIGTTOU"),
    ] {
        assert!(
            ignored & 1 << (number - 1) != 0,
            "the worker does not ignore {signal} (SigIgn {ignored:#x})"
        );
    }
    assert_eq!(process_group(host.pid()), host.pid());
    assert_ne!(
        process_group(worker),
        host.pid(),
        "the worker is in the host's process group"
    );

    match delivery {
        Delivery::Group => host.signal_group(signal),
        Delivery::EveryProcess => {
            // SAFETY: kill(2) on processes this test started.
            unsafe {
                libc::kill(worker, signal);
                libc::kill(host.pid(), signal);
            }
        }
    }
    let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    for sign in [
        "worker died",
        "restarting",
        "worker socket failed",
        "worker process exited",
    ] {
        assert!(!log.contains(sign), "{sign:?} in the log:\n{log}");
    }
    assert!(log.contains("stopped cleanly"), "{log}");
    // Every record the broker acknowledged reaches the tap; the last one
    // may take a moment after the host exited.
    let committed = committed_seq(&state_file).expect("a commit");
    tap.wait_for(committed as usize + 1, Duration::from_secs(10))
        .await;
    let stored = tap.stored().len() as u64;
    assert_eq!(
        committed + 1,
        stored,
        "a drained stop commits everything the broker stored; log:\n{log}"
    );
}

/// The signals a process ignores: `SigIgn` in /proc/PID/status, bit N-1 for
/// signal N.
fn ignored_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("a SigIgn line");
    u64::from_str_radix(mask.trim(), 16).unwrap()
}

/// A process's process group: field 5 of /proc/PID/stat, counted after the
/// command name (which may hold spaces and parentheses).
fn process_group(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after_name) = stat.rsplit_once(')').unwrap();
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}
