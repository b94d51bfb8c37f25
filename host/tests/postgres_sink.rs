//! postgres-sink end to end: a real PostgreSQL 15 (started here on a free
//! loopback port, password authentication over TCP), the test broker,
//! `danube-host` running the connector, and `psql` checking what landed.
//! Needs Debian's `postgresql-15` (server binaries and `psql`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::postgres::{self, CERT_USER, KEYED, Postgres, ServerTls, USER, reading};
use common::tls::make_ca;
use common::{
    Host, guest, kill_worker, produce_json, wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::TestBroker;
use serde_json::json;

const PASSWORD: &str = "s3cret-Pg-pass";
const SUBSCRIPTION: &str = "pg";

/// The test broker, a PostgreSQL server and a directory for the host's
/// files.
struct Setup {
    broker: TestBroker,
    pg: Postgres,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with(ServerTls::Off).await
    }

    async fn with(tls: ServerTls) -> Setup {
        Setup {
            broker: TestBroker::start().await.unwrap(),
            pg: Postgres::start_with(PASSWORD, tls),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes the configuration of connector `name`: the host's own
    /// `tables` (TOML), then a route of readings from `topic` into `table`
    /// with the route keys `keys`.
    fn config(&self, name: &str, tables: &str, topic: &str, table: &str, keys: &str) -> PathBuf {
        let routes = postgres::route(topic, SUBSCRIPTION, table, keys);
        let text = format!("{tables}{}", self.pg.sink_config("", &routes));
        self.write(name, &text)
    }

    /// The configuration of connector `name` logging in as `user` and
    /// writing readings from `/default/TABLE` into `table`, with the
    /// `[postgres]` TLS keys `tls`; the sandbox may read the certificate
    /// directory `certs`.
    fn tls_config(&self, name: &str, user: &str, certs: &Path, tls: &str, table: &str) -> PathBuf {
        let routes = postgres::route(&format!("/default/{table}"), SUBSCRIPTION, table, KEYED);
        let sandbox = format!("dirs = [\"{}\"]\n", certs.display());
        let text = self
            .pg
            .sink_config_as(user, &sandbox, &format!("{tls}\n\n{routes}"));
        self.write(name, &text)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        write_config(
            self.dir.path(),
            &format!("{name}.toml"),
            &self.broker.url(),
            name,
            text,
        )
    }

    /// Creates `topic`, starts the sink with the right password and waits
    /// until it subscribed.
    async fn run(&self, cfg: &Path, topic: &str) -> Host {
        self.broker.create_topic(topic, 0, true).unwrap();
        let host = start(cfg, PASSWORD);
        wait_subscribed(&self.broker, &[topic.into()], SUBSCRIPTION, &host).await;
        host
    }
}

/// Starts the sink with `password` in the environment.
fn start(cfg: &Path, password: &str) -> Host {
    Host::start(
        &guest("postgres-sink"),
        cfg,
        &[("POSTGRES_PASSWORD", password)],
    )
}

/// Waits for `host`, run with `cfg`, to stop by itself; returns its exit
/// code and log.
async fn exit_of(host: Host, cfg: &Path) -> (Option<i32>, String) {
    let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    (status.code(), log)
}

fn readings(range: std::ops::Range<u64>, version: u32) -> Vec<serde_json::Value> {
    range.map(|seq| reading(seq, version)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_records_land_as_typed_rows() {
    const N: u64 = 10_000;
    const TOPIC: &str = "/default/readings";
    let setup = Setup::new().await;
    let cfg = setup.config("pg-10k", "", TOPIC, "readings", KEYED);
    let host = setup.run(&cfg, TOPIC).await;
    let (broker, pg) = (&setup.broker, &setup.pg);

    produce_json(broker.url(), TOPIC, readings(0..N, 1)).await;
    let landed = pg.wait_count(
        "SELECT count(*) FROM readings",
        N as i64,
        Duration::from_secs(120),
    );
    assert_eq!(
        landed,
        N as i64,
        "rows in the table; host log:\n{}",
        host.log()
    );
    assert_eq!(
        pg.count("SELECT count(DISTINCT (device, seq)) FROM readings"),
        N as i64
    );
    assert_eq!(
        pg.query(
            "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'readings'"
        ),
        "device:text,seq:bigint,temp:double precision,ok:boolean,at:timestamp with time zone,\
         version:integer,tags:jsonb,danube_topic:text,danube_offset:bigint,\
         danube_publish_time:timestamp with time zone,danube_producer:text"
    );
    // One producer in order: record seq sits at topic offset seq.
    assert_eq!(
        pg.query(
            "SELECT device, seq, temp, ok, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
             version, tags->>'i', danube_topic, danube_offset, danube_producer, \
             danube_publish_time BETWEEN now() - interval '10 minutes' AND now() \
             FROM readings WHERE seq = 1234"
        ),
        "dev-2|1234|123.4|t|2024-05-01 10:20:34|1|1234|/default/readings|1234|test-producer|t"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM readings WHERE seq = danube_offset AND ok = (seq % 2 = 0)"),
        N as i64
    );
    let log = host.log();
    assert!(
        !log.contains(PASSWORD),
        "the password reached the log:\n{log}"
    );
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_the_table_refuses_go_to_the_dead_letter_topic_and_the_rest_land() {
    const N: u64 = 200;
    const TOPIC: &str = "/default/checked";
    let setup = Setup::new().await;
    let cfg = setup.config(
        "pg-dlq",
        "[processing]\nbatch_size = 500\nlinger_ms = 200\n\n",
        TOPIC,
        "checked",
        "upsert_key = [\"device\", \"seq\"]",
    );
    let host = setup.run(&cfg, TOPIC).await;
    let (broker, pg) = (&setup.broker, &setup.pg);
    // The table exists, with a rule the connector cannot know: the database
    // itself refuses one row of the batch.
    pg.query(
        "CREATE TABLE checked (device text NOT NULL, seq bigint NOT NULL, \
         temp double precision CHECK (temp < 1000), ok boolean NOT NULL, at timestamptz NOT NULL, \
         version integer NOT NULL, tags jsonb, PRIMARY KEY (device, seq)); \
         GRANT ALL ON checked TO danube",
    );

    let mut payloads = readings(0..N, 1);
    payloads[50]["seq"] = json!("fifty"); // a string where a bigint goes
    payloads[120]["reading"]["temp"] = json!(5000.0); // breaks the CHECK
    produce_json(broker.url(), TOPIC, payloads).await;

    let dlq = "/default/pg-dlq-dlq";
    assert!(
        broker
            .wait_for(Duration::from_secs(60), |b| b.messages(dlq).len() >= 2)
            .await,
        "dead letters; log:\n{}",
        host.log()
    );
    let landed = pg.wait_count(
        "SELECT count(*) FROM checked",
        N as i64 - 2,
        Duration::from_secs(60),
    );
    assert_eq!(landed, N as i64 - 2, "log:\n{}", host.log());
    assert_eq!(
        pg.count("SELECT count(*) FROM checked WHERE seq IN (50, 120)"),
        0
    );

    let mut errors: Vec<(u64, String)> = broker
        .messages(dlq)
        .iter()
        .map(|m| {
            let offset = m.attributes["dlq.offset"].parse().unwrap();
            (offset, m.attributes["dlq.error"].clone())
        })
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, 50);
    assert!(
        errors[0].1.contains(
            "column seq (bigint): field `seq`: expected a 64-bit integer, found a string"
        ),
        "{}",
        errors[0].1
    );
    assert_eq!(errors[1].0, 120);
    assert!(
        errors[1].1.contains("checked_temp_check") && errors[1].1.contains("SQLSTATE 23514"),
        "{}",
        errors[1].1
    );
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_mid_flow_loses_and_duplicates_nothing() {
    const N: u64 = 4_000;
    const TOPIC: &str = "/default/restart";
    let mut setup = Setup::new().await;
    // No upsert_key: rows are keyed on the topic and offset columns.
    let cfg = setup.config(
        "pg-restart",
        "[retry]\nmax_retries = 100\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n",
        TOPIC,
        "restart",
        "auto_create = true\nmetadata = { topic = \"danube_topic\", offset = \"danube_offset\" }",
    );
    let host = setup.run(&cfg, TOPIC).await;
    let broker = &setup.broker;

    let producing = tokio::spawn(produce_json(broker.url(), TOPIC, readings(0..N, 1)));
    let some = setup.pg.wait_count(
        "SELECT least(count(*), 500) FROM restart",
        500,
        Duration::from_secs(60),
    );
    assert_eq!(some, 500, "log:\n{}", host.log());
    setup.pg.stop();
    assert!(
        wait_until_async(Duration::from_secs(30), || host
            .log()
            .contains("batch failed; retrying"))
        .await,
        "the sink did not notice PostgreSQL going away; log:\n{}",
        host.log()
    );
    setup.pg.spawn();
    producing.await.unwrap();

    let landed = setup.pg.wait_count(
        "SELECT count(*) FROM restart",
        N as i64,
        Duration::from_secs(120),
    );
    assert_eq!(landed, N as i64, "log:\n{}", host.log());
    assert_eq!(
        setup.pg.count("SELECT count(DISTINCT seq) FROM restart"),
        N as i64
    );
    assert_eq!(
        setup
            .pg
            .count("SELECT count(DISTINCT (danube_topic, danube_offset)) FROM restart"),
        N as i64
    );
    assert!(host.log().contains("connected to PostgreSQL"));
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_delivered_twice_leave_one_copy_of_each_row() {
    const N: u64 = 3_000;
    const TOPIC: &str = "/default/twice";
    let setup = Setup::new().await;
    let cfg = setup.config("pg-twice", "", TOPIC, "twice", KEYED);
    let host = setup.run(&cfg, TOPIC).await;
    let (broker, pg) = (&setup.broker, &setup.pg);

    // First pass, with the worker killed mid-flow: the batch it held is
    // written again by its successor.
    let producing = tokio::spawn(produce_json(broker.url(), TOPIC, readings(0..N, 1)));
    let some = pg.wait_count(
        "SELECT least(count(*), 300) FROM twice",
        300,
        Duration::from_secs(60),
    );
    assert_eq!(some, 300, "log:\n{}", host.log());
    kill_worker(&host).await;
    let at_kill = pg.count("SELECT count(*) FROM twice");
    assert!(at_kill < N as i64, "the kill came after the flow ended");
    producing.await.unwrap();
    let landed = pg.wait_count(
        "SELECT count(*) FROM twice",
        N as i64,
        Duration::from_secs(120),
    );
    assert_eq!(landed, N as i64, "log:\n{}", host.log());
    assert!(
        broker
            .wait_for(Duration::from_secs(60), |b| b
                .subscription(TOPIC, SUBSCRIPTION)
                .is_some_and(|s| s.acked >= N))
            .await,
        "the first pass was not acknowledged"
    );

    // Second pass: the same keys again, as a producer that re-sends would.
    produce_json(broker.url(), TOPIC, readings(0..N, 2)).await;
    let updated = pg.wait_count(
        "SELECT count(*) FROM twice WHERE version = 2",
        N as i64,
        Duration::from_secs(120),
    );
    assert_eq!(updated, N as i64, "log:\n{}", host.log());
    assert_eq!(pg.count("SELECT count(*) FROM twice"), N as i64);
    assert_eq!(
        pg.count("SELECT count(DISTINCT (device, seq)) FROM twice"),
        N as i64
    );
    // The second pass's metadata won: its offsets follow the first pass's.
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM twice WHERE danube_offset = seq + {N}"
        )),
        N as i64
    );
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_password_stops_the_connector_naming_authentication() {
    const WRONG: &str = "wrong-Pass-4242";
    let setup = Setup::new().await;
    let cfg = setup.config("pg-auth", "", "/default/auth", "auth", KEYED);
    let (code, log) = exit_of(start(&cfg, WRONG), &cfg).await;
    assert_eq!(code, Some(4), "exit code; log:\n{log}");
    assert!(
        log.contains("authentication to PostgreSQL at 127.0.0.1")
            && log.contains("password authentication failed for user \"danube\""),
        "log:\n{log}"
    );
    assert!(!log.contains(WRONG), "the password reached the log:\n{log}");
    assert!(setup.pg.log().contains("password authentication failed"));
}

/// A directory for the sandbox with copies of the server's CA and of the
/// client certificate of [`CERT_USER`], and a CA the server's certificate is
/// not signed by (`rogue.pem`).
fn certificates(pg: &Postgres) -> tempfile::TempDir {
    let certs = tempfile::tempdir().unwrap();
    for file in [
        "ca.pem".to_string(),
        format!("{CERT_USER}.pem"),
        format!("{CERT_USER}.key"),
    ] {
        std::fs::copy(pg.dir().join(&file), certs.path().join(&file)).unwrap();
    }
    make_ca(certs.path(), "rogue");
    certs
}

/// Produces `n` readings to `/default/TABLE` and waits until `table` holds
/// them; fails with the host's log.
async fn assert_rows_arrive(setup: &Setup, table: &str, n: u64, host: &Host) {
    produce_json(
        setup.broker.url(),
        &format!("/default/{table}"),
        readings(0..n, 1),
    )
    .await;
    let sql = format!("SELECT count(*) FROM {table}");
    let landed = setup.pg.wait_count(&sql, n as i64, Duration::from_secs(60));
    assert_eq!(
        landed,
        n as i64,
        "rows in {table}; host log:\n{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_verify_full_writes_rows_and_bad_certificates_stop_the_connector() {
    const N: u64 = 500;
    let setup = Setup::with(ServerTls::Required).await;
    let certs = certificates(&setup.pg);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let ca = |name: &str| format!("ca_file = \"{}\"", file(name));
    let verify_full = format!("sslmode = \"verify-full\"\n{}", ca("ca.pem"));

    // The server's certificate checks out against its CA and 127.0.0.1.
    let cfg = setup.tls_config("pg-tls", USER, certs.path(), &verify_full, "tls_full");
    let host = setup.run(&cfg, "/default/tls_full").await;
    assert_rows_arrive(&setup, "tls_full", N, &host).await;
    assert_eq!(
        setup.pg.count(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'danube-postgres-sink'"
        ),
        1,
        "the sink's session is encrypted"
    );
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));

    // `require` encrypts without checking the certificate, `verify-ca`
    // checks its chain only (libpq's meanings): a name the certificate does
    // not carry is accepted by both.
    let other_name = "tls_server_name = \"db.example.com\"";
    for (name, tls, table) in [
        (
            "pg-tls-require",
            format!("sslmode = \"require\"\n{other_name}"),
            "tls_require",
        ),
        (
            "pg-tls-verify-ca",
            format!("sslmode = \"verify-ca\"\n{}\n{other_name}", ca("ca.pem")),
            "tls_verify_ca",
        ),
    ] {
        let cfg = setup.tls_config(name, USER, certs.path(), &tls, table);
        let host = setup.run(&cfg, &format!("/default/{table}")).await;
        assert_rows_arrive(&setup, table, 10, &host).await;
        assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));
    }

    // A user pg_hba.conf authenticates by client certificate logs in with
    // `client_cert_file` and `client_key_file`, and no password.
    let client = format!(
        "{verify_full}\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
        file(&format!("{CERT_USER}.pem")),
        file(&format!("{CERT_USER}.key"))
    );
    let cfg = setup.tls_config("pg-tls-cert", CERT_USER, certs.path(), &client, "tls_cert");
    setup
        .broker
        .create_topic("/default/tls_cert", 0, true)
        .unwrap();
    let host = Host::start(&guest("postgres-sink"), &cfg, &[]);
    wait_subscribed(
        &setup.broker,
        &["/default/tls_cert".into()],
        SUBSCRIPTION,
        &host,
    )
    .await;
    assert_rows_arrive(&setup, "tls_cert", 10, &host).await;
    assert_eq!(
        setup
            .pg
            .query("SELECT tableowner FROM pg_tables WHERE tablename = 'tls_cert'"),
        CERT_USER
    );
    assert_eq!(host.terminate(Duration::from_secs(30)).code(), Some(0));

    // A certificate that does not match stops the connector at start with a
    // configuration error (exit code 2) naming the reason; so does a plain
    // connection to a server that takes only TLS, as a refused login (4).
    for (name, tls, code, reason) in [
        (
            "pg-tls-name",
            format!("{verify_full}\ntls_server_name = \"db.example.com\""),
            2,
            "not valid for name",
        ),
        (
            "pg-tls-rogue",
            format!("sslmode = \"verify-full\"\n{}", ca("rogue.pem")),
            2,
            "UnknownIssuer",
        ),
        (
            "pg-tls-verify-ca-rogue",
            format!("sslmode = \"verify-ca\"\n{}", ca("rogue.pem")),
            2,
            "UnknownIssuer",
        ),
        // As libpq: `require` with a CA file checks the chain.
        (
            "pg-tls-require-rogue",
            format!("sslmode = \"require\"\n{}", ca("rogue.pem")),
            2,
            "UnknownIssuer",
        ),
        (
            "pg-tls-disable",
            String::new(),
            4,
            "no encryption (SQLSTATE 28000); if the server accepts only TLS connections, set sslmode",
        ),
    ] {
        let cfg = setup.tls_config(name, USER, certs.path(), &tls, "tls_refused");
        let (exit, log) = exit_of(start(&cfg, PASSWORD), &cfg).await;
        assert_eq!(exit, Some(code), "{name}: exit code; log:\n{log}");
        assert!(
            log.contains(reason),
            "{name}: no {reason:?} in the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_required_by_the_sink_but_not_offered_stops_it_saying_so() {
    let setup = Setup::new().await;
    let certs = tempfile::tempdir().unwrap();
    let require = "sslmode = \"require\"";
    let cfg = setup.tls_config("pg-no-tls", USER, certs.path(), require, "t");
    let (code, log) = exit_of(start(&cfg, PASSWORD), &cfg).await;
    assert_eq!(code, Some(2), "a configuration error; log:\n{log}");
    assert!(
        log.contains(
            "the server does not accept TLS; set sslmode = disable or enable ssl on the server"
        ),
        "log:\n{log}"
    );
}

/// postgres-sink through `danube-host test`: the contract, then a scenario
/// of readings and one the table cannot take (no `seq`, a column that is
/// not nullable); the readings are in the table afterwards.
#[test]
fn postgres_sink_keeps_the_contract_and_its_scenario() {
    let pg = Postgres::start(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let route = postgres::route("/default/readings", SUBSCRIPTION, "scenario", KEYED);
    let config = write_config(
        dir.path(),
        "pg.toml",
        "http://127.0.0.1:6650",
        "pg-harness",
        &pg.sink_config("", &route),
    );
    let mut payloads: Vec<(serde_json::Value, &str)> =
        (0..5).map(|seq| (reading(seq, 1), "written")).collect();
    payloads.push((json!({"device": "dev-x", "ok": true}), "invalid_data"));
    common::assert_sink_scenario_passes(
        dir.path(),
        &guest("postgres-sink"),
        &config,
        &payloads,
        &[("POSTGRES_PASSWORD", PASSWORD)],
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM scenario WHERE seq < 5 AND device LIKE 'dev-%'"),
        5
    );
}
