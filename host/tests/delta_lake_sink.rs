//! delta-lake-sink end to end: a broker, `danube-host` running the
//! connector, and the tables it writes read back with delta-rs (the
//! `deltalake` Python package) — in a local directory, and in an
//! S3-compatible server (moto) started here on a free loopback port.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::delta::{read_table, row_count};
use common::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use common::{
    Host, guest, kill_worker, produce_json, wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::{BrokerKind, TestBroker, take_turn};
use serde_json::{Value, json};

const SUBSCRIPTION: &str = "deltalake";

/// Rows are staged and written 60 at a time, or after half a second.
const STAGING: &str = "target_file_rows = 60\nflush_interval_ms = 500\n";

/// The `[[deltalake.routes]]` of `topic` into `to`.
fn route(topic: &str, to: &str, extra: &str) -> String {
    format!(
        "[[deltalake.routes]]\nfrom = \"{topic}\"\nsubscription = \"{SUBSCRIPTION}\"\nto = \"{to}\"\n\
         partition_columns = [\"currency\"]\n{extra}\nfield_mappings = [\n\
         {{ json_path = \"seq\", column = \"seq\", data_type = \"Int64\", nullable = false }},\n\
         {{ json_path = \"payment_id\", column = \"payment_id\", data_type = \"Utf8\", nullable = false }},\n\
         {{ json_path = \"amount\", column = \"amount\", data_type = \"Float64\", nullable = false }},\n\
         {{ json_path = \"currency\", column = \"currency\", data_type = \"Utf8\", nullable = false }},\n\
         {{ json_path = \"user.id\", column = \"user_id\", data_type = \"Int32\", nullable = true }},\n\
         {{ json_path = \"created_at\", column = \"created_at\", data_type = \"Timestamp\", nullable = true }},\n\
         ]\n"
    )
}

/// The host's tables for a sink on a local table `table` (its parent
/// directory granted).
fn local_text(topic: &str, table: &Path, processing: &str) -> String {
    format!(
        "[retry]\nmax_retries = 100\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
         [processing]\n{processing}\n\n\
         [sandbox]\ndirs = [\"{}\"]\n\n\
         [deltalake]\nstorage_backend = \"local\"\ncheckpoint_interval = 10\n{STAGING}\n{}",
        table.parent().unwrap().display(),
        route(topic, table.to_str().unwrap(), "")
    )
}

/// The host's tables for a sink on `s3://tables/<prefix>` in `s3`.
fn s3_text(topic: &str, s3: &S3Server, prefix: &str) -> String {
    format!(
        "[retry]\nmax_retries = 100\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
         [processing]\nbatch_size = 500\nlinger_ms = 200\n\n\
         [sandbox]\nallow = [\"127.0.0.1:{}\"]\n\n\
         [deltalake]\nstorage_backend = \"s3\"\ns3_region = \"{REGION}\"\n\
         s3_endpoint = \"{}\"\ns3_allow_http = true\n{STAGING}\n{}",
        s3.port,
        s3.endpoint(),
        route(topic, &format!("s3://tables/{prefix}"), "")
    )
}

fn start(config: &Path) -> Host {
    Host::start(
        &guest("delta-lake-sink"),
        config,
        &[
            ("DELTALAKE_S3_ACCESS_KEY_ID", ACCESS_KEY),
            ("DELTALAKE_S3_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    )
}

/// A payment: `seq`, an id, an amount, one of three currencies.
fn payment(seq: u64) -> Value {
    let currency = ["EUR", "USD", "GBP"][(seq % 3) as usize];
    json!({
        "seq": seq,
        "payment_id": format!("p-{seq}"),
        "amount": seq as f64 * 0.25,
        "currency": currency,
        "user": {"id": seq % 10},
        "created_at": "2024-05-01T12:00:00Z",
        "ignored": "not mapped",
    })
}

/// Waits until the table holds `n` rows, or panics with the host's log.
async fn wait_rows(uri: &str, options: &Value, n: u64, host: &Host) -> u64 {
    let mut rows = None;
    let all = wait_until_async(Duration::from_secs(120), || {
        rows = row_count(uri, options);
        rows.is_some_and(|r| r >= n)
    })
    .await;
    assert!(
        all,
        "{rows:?} of {n} rows in the table; log:\n{}",
        host.log()
    );
    rows.unwrap()
}

/// Each `seq` of the table with its number of rows.
fn seq_counts(uri: &str, options: &Value) -> BTreeMap<u64, usize> {
    let read = read_table(uri, options, &["seq"]);
    let mut seqs = BTreeMap::new();
    for v in read.columns["seq"].as_array().unwrap() {
        *seqs.entry(v.as_u64().unwrap()).or_default() += 1;
    }
    seqs
}

/// A test broker with `topic`, and the sink on it with `config_text`.
async fn sink(topic: &str, name: &str, dir: &Path, text: &str) -> (TestBroker, Host, PathBuf) {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(topic, 0, true).unwrap();
    let config = write_config(dir, &format!("{name}.toml"), &broker.url(), name, text);
    let host = start(&config);
    wait_subscribed(&broker, &[topic.to_string()], SUBSCRIPTION, &host).await;
    (broker, host, config)
}

/// 1,000 payments with one that does not fit: the table is created on the
/// first batch and appended to, delta-rs reads 999 rows with the mapped
/// types, the partition values and a history of commits, and reads them
/// from the last checkpoint too; the unfit record is in the dead-letter
/// topic with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_land_in_a_local_table_that_delta_rs_reads() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 1000;
    const TOPIC: &str = "/default/payments";
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("tables/payments");
    std::fs::create_dir_all(table.parent().unwrap()).unwrap();
    let text = local_text(TOPIC, &table, "batch_size = 300\nlinger_ms = 200");
    let (broker, host, _) = sink(TOPIC, "delta-local", dir.path(), &text).await;

    let mut payloads: Vec<Value> = (0..N).map(payment).collect();
    payloads[500]["amount"] = json!("a lot"); // a string where a Float64 goes
    produce_json(broker.url(), TOPIC, payloads).await;

    let uri = table.to_str().unwrap();
    let none = json!({});
    assert_eq!(wait_rows(uri, &none, N - 1, &host).await, N - 1);
    let dlq = "/default/delta-local-dlq";
    assert!(
        broker
            .wait_for(Duration::from_secs(30), |b| !b.messages(dlq).is_empty())
            .await,
        "no dead letter; log:\n{}",
        host.log()
    );
    let dead = broker.messages(dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attributes["dlq.offset"], "500");
    let error = &dead[0].attributes["dlq.error"];
    assert!(
        error.contains("column `amount` wants a number, the record has a string"),
        "{error}"
    );

    let read = read_table(uri, &none, &["seq", "currency", "user_id", "created_at"]);
    assert_eq!(read.rows, N - 1);
    let types: BTreeMap<&str, &str> = read
        .schema
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert_eq!(types["seq"], "int64");
    assert_eq!(types["payment_id"], "string");
    assert_eq!(types["amount"], "double");
    assert_eq!(types["currency"], "string");
    assert_eq!(types["user_id"], "int32");
    assert!(types["created_at"].starts_with("timestamp[us"), "{types:?}");
    assert_eq!(read.partition_columns, ["currency"]);
    let currencies: std::collections::BTreeSet<&str> = read.columns["currency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        currencies.into_iter().collect::<Vec<_>>(),
        ["EUR", "GBP", "USD"]
    );
    assert!(
        table.join("currency=EUR").is_dir(),
        "Hive-style partition directories"
    );
    let mut seqs: Vec<u64> = read.columns["seq"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..N).filter(|&s| s != 500).collect::<Vec<_>>());
    // The history: the creation, then appends, one per file of staged
    // rows; each holds several of the host's batches.
    let batches = batches_handed(&host);
    assert!(
        (read.version + 1) * 2 <= batches,
        "{} commits for {batches} batches",
        read.version + 1
    );
    let last = read.history.last().unwrap();
    assert_eq!(last, &("CREATE TABLE".to_string(), 0));
    assert!(
        read.history
            .iter()
            .skip(1)
            .all(|(op, _)| op == "WRITE" || op == "CREATE TABLE")
    );
    assert_eq!(read.history.len() as u64, read.version + 1);
    // A checkpoint every 10 commits: delta-rs reads the same table from
    // the last one alone, once the JSON entries up to it are gone.
    let last: Value = serde_json::from_slice(
        &std::fs::read(table.join("_delta_log/_last_checkpoint")).expect("a checkpoint"),
    )
    .unwrap();
    let at = last["version"].as_u64().unwrap();
    assert!(at >= 10 && at.is_multiple_of(10), "{last}");
    let copy = dir.path().join("tables/checkpointed");
    common::copy_tree(&table, &copy);
    for v in 0..=at {
        std::fs::remove_file(copy.join(format!("_delta_log/{v:020}.json"))).unwrap();
    }
    let from_checkpoint = read_table(copy.to_str().unwrap(), &none, &["seq"]);
    assert_eq!(from_checkpoint.rows, N - 1);
    assert_eq!(from_checkpoint.version, read.version);
    println!(
        "{N} records: {batches} batches, {} commits, {} files",
        read.version + 1,
        read.files
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// How many batches the host handed its connector (`/metrics`).
fn batches_handed(host: &Host) -> u64 {
    let metrics = common::http_get(&common::endpoint(host).unwrap(), "/metrics").1;
    metrics
        .lines()
        .find(|l| l.starts_with("connector_batch_size_count"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in /metrics:\n{metrics}"))
}

danube_testkit::on_both_brokers! {
    /// The main flow on both brokers: 2,000 payments published at a steady
    /// pace reach a local table each once; the broker's small window of
    /// unacknowledged messages makes small batches, staging makes files of
    /// many of them; a clean stop writes what is staged.
    async fn paced_records_reach_the_table_once_in_few_files(broker: Broker) {
        const N: u64 = 2000;
        const TOPIC: &str = "/default/paced";
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("tables/paced");
        std::fs::create_dir_all(table.parent().unwrap()).unwrap();
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        let text = local_text(TOPIC, &table, "batch_size = 500")
            .replace(STAGING, "target_file_rows = 400\nflush_interval_ms = 2000\n");
        let config = write_config(dir.path(), "paced.toml", &broker.url(), "delta-paced", &text);
        let host = start(&config);
        wait_subscribed(&broker, &[TOPIC.to_string()], SUBSCRIPTION, &host).await;

        // 500 records a second: the real broker drops a reliable
        // subscription that falls far behind (README of the broker).
        let producer = common::reliable_producer(&broker.url(), TOPIC).await;
        let started = tokio::time::Instant::now();
        for seq in 0..N {
            tokio::time::sleep_until(started + Duration::from_millis(seq * 2)).await;
            let payload = serde_json::to_vec(&payment(seq)).unwrap();
            producer.send(payload, None).await.unwrap();
        }
        let uri = table.to_str().unwrap();
        let none = json!({});
        wait_rows(uri, &none, N, &host).await;
        let seqs = seq_counts(uri, &none);
        assert_eq!(seqs.len() as u64, N, "every record is in the table");
        assert!(seqs.values().all(|&n| n == 1), "a record written twice");
        let batches = batches_handed(&host);
        let read = read_table(uri, &none, &[]);
        // A commit per 400 rows, or per 2 s while records trickle (the
        // run takes about 4 s); one file per currency in each.
        let commits = read.version + 1;
        assert!(
            commits <= N / 400 + 3 && batches >= 4 * commits,
            "{commits} commits for {batches} batches"
        );
        assert_eq!(read.files as u64, 3 * commits);
        println!(
            "{:?} broker: {N} records in {batches} batches, {} commits, {} files",
            broker.kind(),
            read.version + 1,
            read.files
        );

        // Fewer than a file's worth, then a clean stop: written at close.
        for seq in N..N + 10 {
            let payload = serde_json::to_vec(&payment(seq)).unwrap();
            producer.send(payload, None).await.unwrap();
        }
        let staged = wait_until_async(Duration::from_secs(30), || {
            std::fs::read_dir(table.join("_danube_staging/deltalake"))
                .map(|d| d.count())
                .unwrap_or(0)
                > 0
        })
        .await;
        assert!(staged, "nothing staged; log:\n{}", host.log());
        broker
            .wait_acked(&[TOPIC.to_string()], SUBSCRIPTION, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(host.terminate(Duration::from_secs(30)).success());
        assert_eq!(row_count(uri, &none), Some(N + 10));
    }
}

/// The worker is SIGKILLed mid-flow, then the whole host: every record is
/// in the table exactly once — the replayed batches are skipped by the
/// `txn` versions the table holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_and_host_killed_mid_flow_leave_each_record_once() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 4000;
    const TOPIC: &str = "/default/killed";
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("tables/killed");
    std::fs::create_dir_all(table.parent().unwrap()).unwrap();
    let text = local_text(TOPIC, &table, "batch_size = 200\nlinger_ms = 50");
    let (broker, host, config) = sink(TOPIC, "delta-killed", dir.path(), &text).await;
    let uri = table.to_str().unwrap().to_string();
    let none = json!({});

    let producing = tokio::spawn(produce_json(broker.url(), TOPIC, (0..N).map(payment)));
    wait_rows(&uri, &none, 500, &host).await;
    kill_worker(&host).await;
    wait_rows(&uri, &none, 1500, &host).await;
    // SIGKILL of the host (dropping the handle), and a new one on the same
    // subscription: what was not acknowledged is delivered again.
    drop(host);
    let at_kill = row_count(&uri, &none).unwrap_or_default();
    let host = start(&config);
    producing.await.unwrap();
    let rows = wait_rows(&uri, &none, N, &host).await;
    // Let late replays land, if any were to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seqs = seq_counts(&uri, &none);
    let twice: Vec<(&u64, &usize)> = seqs.iter().filter(|(_, n)| **n > 1).take(20).collect();
    assert!(twice.is_empty(), "rows written twice (first 20): {twice:?}");
    assert_eq!(seqs.len() as u64, N, "every record is in the table");
    println!("{N} records ({rows} rows seen), host killed at {at_kill} rows: each once");
    let status = host.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "{status:?}; log:\n{}",
        std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
    );
}

/// Two sinks, each on its own topic, append to one table in an S3-compatible
/// server: their commits race for the same versions (conditional puts),
/// the loser reads the winner's entry and commits on top; every record of
/// both topics is in the table once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sinks_append_to_one_table_in_s3() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path(), "tables");
    let broker = TestBroker::start().await.unwrap();
    let mut hosts = Vec::new();
    for (name, topic) in [
        ("delta-s3-a", "/default/pay-a"),
        ("delta-s3-b", "/default/pay-b"),
    ] {
        broker.create_topic(topic, 0, true).unwrap();
        let config = write_config(
            dir.path(),
            &format!("{name}.toml"),
            &broker.url(),
            name,
            &s3_text(topic, &s3, "payments"),
        );
        let host = start(&config);
        wait_subscribed(&broker, &[topic.to_string()], SUBSCRIPTION, &host).await;
        hosts.push(host);
    }
    let a = tokio::spawn(produce_json(
        broker.url(),
        "/default/pay-a",
        (0..N).map(payment),
    ));
    let b = tokio::spawn(produce_json(
        broker.url(),
        "/default/pay-b",
        (N..2 * N).map(payment),
    ));
    a.await.unwrap();
    b.await.unwrap();
    let uri = "s3://tables/payments";
    let options = s3.storage_options();
    let logs = || {
        hosts
            .iter()
            .map(|h| h.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let mut rows = None;
    let all = wait_until_async(Duration::from_secs(120), || {
        rows = row_count(uri, &options);
        rows.is_some_and(|r| r >= 2 * N)
    })
    .await;
    assert!(all, "{rows:?} of {} rows; logs:\n{}", 2 * N, logs());
    let seqs = seq_counts(uri, &options);
    assert_eq!(seqs.len() as u64, 2 * N);
    assert!(seqs.values().all(|&n| n == 1), "a record written twice");
    let read = read_table(uri, &options, &[]);
    println!(
        "two sinks: {} rows in {} commits, {} files",
        read.rows,
        read.version + 1,
        read.files
    );
    for host in hosts {
        assert!(host.terminate(Duration::from_secs(30)).success());
    }
}

/// danube-connect's sink-deltalake configurations
/// (`fixtures/danube-connectors/sink-deltalake`, unchanged): the S3/MinIO
/// one and the example validate with this module (the credentials through
/// the environment); Azure and GCS are refused as not supported yet when the
/// connector opens (`run`, before any broker is reached: `validate` checks
/// the table's keys and types, which are upstream's).
#[test]
fn danube_connect_deltalake_configurations_validate_or_say_what_is_not_supported() {
    let env = [
        ("DELTALAKE_S3_ACCESS_KEY_ID", ACCESS_KEY),
        ("DELTALAKE_S3_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let module = guest("delta-lake-sink");
    for file in ["config/connector-s3-minio.toml", "example/connector.toml"] {
        let out = common::upstream("sink-deltalake", &module, "validate", file, &env);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (file, key) in [
        ("config/connector-azure.toml", "azure"),
        ("config/connector-gcs.toml", "gcs"),
    ] {
        let out = common::upstream("sink-deltalake", &module, "run", file, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "`storage_backend = \"{key}\"` is not supported yet"
            )),
            "{file}: {stderr}"
        );
    }
}

/// A table written with four columns; a sink mapping two more refuses it in
/// `strict` mode (the host stops, exit 4, saying what to set) without
/// acknowledging its batch; with `add_columns` it adds them as nullable
/// columns and writes that batch and the rest: delta-rs reads the new
/// schema, with nulls in the older rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_gains_the_nullable_columns_a_wider_mapping_adds() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/evolving";
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("tables/evolving");
    std::fs::create_dir_all(table.parent().unwrap()).unwrap();
    let uri = table.to_str().unwrap().to_string();
    let none = json!({});
    let wide = local_text(TOPIC, &table, "batch_size = 300\nlinger_ms = 100");
    let narrow: String = wide
        .lines()
        .filter(|l| !l.contains("\"user_id\"") && !l.contains("\"created_at\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let (broker, host, _) = sink(TOPIC, "delta-narrow", dir.path(), &narrow).await;
    produce_json(broker.url(), TOPIC, (0..100).map(payment)).await;
    wait_rows(&uri, &none, 100, &host).await;
    assert!(host.terminate(Duration::from_secs(30)).success());

    let strict = write_config(
        dir.path(),
        "delta-strict.toml",
        &broker.url(),
        "delta-strict",
        &wide,
    );
    let host = start(&strict);
    wait_subscribed(&broker, &[TOPIC.to_string()], SUBSCRIPTION, &host).await;
    produce_json(broker.url(), TOPIC, (100..101).map(payment)).await;
    let status = host.wait(Duration::from_secs(60));
    let log = std::fs::read_to_string(strict.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(4), "log:\n{log}");
    assert!(
        log.contains("the table has no column [\"user_id\", \"created_at\"]")
            && log.contains("set `schema_mode = \"add_columns\"` to add them"),
        "log:\n{log}"
    );

    let adding = wide.replace(
        "partition_columns = [\"currency\"]\n",
        "partition_columns = [\"currency\"]\nschema_mode = \"add_columns\"\n",
    );
    let adding = write_config(
        dir.path(),
        "delta-adding.toml",
        &broker.url(),
        "delta-adding",
        &adding,
    );
    let host = start(&adding);
    wait_subscribed(&broker, &[TOPIC.to_string()], SUBSCRIPTION, &host).await;
    produce_json(broker.url(), TOPIC, (101..200).map(payment)).await;
    wait_rows(&uri, &none, 200, &host).await;
    let read = read_table(&uri, &none, &["seq", "user_id"]);
    assert_eq!(read.rows, 200);
    assert_eq!(read.schema["user_id"], "int32");
    assert!(
        read.schema["created_at"]
            .as_str()
            .unwrap()
            .starts_with("timestamp[us")
    );
    let seqs = read.columns["seq"].as_array().unwrap();
    let users = read.columns["user_id"].as_array().unwrap();
    for (seq, user) in seqs.iter().zip(users) {
        let seq = seq.as_u64().unwrap();
        assert_eq!(user.is_null(), seq < 100, "seq {seq}: user_id {user}");
    }
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// A table delta-rs wrote (three commits, then a checkpoint, its JSON
/// entries cleaned up as log retention does) is appended to: the sink
/// starts from delta-rs's checkpoint, finds the schema it maps, and the
/// table holds both writers' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_delta_rs_wrote_and_checkpointed_is_appended_to() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 100;
    const TOPIC: &str = "/default/existing";
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("tables/existing");
    std::fs::create_dir_all(table.parent().unwrap()).unwrap();
    let uri = table.to_str().unwrap().to_string();
    common::delta::run_python(
        r#"
import glob, os, sys
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
p = sys.argv[1]
schema = pa.schema([("seq", pa.int64()), ("payment_id", pa.string()), ("amount", pa.float64()),
                    ("currency", pa.string()), ("user_id", pa.int32()),
                    ("created_at", pa.timestamp("us", tz="UTC"))])
for i in range(3):
    rows = {"seq": [1000 + i], "payment_id": ["py-%d" % i], "amount": [1.0], "currency": ["EUR"],
            "user_id": [None], "created_at": [None]}
    write_deltalake(p, pa.table(rows, schema=schema), mode="append", partition_by=["currency"])
DeltaTable(p).create_checkpoint()
for f in glob.glob(p + "/_delta_log/*.json"):
    os.remove(f)
print("true")
sys.stdout.flush()
os._exit(0)
"#,
        &[&uri],
    );
    let text = local_text(TOPIC, &table, "batch_size = 300\nlinger_ms = 100");
    let (broker, host, _) = sink(TOPIC, "delta-existing", dir.path(), &text).await;
    produce_json(broker.url(), TOPIC, (0..N).map(payment)).await;
    let none = json!({});
    assert_eq!(wait_rows(&uri, &none, N + 3, &host).await, N + 3);
    let seqs = seq_counts(&uri, &none);
    assert_eq!(seqs.len() as u64, N + 3);
    assert!(
        (1000..1003).all(|s| seqs.contains_key(&s)),
        "delta-rs's rows stay"
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}
