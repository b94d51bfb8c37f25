//! The Python, JavaScript and C examples (examples/<lang>), built with their
//! own toolchains and run by the host against the test broker.
//!
//! Each module is compiled once by `danube-host inspect` into the module
//! cache, as an operator would before a first start: a Python or JavaScript
//! component takes seconds to compile, a cached one milliseconds to load.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::polyglot::example;
use common::{Host, reliable_producer, run_host, target_dir, wait_subscribed, wait_until_async, write_config};
use danube_testkit::TestBroker;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Compiles `module` into the tests' module cache and checks that the
/// compiled artifact is there, so the host starts from it.
fn precompile(module: &Path) {
    let (code, _, stderr) = run_host(&["inspect", module.to_str().unwrap()]);
    assert_eq!(code, 0, "inspect {} failed: {stderr}", module.display());
    let hash: String = Sha256::digest(std::fs::read(module).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = target_dir().join("test-module-cache/danube-host");
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&hash));
    assert!(cached, "no compiled artifact for {} in {}", module.display(), cache.display());
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the sink writes JSON lines"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_json_filter_sink_writes_matching_records_enriched_and_dead_letters_the_rest() {
    const TOPIC: &str = "/default/py-events";
    let module = example("python", "json_filter_sink");
    precompile(&module);
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let out_file = out.join("kept.jsonl");
    let config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "py-sink",
        &format!(
            "[processing]\nbatch_timeout_ms = 200\nlinger_ms = 50\n\n[dead_letter]\ntopic = \"/default/py-dlq\"\n\n[sandbox]\ndirs = [\"{out}\"]\n\n[json_filter]\ntopic = \"{TOPIC}\"\nsubscription = \"py\"\npath = \"{file}\"\nwhere = {{ level = \"error\" }}\nadd = {{ pipeline = \"py\" }}\n",
            out = out.display(),
            file = out_file.display()
        ),
    );
    let sink = Host::start(&module, &config, &[]);
    wait_subscribed(&broker, &[TOPIC.to_string()], "py", &sink).await;

    let producer = reliable_producer(&broker.url(), TOPIC).await;
    let sent: Vec<Vec<u8>> = (0..12)
        .map(|i| match i {
            5 => b"not json".to_vec(),
            _ => json!({ "i": i, "level": if i % 3 == 0 { "error" } else { "info" } })
                .to_string()
                .into_bytes(),
        })
        .collect();
    for payload in &sent {
        producer.send(payload.clone(), None).await.unwrap();
    }

    let done = wait_until_async(Duration::from_secs(60), || {
        broker.subscription(TOPIC, "py").is_some_and(|s| s.acked == 12)
            && broker.messages("/default/py-dlq").len() == 1
    })
    .await;
    assert!(done, "sub {:?}; log:\n{}", broker.subscription(TOPIC, "py"), sink.log());
    let expected: Vec<Value> = [0u64, 3, 6, 9]
        .iter()
        .map(|&i| json!({ "i": i, "level": "error", "pipeline": "py", "_topic": TOPIC, "_offset": i }))
        .collect();
    assert_eq!(read_lines(&out_file), expected);
    let dead = &broker.messages("/default/py-dlq")[0];
    assert_eq!(dead.payload, b"not json");
    assert_eq!(dead.attributes["dlq.error_class"], "invalid_data");
    assert!(sink.terminate(Duration::from_secs(30)).success());
}

/// The numbers in the messages of `topic`, in the order the broker stored them.
fn numbers(broker: &TestBroker, topic: &str) -> Vec<u64> {
    broker
        .messages(topic)
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["n"].as_u64().unwrap())
        .collect()
}

/// The number the counter source last committed, from the host's state file.
fn committed(state_file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let map: HashMap<String, Value> = serde_json::from_str(&text).ok()?;
    map.get("committed")?.as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn js_counter_source_publishes_its_numbers_and_resumes_after_the_last_commit() {
    const TOPIC: &str = "/default/js-counter";
    let module = example("js", "counter_source");
    precompile(&module);
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state/js-counter.state.json");
    let run = |count: u64| {
        let config = write_config(
            dir.path(),
            "source.toml",
            &broker.url(),
            "js-counter",
            &format!("[processing]\nproducers_per_topic = 1\n\n[counter]\ntopic = \"{TOPIC}\"\ncount = {count}\n"),
        );
        Host::start(&module, &config, &[])
    };

    let source = run(50);
    let published = wait_until_async(Duration::from_secs(60), || {
        committed(&state_file) == Some(49)
    })
    .await;
    assert!(published, "committed {:?}; log:\n{}", committed(&state_file), source.log());
    assert!(source.terminate(Duration::from_secs(30)).success());
    assert_eq!(numbers(&broker, TOPIC), (0..50).collect::<Vec<_>>());

    // A second run with a higher count starts after the committed number.
    let source = run(80);
    let resumed = wait_until_async(Duration::from_secs(60), || {
        committed(&state_file) == Some(79)
    })
    .await;
    assert!(resumed, "committed {:?}; log:\n{}", committed(&state_file), source.log());
    assert!(source.terminate(Duration::from_secs(30)).success());
    assert_eq!(numbers(&broker, TOPIC), (0..80).collect::<Vec<_>>());
}
