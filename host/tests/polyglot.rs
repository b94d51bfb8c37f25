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

use common::polyglot::{example, make};
use common::{
    Host, reliable_producer, run_host, target_dir, wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::{StoredMessage, TestBroker};
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
    assert!(
        cached,
        "no compiled artifact for {} in {}",
        module.display(),
        cache.display()
    );
}

/// What a sink example did with the payloads sent to its topic.
struct SinkRun {
    /// The output file's text.
    written: String,
    dead_lettered: Vec<StoredMessage>,
}

const SINK_TOPIC: &str = "/default/in";
const SINK_DLQ: &str = "/default/dlq";

/// Starts the sink `module` with the connector table `table(topic, file)`
/// (subscription `sub`, writing to `file` in a granted directory), sends
/// `payloads` to its topic, waits until every one is acknowledged and
/// `dead` of them dead-lettered, and stops the sink cleanly.
async fn run_sink(
    module: &Path,
    table: impl Fn(&str, &Path) -> String,
    payloads: &[Vec<u8>],
    dead: usize,
) -> SinkRun {
    precompile(module);
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(SINK_TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("written");
    let config = write_config(
        dir.path(),
        "sink.toml",
        &broker.url(),
        "sink",
        &format!(
            "[processing]\nbatch_timeout_ms = 200\nlinger_ms = 50\n\n[dead_letter]\ntopic = \"{SINK_DLQ}\"\n\n[sandbox]\ndirs = [\"{}\"]\n\n{}",
            out.display(),
            table(SINK_TOPIC, &file)
        ),
    );
    let sink = Host::start(module, &config, &[]);
    wait_subscribed(&broker, &[SINK_TOPIC.to_string()], "sub", &sink).await;
    let producer = reliable_producer(&broker.url(), SINK_TOPIC).await;
    for payload in payloads {
        producer.send(payload.clone(), None).await.unwrap();
    }
    let done = wait_until_async(Duration::from_secs(60), || {
        broker
            .subscription(SINK_TOPIC, "sub")
            .is_some_and(|s| s.acked == payloads.len() as u64)
            && broker.messages(SINK_DLQ).len() == dead
    })
    .await;
    assert!(
        done,
        "sub {:?}, dead-lettered {}; log:\n{}",
        broker.subscription(SINK_TOPIC, "sub"),
        broker.messages(SINK_DLQ).len(),
        sink.log()
    );
    assert!(sink.terminate(Duration::from_secs(30)).success());
    SinkRun {
        written: std::fs::read_to_string(&file).unwrap_or_default(),
        dead_lettered: broker.messages(SINK_DLQ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_json_filter_sink_writes_matching_records_enriched_and_dead_letters_the_rest() {
    let payloads: Vec<Vec<u8>> = (0..12)
        .map(|i| match i {
            5 => b"not json".to_vec(),
            _ => json!({ "i": i, "level": if i % 3 == 0 { "error" } else { "info" } })
                .to_string()
                .into_bytes(),
        })
        .collect();
    let table = |topic: &str, file: &Path| {
        format!(
            "[json_filter_sink]\ntopic = \"{topic}\"\nsubscription = \"sub\"\npath = \"{}\"\nwhere = {{ level = \"error\" }}\nadd = {{ pipeline = \"py\" }}\n",
            file.display()
        )
    };
    let run = run_sink(&example("python", "json_filter_sink"), table, &payloads, 1).await;

    let written: Vec<Value> = run
        .written
        .lines()
        .map(|l| serde_json::from_str(l).expect("the sink writes JSON lines"))
        .collect();
    let expected: Vec<Value> = [0u64, 3, 6, 9]
        .iter()
        .map(|&i| json!({ "i": i, "level": "error", "pipeline": "py", "_topic": SINK_TOPIC, "_offset": i }))
        .collect();
    assert_eq!(written, expected);
    assert_eq!(run.dead_lettered[0].payload, b"not json");
    assert_eq!(
        run.dead_lettered[0].attributes["dlq.error_class"],
        "invalid_data"
    );
}

/// The numbers in the messages of `topic`, in the order the broker stored them.
fn numbers(broker: &TestBroker, topic: &str) -> Vec<u64> {
    broker
        .messages(topic)
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
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
    // The second run, with a higher count, starts after the committed
    // number: the topic then holds every number once, in order.
    for count in [50u64, 80] {
        let config = write_config(
            dir.path(),
            "source.toml",
            &broker.url(),
            "js-counter",
            &format!(
                "[processing]\nproducers_per_topic = 1\n\n[counter_source]\ntopic = \"{TOPIC}\"\ncount = {count}\n"
            ),
        );
        let source = Host::start(&module, &config, &[]);
        let published = wait_until_async(Duration::from_secs(60), || {
            committed(&state_file) == Some(count - 1)
        })
        .await;
        assert!(
            published,
            "committed {:?}; log:\n{}",
            committed(&state_file),
            source.log()
        );
        assert!(source.terminate(Duration::from_secs(30)).success());
        assert_eq!(numbers(&broker, TOPIC), (0..count).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn c_line_sink_writes_each_record_as_a_line_and_dead_letters_what_cannot_be_one() {
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| match i {
            4 => b"two\nlines".to_vec(),
            _ => format!("record {i}").into_bytes(),
        })
        .collect();
    let table = |topic: &str, file: &Path| {
        format!(
            "[line_sink]\ntopic = \"{topic}\"\nsubscription = \"sub\"\npath = \"{}\"\n",
            file.display()
        )
    };
    let run = run_sink(&example("c", "line_sink"), table, &payloads, 1).await;

    let expected: String = (0..10)
        .filter(|i| *i != 4)
        .map(|i| format!("{SINK_TOPIC} {i} record {i}\n"))
        .collect();
    assert_eq!(run.written, expected);
    let dead = &run.dead_lettered[0];
    assert_eq!(dead.payload, b"two\nlines");
    assert_eq!(dead.attributes["dlq.error_class"], "invalid_data");
    assert!(
        dead.attributes["dlq.error"].contains("line break"),
        "{:?}",
        dead.attributes
    );
}

/// `danube-host new --lang LANG [--world WORLD] NAME` in a fresh directory;
/// returns the connector's directory (kept in `parent`).
fn scaffold(lang: &str, world: Option<&str>, name: &str, parent: &Path) -> std::path::PathBuf {
    let mut args = vec![
        "new",
        "--lang",
        lang,
        "--dir",
        parent.to_str().unwrap(),
        name,
    ];
    if let Some(world) = world {
        args.extend(["--world", world]);
    }
    let (code, stdout, stderr) = run_host(&args);
    assert_eq!(code, 0, "new --lang {lang}: {stderr}");
    assert!(stdout.contains(name), "{stdout}");
    parent.join(name)
}

/// `danube-host test` on a scaffolded module with its own `connector.toml`,
/// run in its directory; the directories it grants are made first.
fn passes_the_conformance_checks(dir: &Path, module: &Path) {
    let config = dir.join("connector.toml");
    let table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let grants = table
        .get("sandbox")
        .and_then(|s| s.get("dirs"))
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    for grant in grants.iter().filter_map(|g| g.as_str()) {
        std::fs::create_dir_all(grant).unwrap();
    }
    conforms(module, &config);
}

/// `danube-host test --module M --config C` exits 0, no check failed.
fn conforms(module: &Path, config: &Path) {
    let (code, stdout, stderr) = run_host(&[
        "test",
        "--module",
        module.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{}:\n{stdout}{stderr}", module.display());
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// Builds a scaffolded Python, JavaScript or C connector, runs its test and
/// the conformance checks, and checks that the component is a connector
/// with the new name.
fn scaffold_builds_and_passes_its_test(lang: &str, world: &str) {
    scaffold_of_world_builds_and_passes_its_test(
        lang,
        None,
        world,
        &format!("my-{lang}-connector"),
    );
}

/// [`scaffold_builds_and_passes_its_test`] for `new --world WORLD`.
fn scaffold_of_world_builds_and_passes_its_test(
    lang: &str,
    asked: Option<&str>,
    world: &str,
    name: &str,
) {
    let parent = tempfile::tempdir().unwrap();
    let dir = scaffold(lang, asked, name, parent.path());
    make(&dir, "test");
    make(&dir, "all");
    let module = dir.join(format!("build/{}.wasm", name.replace('-', "_")));
    let (code, stdout, stderr) = run_host(&["inspect", module.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("world: {world}")), "{stdout}");
    assert!(
        stdout.contains(&format!("connector: {name} 0.1.0")),
        "{stdout}"
    );
    passes_the_conformance_checks(&dir, &module);
}

#[test]
fn new_python_connector_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("python", "sink");
}

#[test]
fn new_python_source_builds_and_passes_its_test() {
    scaffold_of_world_builds_and_passes_its_test(
        "python",
        Some("source"),
        "source",
        "my-python-source",
    );
}

#[test]
fn new_js_sink_builds_and_passes_its_test() {
    scaffold_of_world_builds_and_passes_its_test("js", Some("sink"), "sink", "my-js-sink");
}

#[test]
fn new_c_source_builds_and_passes_its_test() {
    scaffold_of_world_builds_and_passes_its_test("c", Some("source"), "source", "my-c-source");
}

#[test]
fn new_js_connector_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("js", "source");
}

#[test]
fn new_c_connector_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test("c", "sink");
}

/// A scaffolded Rust connector of `world` builds, passes its own test and
/// the conformance checks, and is a connector of that world with the new
/// name.
fn rust_scaffold_builds_and_passes_its_test(world: &str, name: &str) {
    let parent = tempfile::tempdir().unwrap();
    let dir = scaffold("rust", Some(world), name, parent.path());
    // A shared target directory keeps the SDK's dependencies built across runs.
    let cargo = |args: &[&str]| {
        let out =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(args)
                .current_dir(&dir)
                .env("CARGO_TARGET_DIR", target_dir().join("scaffold-rust"))
                .output()
                .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cargo(&["test"]);
    cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    let module = target_dir()
        .join("scaffold-rust/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let (code, stdout, stderr) = run_host(&["inspect", module.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("world: {world}")), "{stdout}");
    assert!(
        stdout.contains(&format!("connector: {name} 0.1.0")),
        "{stdout}"
    );
    passes_the_conformance_checks(&dir, &module);
}

#[test]
fn new_rust_connector_builds_and_passes_its_test() {
    rust_scaffold_builds_and_passes_its_test("source", "my-rust-connector");
}

#[test]
fn new_rust_sink_builds_and_passes_its_test() {
    rust_scaffold_builds_and_passes_its_test("sink", "my-rust-sink");
}

/// The Python example exports no configuration schema (only the Rust SDK
/// adds one): the host reads its keys from its example, as it did for every
/// module before schemas, and still names a key it does not show.
#[test]
fn a_module_without_a_schema_is_checked_against_its_example() {
    let module = example("python", "json_filter_sink");
    let (code, stdout, stderr) = run_host(&["inspect", module.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("configuration keys:"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let root = "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"f\"\n";
    let table = "[json_filter_sink]\ntopic = \"/default/e\"\npath = \"/tmp/x\"\n";
    std::fs::write(&config, format!("{root}{table}")).unwrap();
    let args = [
        "validate",
        "--module",
        module.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let (code, _, stderr) = run_host(&args);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(&config, format!("{root}{table}pth = \"/tmp/y\"\n")).unwrap();
    let (code, _, stderr) = run_host(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr
            .contains("unknown key `json_filter_sink.pth`; did you mean `json_filter_sink.path`?"),
        "{stderr}"
    );
}

/// Every example keeps the contract as `danube-host test` checks it (each
/// with its own configuration, its files in a directory of the test's).
#[test]
fn every_example_passes_the_conformance_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let root = "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"conformance\"\n";
    let grant = format!("[sandbox]\ndirs = [\"{}\"]\n", out.display());
    for (module, table) in [
        (
            example("python", "json_filter_sink"),
            format!(
                "{grant}[json_filter_sink]\ntopic = \"/default/e\"\npath = \"{}/kept.jsonl\"\n",
                out.display()
            ),
        ),
        (
            example("js", "counter_source"),
            "[counter_source]\ntopic = \"/default/counter\"\n".to_string(),
        ),
        (
            example("c", "line_sink"),
            format!(
                "{grant}[line_sink]\ntopic = \"/default/l\"\npath = \"{}/lines.txt\"\n",
                out.display()
            ),
        ),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("{root}{table}")).unwrap();
        conforms(&module, &config);
    }
}
