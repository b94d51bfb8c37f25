//! Fault injection: worker processes killed mid-flow are replaced, and the
//! records are counted — nothing missing, duplicates only from batches in
//! flight.

mod common;

use std::time::Duration;

use common::{
    Host, guest, kill_worker, seqs_in_file, wait_subscribed, wait_until_async, worker_pid,
    write_config,
};
use danube_testkit::TestBroker;

#[tokio::test(flavor = "multi_thread")]
async fn killed_workers_are_replaced_and_no_record_is_lost() {
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
