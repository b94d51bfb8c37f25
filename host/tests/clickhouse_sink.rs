//! clickhouse-sink end to end: the test broker, `danube-host` running the
//! connector, and a real ClickHouse (Debian's clickhouse-server, started here
//! on free loopback ports with its own users.xml). Needs the Debian package
//! `clickhouse-server`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::clickhouse::{
    ClickHouse, PASSWORD, broker, config_text, https_sink_config, reading, route, sink_config,
    start_host,
};
use common::tls::make_ca;
use common::{Host, guest, wait_subscribed, wait_until_async, write_config};
use danube_testkit::TestBroker;
use serde_json::{Value, json};

/// What one test runs against: a ClickHouse and a test broker holding one
/// topic.
struct Systems {
    ch: ClickHouse,
    broker: TestBroker,
    topic: &'static str,
    dir: tempfile::TempDir,
}

impl Systems {
    async fn start(topic: &'static str) -> Systems {
        Systems::start_with(topic, false).await
    }

    /// [`Systems::start`], with an HTTPS port on the ClickHouse when `https`.
    async fn start_with(topic: &'static str, https: bool) -> Systems {
        Systems {
            ch: ClickHouse::start_with(https),
            broker: broker(topic, 1000).await,
            topic,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The configuration of the sink `name` with `routes`.
    fn config(&self, name: &str, routes: &str) -> PathBuf {
        sink_config(self.dir.path(), &self.broker, name, &self.ch, routes)
    }

    /// Starts the sink `name` with `routes` and waits until it subscribed to
    /// the topic as `subscription`.
    async fn sink(&self, name: &str, subscription: &str, routes: &str) -> Host {
        let host = start_host(&self.config(name, routes));
        wait_subscribed(&self.broker, &[self.topic.to_string()], subscription, &host).await;
        host
    }

    /// [`Systems::sink`] with one auto-created route into `table`.
    async fn table_sink(&self, name: &str, subscription: &str, table: &str) -> Host {
        self.sink(name, subscription, &route(self.topic, subscription, table))
            .await
    }

    /// Publishes `payloads` to the topic.
    async fn produce(&self, payloads: impl IntoIterator<Item = Value>) {
        common::produce_json(self.broker.url(), self.topic, payloads).await
    }
}

/// Waits until `sql` counts `n`, or panics with the host's log.
async fn wait_count(ch: &ClickHouse, sql: &str, n: u64, host: &Host) {
    let mut last = 0;
    let reached = wait_until_async(Duration::from_secs(120), || {
        last = ch.count(sql);
        last >= n
    })
    .await;
    assert!(
        reached,
        "`{sql}` reached {last} of {n}; host log:\n{}",
        host.log()
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_records_land_as_typed_rows() {
    const N: u64 = 10_000;
    const TOPIC: &str = "/default/readings";
    let systems = Systems::start(TOPIC).await;
    let ch = &systems.ch;
    let host = systems.table_sink("ch-typed", "ch", "readings").await;

    let started = now_ms();
    systems.produce((0..N).map(reading)).await;
    wait_count(ch, "SELECT count() FROM readings FINAL", N, &host).await;
    let finished = now_ms();

    let columns: Vec<(String, String)> = ch
        .rows("SELECT name, type FROM system.columns WHERE database = 'default' AND table = 'readings'")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("device", "String"),
        ("seq", "Int64"),
        ("reading", "Int32"),
        ("temp", "Float64"),
        ("ok", "UInt8"),
        ("at", "DateTime"),
        ("extra", "String"),
        ("note", "Nullable(String)"),
        ("danube_topic", "String"),
        ("danube_offset", "UInt64"),
        ("danube_publish_time", "UInt64"),
        ("danube_producer", "String"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(columns, expected);

    // Raw rows, not only FINAL: no record was written twice.
    let totals = &ch.rows(
        "SELECT count() AS rows, uniqExact(danube_offset) AS offsets, uniqExact(seq) AS seqs, \
         sum(seq) AS seq_sum, sum(reading) AS reading_sum, sum(temp) AS temp_sum, sum(ok) AS oks, \
         countIf(isNull(note)) AS no_note, min(danube_publish_time) AS first, max(danube_publish_time) AS last \
         FROM readings",
    )[0];
    let n = N as i64;
    assert_eq!(totals["rows"], json!(N.to_string()));
    assert_eq!(totals["offsets"], json!(N.to_string()));
    assert_eq!(totals["seqs"], json!(N.to_string()));
    assert_eq!(totals["seq_sum"], json!((n * (n - 1) / 2).to_string()));
    assert_eq!(
        totals["reading_sum"],
        json!((n * (n - 1) / 2 - 5000 * n).to_string())
    );
    assert_eq!(
        totals["temp_sum"].as_f64(),
        Some((n * (n - 1) / 2) as f64 * 0.25)
    );
    assert_eq!(totals["oks"], json!((N / 2).to_string()));
    assert_eq!(totals["no_note"], json!(N.div_ceil(3).to_string()));
    let first: u64 = totals["first"].as_str().unwrap().parse().unwrap();
    let last: u64 = totals["last"].as_str().unwrap().parse().unwrap();
    assert!(
        started <= first && last <= finished,
        "publish times {first}..{last} outside {started}..{finished}"
    );

    let row = &ch.rows(
        "SELECT device, seq, reading, temp, ok, toUnixTimestamp(at) AS at, extra, note, danube_topic, danube_producer \
         FROM readings WHERE seq = 1234",
    )[0];
    assert_eq!(
        row,
        &json!({"device": "dev-4", "seq": "1234", "reading": -3766, "temp": 308.5, "ok": 1,
                "at": 1_700_001_234, "extra": r#"{"tags":["a",1234]}"#, "note": "n1234",
                "danube_topic": TOPIC, "danube_producer": "test-producer"})
    );
    let rfc3339 =
        &ch.rows("SELECT toUnixTimestamp(at) AS at, note FROM readings WHERE seq = 3000")[0];
    assert_eq!(rfc3339, &json!({"at": 1_704_161_045, "note": null}));
    assert!(
        !host.log().contains(PASSWORD),
        "the password appears in the host's log"
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// Waits until `dlq` holds one dead letter per `(seq, reason)` of
/// `expected`, in that order, each invalid data whose `dlq.error` gives the
/// reason.
async fn expect_dead_letters(
    broker: &TestBroker,
    dlq: &str,
    expected: &[(u64, &str)],
    host: &Host,
) {
    let landed = broker
        .wait_for(Duration::from_secs(30), |b| {
            b.messages(dlq).len() == expected.len()
        })
        .await;
    assert!(
        landed,
        "dead letters: {}; log:\n{}",
        broker.messages(dlq).len(),
        host.log()
    );
    for (message, (seq, why)) in broker.messages(dlq).iter().zip(expected) {
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["seq"], json!(seq));
        let error = &message.attributes["dlq.error"];
        assert!(error.contains(why), "dlq.error for {seq}: {error}");
        assert_eq!(message.attributes["dlq.error_class"], "invalid_data");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_of_the_wrong_type_go_to_the_dead_letter_topic() {
    const TOPIC: &str = "/default/typed-dlq";
    const DLQ: &str = "/default/ch-dlq-dlq";
    let systems = Systems::start(TOPIC).await;
    let (ch, broker) = (&systems.ch, &systems.broker);
    let host = systems.table_sink("ch-dlq", "ch", "typed").await;

    // Three records that do not fit their columns, and why.
    let broken = [
        (
            10,
            "column `reading` (Int32): field `m.reading`: expected an integer within Int32",
        ),
        (
            20,
            "column `reading` (Int32): field `m.reading`: expected an integer within Int32",
        ),
        (30, "column `device`: field `device` is missing"),
    ];
    let payload = |seq: u64| {
        let mut v = reading(seq);
        match seq {
            10 => v["m"]["reading"] = json!("abc"),
            20 => v["m"]["reading"] = json!(3_000_000_000u64),
            30 => v["device"] = Value::Null,
            _ => {}
        }
        v
    };
    systems.produce((0..50).map(payload)).await;
    wait_count(ch, "SELECT count() FROM typed FINAL", 47, &host).await;
    expect_dead_letters(broker, DLQ, &broken, &host).await;
    let seqs: Vec<u64> = ch
        .query("SELECT seq FROM typed ORDER BY seq")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let wanted: Vec<u64> = (0..50)
        .filter(|s| broken.iter().all(|(b, _)| b != s))
        .collect();
    assert_eq!(seqs, wanted);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_clickhouse_refuses_are_found_and_the_rest_written() {
    const TOPIC: &str = "/default/codes";
    const DLQ: &str = "/default/ch-refused-dlq";
    let systems = Systems::start(TOPIC).await;
    let (ch, broker) = (&systems.ch, &systems.broker);
    // A table narrower than the configuration: `code` holds 4 bytes at
    // most, which only ClickHouse knows.
    ch.query(
        "CREATE TABLE codes (code FixedString(4), seq Int64, danube_topic String, danube_offset UInt64) \
         ENGINE = ReplacingMergeTree ORDER BY (danube_topic, danube_offset)",
    );
    let routes = format!(
        "[[clickhouse.routes]]\ntopic = \"{TOPIC}\"\nsubscription = \"ch\"\ntable = \"codes\"\n\
         metadata = {{ topic = \"danube_topic\", offset = \"danube_offset\" }}\n\
         columns = [ {{ column = \"code\", path = \"code\", type = \"text\" }}, {{ column = \"seq\", path = \"seq\", type = \"bigint\" }} ]\n"
    );
    let host = systems.sink("ch-refused", "ch", &routes).await;
    let too_long = [7u64, 25];
    systems
        .produce((0..40).map(|seq| {
            let code = if too_long.contains(&seq) {
                "much-too-long".to_string()
            } else {
                format!("c{seq:03}")
            };
            json!({"code": code, "seq": seq})
        }))
        .await;
    wait_count(ch, "SELECT count() FROM codes FINAL", 38, &host).await;
    let why = "Too large value for FixedString(4)";
    expect_dead_letters(broker, DLQ, &too_long.map(|seq| (seq, why)), &host).await;
    assert_eq!(
        ch.count("SELECT count() FROM codes WHERE seq IN (7, 25)"),
        0
    );
    assert_eq!(ch.count("SELECT count() FROM codes FINAL"), 38);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_restart_loses_and_duplicates_nothing() {
    const N: u64 = 3_000;
    const TOPIC: &str = "/default/restart";
    let mut systems = Systems::start(TOPIC).await;
    let host = systems.table_sink("ch-restart", "ch", "restart").await;

    // A third before the stop, a third while ClickHouse is down, a third
    // after it is back.
    let thirds = [0..N / 3, N / 3..2 * N / 3, 2 * N / 3..N];
    systems.produce(thirds[0].clone().map(reading)).await;
    wait_count(&systems.ch, "SELECT count() FROM restart", N / 3, &host).await;
    systems.ch.stop();
    systems.produce(thirds[1].clone().map(reading)).await;
    let retried = wait_until_async(Duration::from_secs(60), || {
        host.log().contains("batch failed; retrying")
    })
    .await;
    assert!(
        retried,
        "the sink did not retry while ClickHouse was down; log:\n{}",
        host.log()
    );
    systems.ch.spawn();
    systems.produce(thirds[2].clone().map(reading)).await;
    let ch = &systems.ch;
    wait_count(ch, "SELECT count() FROM restart FINAL", N, &host).await;
    assert_eq!(ch.count("SELECT count() FROM restart FINAL"), N);
    assert_eq!(ch.count("SELECT uniqExact(seq) FROM restart"), N);
    assert_eq!(ch.count("SELECT uniqExact(danube_offset) FROM restart"), N);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn records_delivered_twice_leave_one_copy() {
    const N: u64 = 2_000;
    const TOPIC: &str = "/default/twice";
    let systems = Systems::start(TOPIC).await;
    let ch = &systems.ch;
    // Two subscriptions on one topic deliver every record to the sink twice,
    // each time with the same topic and offset: the dedup key.
    let first = systems.table_sink("ch-first", "first", "twice").await;
    let second = systems.table_sink("ch-second", "second", "twice").await;
    systems.produce((0..N).map(reading)).await;
    let acked = systems
        .broker
        .wait_for(Duration::from_secs(120), |b| {
            ["first", "second"]
                .iter()
                .all(|s| b.subscription(TOPIC, s).is_some_and(|s| s.acked == N))
        })
        .await;
    assert!(
        acked,
        "not every record was written twice; logs:\n{}\n{}",
        first.log(),
        second.log()
    );
    assert_eq!(ch.count("SELECT count() FROM twice FINAL"), N);
    assert_eq!(ch.count("SELECT uniqExact(seq) FROM twice FINAL"), N);
    ch.query("OPTIMIZE TABLE twice FINAL");
    assert_eq!(ch.count("SELECT count() FROM twice"), N);
    assert!(first.terminate(Duration::from_secs(30)).success());
    assert!(second.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_the_host_naming_authentication() {
    const WRONG: &str = "not-the-Password-42";
    const TOPIC: &str = "/default/auth";
    let systems = Systems::start(TOPIC).await;
    let cfg = systems.config("ch-auth", &route(TOPIC, "ch", "auth"));
    let host = Host::start(
        &guest("clickhouse-sink"),
        &cfg,
        &[("CLICKHOUSE_PASSWORD", WRONG)],
    );
    let status = host.wait(Duration::from_secs(60));
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert!(
        !status.success(),
        "the host ran on with a wrong password; log:\n{log}"
    );
    assert!(log.contains("authentication failed"), "log:\n{log}");
    assert!(
        !log.contains(WRONG),
        "the password leaked into the log:\n{log}"
    );
    assert_eq!(
        systems
            .ch
            .count("SELECT count() FROM system.tables WHERE name = 'auth'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_verifies_the_server_and_carries_the_rows() {
    const N: u64 = 500;
    const TOPIC: &str = "/default/https";
    let systems = Systems::start_with(TOPIC, true).await;
    let ch = &systems.ch;
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(ch.dir().join("ca.pem"), certs.path().join("ca.pem")).unwrap();
    make_ca(certs.path(), "rogue");
    let config = |name: &str, ca: &str| {
        let routes = format!(
            "ca_file = \"{}\"\n\n{}",
            certs.path().join(ca).display(),
            route(TOPIC, "ch", "https_readings")
        );
        let dir = systems.dir.path();
        https_sink_config(dir, &systems.broker, name, ch, certs.path(), &routes)
    };

    // The server's certificate checks out against its CA and 127.0.0.1.
    let host = start_host(&config("ch-https", "ca.pem"));
    wait_subscribed(&systems.broker, &[TOPIC.to_string()], "ch", &host).await;
    systems.produce((0..N).map(reading)).await;
    wait_count(ch, "SELECT count() FROM https_readings FINAL", N, &host).await;
    assert!(host.terminate(Duration::from_secs(30)).success());

    // A CA that did not sign it stops the connector at start with a
    // configuration error (exit code 2) naming the reason.
    let cfg = config("ch-https-rogue", "rogue.pem");
    let status = start_host(&cfg).wait(Duration::from_secs(60));
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(2), "exit code; log:\n{log}");
    assert!(
        log.contains("TLS handshake failed") && log.contains("UnknownIssuer"),
        "log:\n{log}"
    );
}

/// clickhouse-sink through `danube-host test`: the contract, then a scenario
/// of readings and one whose `m.reading` is not an integer; the readings
/// are in the table afterwards.
#[test]
fn clickhouse_sink_keeps_the_contract_and_its_scenario() {
    const TOPIC: &str = "/default/readings";
    let ch = ClickHouse::start();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&ch.url(), ch.http_port, "", &route(TOPIC, "ch", "scenario"));
    let config = write_config(
        dir.path(),
        "ch.toml",
        "http://127.0.0.1:6650",
        "ch-harness",
        &text,
    );
    let mut payloads: Vec<(Value, &str)> = (0..5).map(|seq| (reading(seq), "written")).collect();
    let mut wrong = reading(5);
    wrong["m"]["reading"] = json!("abc");
    payloads.push((wrong, "invalid_data"));
    common::assert_sink_scenario_passes(
        dir.path(),
        &guest("clickhouse-sink"),
        &config,
        &payloads,
        &[("CLICKHOUSE_PASSWORD", PASSWORD)],
    );
    assert_eq!(ch.query("SELECT count() FROM scenario FINAL").trim(), "5");
}
