//! mqtt-source end to end: a real mosquitto (started here on a free loopback
//! port), `mosquitto_pub` publishing, `danube-host` running the connector and
//! the test broker receiving (danube-connect's own configuration runs on the
//! real broker too). Needs the Debian packages `mosquitto` and
//! `mosquitto-clients`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mosquitto::{Mosquitto, finish, publish, publish_paced, publish_with};
use common::tls::{make_ca, make_server_certificate};
use common::{Host, endpoint, guest, http_get, wait_until, wait_until_async, write_config};
use danube_testkit::{BrokerKind, StoredMessage, Tap, TestBroker, take_turn};

fn payload(m: &StoredMessage) -> String {
    String::from_utf8(m.payload.clone()).unwrap()
}

/// The messages of a topic, across its partitions when it has them.
fn stored(broker: &TestBroker, topic: &str, partitions: usize) -> Vec<StoredMessage> {
    if partitions > 1 {
        (0..partitions)
            .flat_map(|p| broker.messages(&format!("{topic}-part-{p}")))
            .collect()
    } else {
        broker.messages(topic)
    }
}

/// Waits until the connector logged that it is subscribed (or resumed its session).
async fn wait_subscribed(host: &Host, times: usize) {
    let ok = wait_until_async(Duration::from_secs(30), || {
        let log = host.log();
        log.matches("connected to MQTT broker").count() >= times
    })
    .await;
    assert!(ok, "the connector did not connect; log:\n{}", host.log());
}

fn sandbox(port: u16) -> String {
    format!("[sandbox]\nallow = [\"127.0.0.1:{port}\"]\n\n")
}

fn module() -> PathBuf {
    guest("mqtt-source")
}

fn config(dir: &Path, broker: &TestBroker, name: &str, rest: &str) -> PathBuf {
    write_config(dir, &format!("{name}.toml"), &broker.url(), name, rest)
}

/// The config of connector `name` reaching an MQTT broker on `port`: its
/// `[sandbox]` grant, the `[mqtt]` table (`client_id = name`, then `keys`,
/// each line ending in a newline) and `routes`.
fn mqtt_config(
    dir: &Path,
    broker: &TestBroker,
    port: u16,
    name: &str,
    keys: &str,
    routes: &str,
) -> PathBuf {
    config(
        dir,
        broker,
        name,
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"{name}\"\n{keys}\n{routes}",
            sandbox(port)
        ),
    )
}

/// One route: every `sensors/...` MQTT topic to the Danube `topic`.
fn sensors_route(topic: &str) -> String {
    format!("[[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"{topic}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_qos1_messages_arrive_with_their_attributes_and_are_acknowledged() {
    let _turn = take_turn(BrokerKind::Test).await;
    const DEVICES: usize = 4;
    const PER_DEVICE: usize = 2_500;
    const TOPIC: &str = "/default/sensors";
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // The port comes from the environment (MQTT_BROKER_PORT), as in a deployment.
    let cfg = config(
        dir.path(),
        &broker,
        "mqtt-10k",
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nclient_id = \"mqtt-10k\"\n\n[[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"{TOPIC}\"\nqos = \"AtLeastOnce\"\n",
            sandbox(mqtt.port)
        ),
    );
    let port = mqtt.port.to_string();
    let env = [("MQTT_BROKER_PORT", port.as_str())];
    let host = Host::start(&module(), &cfg, &env);
    wait_subscribed(&host, 1).await;

    let started = std::time::Instant::now();
    let publishers = (0..DEVICES)
        .map(|d| {
            let lines = (0..PER_DEVICE).map(|i| format!("dev-{d}:{i}")).collect();
            publish(mqtt.port, &format!("sensors/dev-{d}"), 1, lines)
        })
        .collect();
    finish(publishers);
    let all = wait_until_async(Duration::from_secs(60), || {
        broker.messages(TOPIC).len() >= DEVICES * PER_DEVICE
    })
    .await;
    assert!(
        all,
        "{} of {} messages arrived; host log:\n{}\nmosquitto log:\n{}",
        broker.messages(TOPIC).len(),
        DEVICES * PER_DEVICE,
        host.log(),
        mqtt.log()
    );
    eprintln!(
        "{} messages in {:?}",
        DEVICES * PER_DEVICE,
        started.elapsed()
    );

    let messages = broker.messages(TOPIC);
    assert_eq!(
        messages.len(),
        DEVICES * PER_DEVICE,
        "no duplicates on a clean run"
    );
    let mut last: HashMap<usize, usize> = HashMap::new();
    for m in &messages {
        let text = payload(m);
        let (dev, seq) = text.split_once(':').unwrap();
        let d: usize = dev.trim_start_matches("dev-").parse().unwrap();
        let seq: usize = seq.parse().unwrap();
        let mqtt_topic = format!("sensors/dev-{d}");
        assert_eq!(m.attributes.get("mqtt.topic"), Some(&mqtt_topic));
        assert_eq!(m.attributes.get("mqtt.qos").map(String::as_str), Some("1"));
        assert_eq!(
            m.attributes.get("mqtt.retain").map(String::as_str),
            Some("false")
        );
        assert_eq!(
            m.attributes.get("mqtt.dup").map(String::as_str),
            Some("false")
        );
        assert_eq!(
            m.routing_key.as_deref(),
            Some(mqtt_topic.as_str()),
            "the routing key is the MQTT topic"
        );
        if let Some(prev) = last.insert(d, seq) {
            assert!(prev < seq, "device {d}: {seq} stored after {prev}");
        }
    }
    let distinct: HashSet<String> = messages.iter().map(payload).collect();
    assert_eq!(distinct.len(), DEVICES * PER_DEVICE);

    // Everything was acknowledged upstream: a restart with the same
    // persistent session gets nothing redelivered.
    assert!(host.terminate(Duration::from_secs(30)).success());
    let host = Host::start(&module(), &cfg, &env);
    wait_subscribed(&host, 1).await;
    assert!(host.log().contains("session resumed"), "{}", host.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        broker.messages(TOPIC).len(),
        DEVICES * PER_DEVICE,
        "redelivered after a clean stop"
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_routes_fan_out_to_topics_with_different_partition_counts() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mqtt_config(
        dir.path(),
        &broker,
        mqtt.port,
        "mqtt-routes",
        "",
        "[[mqtt.routes]]\nfrom = \"sensors/+/temp\"\nto = \"/default/temps\"\npartitions = 3\n\n\
             [[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"/default/other\"\nqos = 0\n\n\
             [[mqtt.topic_mappings]]\nmqtt_topic = \"alerts/#\"\ndanube_topic = \"/default/alerts\"\nqos = \"ExactlyOnce\"\npartitions = 2\n",
    );
    // `validate` takes both shapes of a route, as `run` does.
    let validated = Command::new(common::host_bin())
        .args(["validate", "--module"])
        .arg(module())
        .arg("--config")
        .arg(&cfg)
        .env(
            "XDG_CACHE_HOME",
            common::target_dir().join("test-module-cache"),
        )
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "validate refused both shapes of a route: {}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;

    let mut pubs = Vec::new();
    for d in 0..6 {
        pubs.push(publish(
            mqtt.port,
            &format!("sensors/d{d}/temp"),
            1,
            (0..100).map(|i| format!("t{d}:{i}")).collect(),
        ));
    }
    pubs.push(publish(
        mqtt.port,
        "sensors/d0/humidity",
        1,
        (0..100).map(|i| format!("h:{i}")).collect(),
    ));
    pubs.push(publish(
        mqtt.port,
        "alerts/fire",
        2,
        (0..50).map(|i| format!("a:{i}")).collect(),
    ));
    finish(pubs);

    let done = wait_until_async(Duration::from_secs(30), || {
        stored(&broker, "/default/temps", 3).len() >= 600
            && broker.messages("/default/other").len() >= 100
            && stored(&broker, "/default/alerts", 2).len() >= 50
    })
    .await;
    assert!(
        done,
        "temps {}, other {}, alerts {}; log:\n{}",
        stored(&broker, "/default/temps", 3).len(),
        broker.messages("/default/other").len(),
        stored(&broker, "/default/alerts", 2).len(),
        host.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // temps: 3 partitions, each device's messages in one partition, in order.
    let mut partition_of: HashMap<String, usize> = HashMap::new();
    let mut used = HashSet::new();
    for p in 0..3 {
        let mut last: HashMap<String, usize> = HashMap::new();
        for m in broker.messages(&format!("/default/temps-part-{p}")) {
            let text = payload(&m);
            let (dev, seq) = text.split_once(':').unwrap();
            let seq: usize = seq.parse().unwrap();
            let topic = m.attributes["mqtt.topic"].clone();
            assert_eq!(
                topic,
                format!("sensors/d{}/temp", dev.trim_start_matches('t'))
            );
            assert_eq!(m.routing_key.as_deref(), Some(topic.as_str()));
            assert_eq!(
                *partition_of.entry(topic.clone()).or_insert(p),
                p,
                "{topic} spread over partitions"
            );
            if let Some(prev) = last.insert(topic.clone(), seq) {
                assert!(prev < seq, "{topic}: {seq} after {prev}");
            }
            used.insert(p);
        }
    }
    assert_eq!(stored(&broker, "/default/temps", 3).len(), 600);
    assert!(used.len() > 1, "six keys landed in one partition of three");
    assert!(
        broker.messages("/default/temps").is_empty(),
        "a partitioned topic stores in its partitions"
    );

    // sensors/# catches the rest (first matching route wins), subscribed at QoS 0.
    let other = broker.messages("/default/other");
    assert_eq!(other.len(), 100);
    assert!(
        other
            .iter()
            .all(|m| m.attributes["mqtt.topic"] == "sensors/d0/humidity")
    );
    assert!(
        other.iter().all(|m| m.attributes["mqtt.qos"] == "0"),
        "delivered at the subscription's QoS 0"
    );

    // alerts: the older mapping shape, QoS 2, 2 partitions.
    let alerts = stored(&broker, "/default/alerts", 2);
    assert_eq!(alerts.len(), 50);
    assert!(alerts.iter().all(|m| m.attributes["mqtt.qos"] == "2"));
    let distinct: HashSet<String> = alerts.iter().map(payload).collect();
    assert_eq!(distinct.len(), 50);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_mid_flow_loses_nothing_with_a_persistent_session() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOTAL: usize = 6_000;
    const TOPIC: &str = "/default/kill";
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mqtt_config(
        dir.path(),
        &broker,
        mqtt.port,
        "mqtt-kill",
        "clean_session = false\n",
        &format!("{}partitions = 2\n", sensors_route(TOPIC)),
    );
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;

    let pubs: Vec<Child> = (0..3)
        .map(|d| {
            publish(
                mqtt.port,
                &format!("sensors/k{d}"),
                1,
                (0..TOTAL / 3).map(|i| format!("k{d}:{i}")).collect(),
            )
        })
        .collect();
    let midway = wait_until_async(Duration::from_secs(60), || {
        stored(&broker, TOPIC, 2).len() >= 1_000
    })
    .await;
    assert!(midway, "no flow before the kill; log:\n{}", host.log());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(host.pid(), libc::SIGKILL) };
    let before_kill_log = host.log();
    drop(host);
    let at_kill = stored(&broker, TOPIC, 2).len();
    assert!(
        at_kill < TOTAL,
        "the kill came too late to test anything ({at_kill} stored)"
    );
    finish(pubs);

    let host = Host::start(&module(), &cfg, &[]);
    let all = wait_until_async(Duration::from_secs(60), || {
        stored(&broker, TOPIC, 2)
            .iter()
            .map(payload)
            .collect::<HashSet<_>>()
            .len()
            >= TOTAL
    })
    .await;
    let messages = stored(&broker, TOPIC, 2);
    let distinct: HashSet<String> = messages.iter().map(payload).collect();
    assert!(
        all,
        "{} distinct of {TOTAL} after the restart; log before the kill:\n{before_kill_log}\nlog after:\n{}",
        distinct.len(),
        host.log()
    );
    assert!(host.log().contains("session resumed"), "{}", host.log());
    let duplicates = messages.len() - distinct.len();
    let flagged = messages
        .iter()
        .filter(|m| m.attributes["mqtt.dup"] == "true")
        .count();
    eprintln!(
        "stored {at_kill} at the kill, {} in all, {duplicates} duplicates, {flagged} flagged mqtt.dup",
        messages.len()
    );
    // Duplicates only come from what was in flight at the kill: received from
    // MQTT but not yet acknowledged upstream (bounded by the host's in-flight
    // limit, 5000 by default, and in practice by mosquitto's 20 in flight).
    assert!(duplicates <= 5_000, "{duplicates} duplicates");
    // Redelivered copies carry mqtt.dup = true.
    if duplicates > 0 {
        assert!(messages.iter().any(|m| m.attributes["mqtt.dup"] == "true"));
    }
    assert!(host.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connector_reconnects_when_the_mqtt_broker_restarts() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/restart";
    let broker = TestBroker::start().await.unwrap();
    let mut mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mqtt_config(
        dir.path(),
        &broker,
        mqtt.port,
        "mqtt-restart",
        "keep_alive_secs = 5\n",
        &sensors_route(TOPIC),
    );
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;
    finish(vec![publish(
        mqtt.port,
        "sensors/r",
        1,
        (0..500).map(|i| format!("before:{i}")).collect(),
    )]);
    assert!(
        wait_until_async(Duration::from_secs(30), || broker.messages(TOPIC).len()
            >= 500)
        .await
    );

    mqtt.stop();
    // While the broker is away, the connector stays up and reports unhealthy
    // in its log; then mosquitto comes back with its persisted session.
    tokio::time::sleep(Duration::from_secs(1)).await;
    mqtt.spawn();
    finish(vec![publish(
        mqtt.port,
        "sensors/r",
        1,
        (0..500).map(|i| format!("after:{i}")).collect(),
    )]);
    let all = wait_until_async(Duration::from_secs(60), || {
        broker
            .messages(TOPIC)
            .iter()
            .map(payload)
            .collect::<HashSet<_>>()
            .len()
            >= 1_000
    })
    .await;
    assert!(
        all,
        "{} distinct stored; log:\n{}",
        broker.messages(TOPIC).len(),
        host.log()
    );
    assert!(
        host.log().contains("lost the MQTT connection"),
        "{}",
        host.log()
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// The value of the first `/metrics` sample named `name` (with any prefix)
/// whose labels include `label`.
fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let series = l.split(['{', ' ']).next().unwrap_or_default();
            series.ends_with(name) && l.contains(label)
        })?
        .rsplit_once(' ')?
        .1
        .parse()
        .ok()
}

/// Everything a host started with `cfg` logged, also once it stopped.
fn log_of(cfg: &Path) -> String {
    std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default()
}

/// Whether the host process is still running (not exited, not a zombie).
fn running(host: &Host) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", host.pid()))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// Passwords used below; none may appear in anything the host writes or serves.
const TABLE_SECRET: &str = "tbl-Pw-5e3d9c1a";
const ENV_SECRET: &str = "env-Pw-72b0f4e8";
const WRONG_SECRET: &str = "wrong-Pw-a91c3377";
const WRONG_ENV_SECRET: &str = "wrongenv-Pw-0c6d25ff";
const ROTATED_SECRET: &str = "rotated-Pw-44e1b7d2";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        TABLE_SECRET,
        ENV_SECRET,
        WRONG_SECRET,
        WRONG_ENV_SECRET,
        ROTATED_SECRET,
    ] {
        assert!(
            !text.contains(secret),
            "{what} shows the password {secret:?}:\n{text}"
        );
    }
}

/// Writes a mosquitto password file holding exactly `users`.
fn password_file(path: &Path, users: &[(&str, &str)]) {
    let _ = std::fs::remove_file(path);
    for (i, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        if i == 0 {
            command.arg("-c");
        }
        let out = command
            .arg("-b")
            .arg(path)
            .args([user, password])
            .output()
            .expect("mosquitto_passwd runs (apt-get install mosquitto)");
        assert!(
            out.status.success(),
            "mosquitto_passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A mosquitto that only admits `bridge` (TABLE_SECRET) and `envuser` (ENV_SECRET).
fn mosquitto_with_passwords() -> Mosquitto {
    Mosquitto::start_with(|dir| {
        let file = dir.join("passwd");
        password_file(&file, &[("bridge", TABLE_SECRET), ("envuser", ENV_SECRET)]);
        format!("allow_anonymous false\npassword_file {}\n", file.display())
    })
}

/// The `[mqtt]` table of the secret tests: `auth` holds the credential keys.
fn secret_config(dir: &Path, broker: &TestBroker, port: u16, name: &str, auth: &str) -> PathBuf {
    mqtt_config(
        dir,
        broker,
        port,
        name,
        &format!("{auth}\n"),
        &sensors_route("/default/secret"),
    )
}

/// Everything the host serves: `/metrics`, `/health` and `/ready`.
fn served(host: &Host) -> String {
    let addr = endpoint(host).expect("the host logs where it serves metrics");
    ["/metrics", "/health", "/ready"]
        .iter()
        .map(|path| format!("{path}:\n{}\n", http_get(&addr, path).1))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_from_the_table_and_the_environment_never_show_in_logs_or_endpoints() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/secret";
    let broker = TestBroker::start().await.unwrap();
    let mut mqtt = mosquitto_with_passwords();
    let port = mqtt.port;
    let dir = tempfile::tempdir().unwrap();
    let debug = ("LOG_LEVEL", "debug");

    // 1. The password in the [mqtt] table, debug logs.
    let cfg = secret_config(
        dir.path(),
        &broker,
        port,
        "mqtt-secret-table",
        &format!("username = \"bridge\"\npassword = \"{TABLE_SECRET}\""),
    );
    let host = Host::start(&module(), &cfg, &[debug]);
    wait_subscribed(&host, 1).await;
    finish(vec![publish_with(
        port,
        "sensors/a",
        1,
        vec!["from the table".into()],
        &["-u", "bridge", "-P", TABLE_SECRET],
    )]);
    assert!(
        wait_until_async(Duration::from_secs(30), || !broker
            .messages(TOPIC)
            .is_empty())
        .await,
        "{}",
        host.log()
    );
    let mut seen = served(&host);
    assert!(
        seen.contains("mqtt_connected"),
        "the connector's own metrics are served:\n{seen}"
    );

    // The password changes on the broker: every reconnect is refused now,
    // and the refusal is logged, counted and reported by /health.
    mqtt.stop();
    password_file(
        &mqtt.dir().join("passwd"),
        &[("bridge", ROTATED_SECRET), ("envuser", ENV_SECRET)],
    );
    mqtt.spawn();
    let refused = wait_until_async(Duration::from_secs(30), || {
        host.log().contains("refused the connection")
    })
    .await;
    assert!(refused, "no refusal logged:\n{}", host.log());
    seen.push_str(&served(&host));
    assert!(running(&host), "a refused reconnect stops nothing");
    assert!(host.terminate(Duration::from_secs(30)).success());
    let log = log_of(&cfg);
    assert!(
        log.contains("DEBUG"),
        "the host logged at debug level:\n{log}"
    );
    assert_no_secret("the debug log (password in the table)", &log);
    assert_no_secret("/metrics, /health or /ready", &seen);

    // 2. The password from MQTT_PASSWORD; anonymous clients are refused, so
    // connecting at all shows the variable reached the connector.
    let cfg = secret_config(
        dir.path(),
        &broker,
        port,
        "mqtt-secret-env",
        "username = \"envuser\"",
    );
    let host = Host::start(&module(), &cfg, &[debug, ("MQTT_PASSWORD", ENV_SECRET)]);
    wait_subscribed(&host, 1).await;
    finish(vec![publish_with(
        port,
        "sensors/b",
        1,
        vec!["from the environment".into()],
        &["-u", "envuser", "-P", ENV_SECRET],
    )]);
    assert!(
        wait_until_async(Duration::from_secs(30), || broker.messages(TOPIC).len()
            >= 2)
        .await,
        "{}",
        host.log()
    );
    let seen = served(&host);
    assert!(host.terminate(Duration::from_secs(30)).success());
    assert_no_secret("the debug log (password from MQTT_PASSWORD)", &log_of(&cfg));
    assert_no_secret("/metrics, /health or /ready", &seen);

    // Nor does the state the connectors persisted (subscriptions, generation).
    let state: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!state.is_empty(), "no state persisted");
    for file in state {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert_no_secret(&file.display().to_string(), &text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_and_mistyped_passwords_stop_the_connector_without_showing_them() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    let mqtt = mosquitto_with_passwords();
    let dir = tempfile::tempdir().unwrap();
    // (name, credential keys, MQTT_PASSWORD, what the error must say): the
    // first three are refused by the broker, the others by the connector's
    // configuration checks.
    let cases: [(&str, String, Option<String>, &[&str]); 6] = [
        (
            "wrong-in-table",
            format!("username = \"bridge\"\npassword = \"{WRONG_SECRET}\""),
            None,
            &["refused the connection"],
        ),
        (
            "wrong-in-env",
            format!("username = \"bridge\"\npassword = \"{WRONG_SECRET}\""),
            Some(WRONG_ENV_SECRET.to_string()),
            &["refused the connection"],
        ),
        (
            // A text key takes the variable as text, brackets and all.
            "brackets-from-env",
            "username = \"bridge\"".to_string(),
            Some(format!("[\"{WRONG_ENV_SECRET}\"]")),
            &["refused the connection"],
        ),
        (
            "table-instead-of-string",
            format!("username = \"bridge\"\npassword = {{ value = \"{WRONG_SECRET}\" }}"),
            None,
            &["password"],
        ),
        (
            "without-username",
            format!("password = \"{TABLE_SECRET}\""),
            None,
            &["username"],
        ),
        (
            "other-key-mistyped",
            format!(
                "username = \"bridge\"\npassword = \"{TABLE_SECRET}\"\nkeep_alive_secs = \"soon\""
            ),
            None,
            &["keep_alive_secs"],
        ),
    ];
    for (name, auth, env, expected) in cases {
        let name = format!("mqtt-secret-{name}");
        let cfg = secret_config(dir.path(), &broker, mqtt.port, &name, &auth);
        let mut vars = vec![("LOG_LEVEL", "debug")];
        if let Some(value) = &env {
            vars.push(("MQTT_PASSWORD", value));
        }

        // `run`: the connector stops at start with a configuration error.
        let host = Host::start(&module(), &cfg, &vars);
        let status = host_exit(host, &name, expected);
        assert_eq!(
            status.0,
            Some(2),
            "{name}: a configuration error; log:\n{}",
            status.1
        );

        // `validate` (which checks the table against the connector's schema
        // too) prints no password either, on stdout or in its JSON logs.
        let out = Command::new(common::host_bin())
            .args(["validate", "--module"])
            .arg(module())
            .arg("--config")
            .arg(&cfg)
            .envs(vars.iter().copied())
            .env(
                "XDG_CACHE_HOME",
                common::target_dir().join("test-module-cache"),
            )
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_secret(&format!("{name}: the output of validate"), &text);
    }
}

/// Waits for a host that must stop by itself; checks its log names the
/// problem (`expected`) and shows no password. Returns (exit code, log).
fn host_exit(host: Host, name: &str, expected: &[&str]) -> (Option<i32>, String) {
    let exited = wait_until(Duration::from_secs(30), || !running(&host));
    let log = host.log();
    assert!(exited, "{name}: the host kept running; log:\n{log}");
    let code = host.wait(Duration::from_secs(5)).code();
    for e in expected {
        assert!(
            log.contains(e),
            "{name}: the log does not say {e:?}:\n{log}"
        );
    }
    assert_no_secret(&format!("{name}: the log"), &log);
    (code, log)
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Starts `mosquitto_pub` publishing the content of `file` as one message.
fn publish_file(port: u16, topic: &str, qos: u8, file: &Path) -> Child {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", &qos.to_string(), "-f"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)")
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_over_max_packet_size_are_dropped_with_a_log_line_and_the_flow_goes_on() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/sized";
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mqtt_config(
        dir.path(),
        &broker,
        mqtt.port,
        "mqtt-sized",
        "max_packet_size = 1024\n",
        &sensors_route(TOPIC),
    );
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;

    let small = |range: std::ops::Range<usize>| range.map(|i| format!("small:{i}")).collect();
    finish(vec![publish(mqtt.port, "sensors/small", 1, small(0..50))]);
    // 4 KiB at QoS 1 (dropped, yet acknowledged so that it is not
    // redelivered) and 300 KiB at QoS 0 (skipped over several reads).
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'b'; 4096]).unwrap();
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b'h'; 300_000]).unwrap();
    finish(vec![
        publish_file(mqtt.port, "sensors/big", 1, &big),
        publish_file(mqtt.port, "sensors/huge", 0, &huge),
    ]);
    finish(vec![publish(mqtt.port, "sensors/small", 1, small(50..100))]);

    let all = wait_until_async(Duration::from_secs(30), || {
        broker.messages(TOPIC).len() >= 100
    })
    .await;
    assert!(
        all,
        "{} of 100 arrived; log:\n{}",
        broker.messages(TOPIC).len(),
        host.log()
    );
    let log = host.log();
    for topic in ["sensors/big", "sensors/huge"] {
        assert!(
            log.lines().any(|l| l.contains("dropping an MQTT message")
                && l.contains(&format!("on \"{topic}\" exceeds max_packet_size (1024)"))),
            "no line about the oversized message on {topic}:\n{log}"
        );
    }
    assert!(
        !log.contains("lost the MQTT connection"),
        "an oversized message cost the connection:\n{log}"
    );
    let addr = endpoint(&host).unwrap();
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(
        sample(
            &metrics,
            "mqtt_messages_dropped_total",
            "reason=\"oversized\""
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(http_get(&addr, "/health").0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = broker.messages(TOPIC);
    let payloads: Vec<String> = messages.iter().map(payload).collect();
    let expected: Vec<String> = small(0..100);
    assert_eq!(payloads, expected, "every small message, once, in order");
    assert!(running(&host));

    // The dropped QoS 1 message was acknowledged: a restart on the same
    // persistent session gets nothing back.
    assert!(host.terminate(Duration::from_secs(30)).success());
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;
    finish(vec![publish(
        mqtt.port,
        "sensors/small",
        1,
        small(100..101),
    )]);
    assert!(
        wait_until_async(Duration::from_secs(30), || broker.messages(TOPIC).len()
            >= 101)
        .await,
        "{}",
        host.log()
    );
    assert!(
        !host.log().contains("exceeds max_packet_size"),
        "the oversized message came back:\n{}",
        host.log()
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// What a [`FakeBroker`] does on one connection.
#[derive(Clone, Copy)]
enum Step {
    /// Answers CONNECT with these bytes instead of a CONNACK.
    InsteadOfConnack(&'static [u8]),
    /// Accepts the connection and the subscription, then sends these bytes.
    AfterSuback(&'static [u8]),
}

/// A minimal MQTT broker on a free loopback port: its n-th connection
/// follows the n-th step of its script; once the script is spent, it accepts
/// the connection and the subscription, publishes one valid QoS 1 message
/// (packet id 7) and answers PINGREQ. Its threads end with the test process.
struct FakeBroker {
    port: u16,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Script connections the connector closed after the bad bytes.
    hung_up: Arc<AtomicUsize>,
    /// Packet ids of the PUBACKs received.
    pubacks: Arc<Mutex<Vec<u16>>>,
}

const FAKE_PAYLOAD: &[u8] = b"valid after garbage";

impl FakeBroker {
    fn start(script: Vec<Step>) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake = FakeBroker {
            port: listener.local_addr().unwrap().port(),
            connections: Arc::default(),
            hung_up: Arc::default(),
            pubacks: Arc::default(),
        };
        let (connections, hung_up, pubacks) = (
            fake.connections.clone(),
            fake.hung_up.clone(),
            fake.pubacks.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let step = script
                    .get(connections.fetch_add(1, Ordering::SeqCst))
                    .copied();
                let (hung_up, pubacks) = (hung_up.clone(), pubacks.clone());
                std::thread::spawn(move || {
                    let _ = fake_session(stream, step, &hung_up, &pubacks);
                });
            }
        });
        fake
    }
}

/// Reads one MQTT packet: (first byte, body).
fn read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let first = byte[0];
    let mut len = 0usize;
    for i in 0..4 {
        stream.read_exact(&mut byte)?;
        len |= ((byte[0] & 0x7F) as usize) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((first, body))
}

fn fake_session(
    mut stream: TcpStream,
    step: Option<Step>,
    hung_up: &AtomicUsize,
    pubacks: &Mutex<Vec<u16>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (first, _) = read_packet(&mut stream)?;
    assert_eq!(first >> 4, 1, "CONNECT first");
    // After bad bytes, the connector must close the connection.
    let await_hangup = |mut stream: TcpStream| {
        let mut sink = [0u8; 256];
        while let Ok(n) = stream.read(&mut sink) {
            if n == 0 {
                hung_up.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    };
    if let Some(Step::InsteadOfConnack(bytes)) = step {
        stream.write_all(bytes)?;
        await_hangup(stream);
        return Ok(());
    }
    stream.write_all(&[0x20, 2, 0, 0])?;
    let (first, body) = read_packet(&mut stream)?;
    assert_eq!(first, 0x82, "SUBSCRIBE after CONNACK");
    // SUBACK granting QoS 1 to every filter (2-byte length, filter, QoS byte).
    let mut filters = 0;
    let mut at = 2;
    while at + 2 <= body.len() {
        at += 2 + u16::from_be_bytes([body[at], body[at + 1]]) as usize + 1;
        filters += 1;
    }
    let mut suback = vec![0x90, 2 + filters as u8, body[0], body[1]];
    suback.extend(std::iter::repeat_n(1u8, filters));
    stream.write_all(&suback)?;
    if let Some(Step::AfterSuback(bytes)) = step {
        stream.write_all(bytes)?;
        await_hangup(stream);
        return Ok(());
    }
    let topic = b"sensors/fake";
    let mut publish = vec![0x32, (2 + topic.len() + 2 + FAKE_PAYLOAD.len()) as u8, 0];
    publish.push(topic.len() as u8);
    publish.extend_from_slice(topic);
    publish.extend_from_slice(&[0, 7]);
    publish.extend_from_slice(FAKE_PAYLOAD);
    stream.write_all(&publish)?;
    loop {
        let (first, body) = read_packet(&mut stream)?;
        match first >> 4 {
            4 => pubacks
                .lock()
                .unwrap()
                .push(u16::from_be_bytes([body[0], body[1]])),
            12 => stream.write_all(&[0xD0, 0])?,
            14 => return Ok(()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_packets_cost_the_connection_not_the_connector() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/fake";
    let script = vec![
        // Remaining length over four bytes.
        Step::AfterSuback(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        // PUBLISH with QoS 3.
        Step::AfterSuback(&[0x36, 5, 0, 1, b'a', b'x', b'y']),
        // Reserved packet type 15 instead of CONNACK.
        Step::InsteadOfConnack(&[0xF0, 0]),
        // PUBLISH whose topic is not UTF-8.
        Step::AfterSuback(&[0x30, 6, 0, 2, 0xC3, 0x28, b'h', b'i']),
        // QoS 1 PUBLISH too short for its packet id.
        Step::AfterSuback(&[0x32, 3, 0, 1, b'a']),
        // PUBACK without a packet id.
        Step::AfterSuback(&[0x40, 0]),
        // CONNACK without flags and return code.
        Step::InsteadOfConnack(&[0x20, 0]),
        // SUBACK cut short in its packet id.
        Step::AfterSuback(&[0x90, 1, 0]),
        // Not MQTT at all.
        Step::AfterSuback(b"\x00\x00HTTP/1.1 400 Bad Request\r\n\r\n"),
    ];
    let bad = script.len();
    let fake = FakeBroker::start(script);
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mqtt_config(
        dir.path(),
        &broker,
        fake.port,
        "mqtt-fake",
        "connection_timeout_secs = 3\n",
        &sensors_route(TOPIC),
    );
    let host = Host::start(&module(), &cfg, &[]);

    let arrived = wait_until_async(Duration::from_secs(60), || {
        !broker.messages(TOPIC).is_empty()
    })
    .await;
    let log = host.log();
    assert!(
        arrived,
        "nothing arrived after {} connections; log:\n{log}",
        fake.connections.load(Ordering::SeqCst)
    );
    let messages = broker.messages(TOPIC);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].payload, FAKE_PAYLOAD);
    assert_eq!(messages[0].attributes["mqtt.topic"], "sensors/fake");
    assert!(
        wait_until_async(Duration::from_secs(30), || fake
            .pubacks
            .lock()
            .unwrap()
            .contains(&7))
        .await,
        "the message was not acknowledged upstream; log:\n{}",
        host.log()
    );

    // One clear line per bad connection, which the connector closed; the
    // worker never died.
    assert!(
        wait_until(Duration::from_secs(10), || fake
            .hung_up
            .load(Ordering::SeqCst)
            == bad),
        "{} of {bad} bad connections closed by the connector; log:\n{log}",
        fake.hung_up.load(Ordering::SeqCst)
    );
    assert_eq!(fake.connections.load(Ordering::SeqCst), bad + 1, "{log}");
    let lines = log
        .lines()
        .filter(|l| l.contains("MQTT protocol error"))
        .count();
    assert!(
        lines >= bad,
        "{lines} lines about a protocol error for {bad} bad connections:\n{log}"
    );
    for expected in [
        "lost the MQTT connection",
        "remaining length longer than 4 bytes",
        "invalid QoS 3 in PUBLISH",
        "reserved packet type 15",
        "a PUBLISH of 3 bytes, at least 5 expected",
        "a CONNACK of 0 bytes, 2 expected",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    assert!(
        !log.contains("worker died"),
        "a malformed packet killed the worker:\n{log}"
    );
    assert!(running(&host));
    assert_eq!(http_get(&endpoint(&host).unwrap(), "/health").0, 200);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A mosquitto whose listener speaks only TLS, with a server certificate for
/// 127.0.0.1 signed by the CA `ca.pem` in its directory.
fn mosquitto_with_tls() -> Mosquitto {
    Mosquitto::start_with(|dir| {
        make_server_certificate(dir);
        format!(
            "allow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = dir.display()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_connections_verify_the_broker_and_carry_the_flow() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/tls";
    const COUNT: usize = 500;
    let broker = TestBroker::start().await.unwrap();
    let mqtt = mosquitto_with_tls();
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(mqtt.dir().join("ca.pem"), certs.path().join("ca.pem")).unwrap();
    make_ca(certs.path(), "rogue");
    let dir = tempfile::tempdir().unwrap();
    let tls_config = |name: &str, tls: &str| {
        config(
            dir.path(),
            &broker,
            name,
            &format!(
                "[sandbox]\nallow = [\"127.0.0.1:{port}\"]\ndirs = [\"{certs}\"]\n\n\
                 [mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"{name}\"\n\
                 use_tls = true\n{tls}\n\n[[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"{TOPIC}\"\n",
                port = mqtt.port,
                certs = certs.path().display()
            ),
        )
    };
    let ca = |file: &str| format!("ca_file = \"{}\"", certs.path().join(file).display());

    // The broker's certificate checks out against the CA: the flow runs over TLS.
    let cfg = tls_config("mqtt-tls", &ca("ca.pem"));
    let host = Host::start(&module(), &cfg, &[]);
    wait_subscribed(&host, 1).await;
    let lines = (0..COUNT).map(|i| format!("tls:{i}")).collect();
    let ca_arg = mqtt.dir().join("ca.pem").display().to_string();
    finish(vec![publish_with(
        mqtt.port,
        "sensors/a",
        1,
        lines,
        &["--cafile", &ca_arg],
    )]);
    let all = wait_until_async(Duration::from_secs(30), || {
        broker.messages(TOPIC).len() >= COUNT
    })
    .await;
    assert!(
        all,
        "{} of {COUNT} arrived; log:\n{}",
        broker.messages(TOPIC).len(),
        host.log()
    );
    let distinct: HashSet<String> = broker.messages(TOPIC).iter().map(payload).collect();
    assert_eq!(distinct.len(), COUNT);
    assert!(host.terminate(Duration::from_secs(30)).success());

    // A certificate from another CA, or for another name, stops the connector
    // at start with a configuration error that says why.
    for (name, tls, reason) in [
        ("mqtt-tls-rogue", ca("rogue.pem"), "UnknownIssuer"),
        (
            "mqtt-tls-name",
            format!("{}\ntls_server_name = \"mqtt.example.com\"", ca("ca.pem")),
            "not valid for name",
        ),
        ("mqtt-tls-missing", ca("absent.pem"), "absent.pem"),
    ] {
        let host = Host::start(&module(), &tls_config(name, &tls), &[]);
        let (code, log) = host_exit(host, name, &[reason]);
        assert_eq!(code, Some(2), "{name}: a configuration error; log:\n{log}");
    }
}

/// [`common::upstream`] for source-mqtt's files.
fn upstream(command: &str, file: &str) -> std::process::Output {
    common::upstream("source-mqtt", &module(), command, file, &[])
}

/// danube-connect's MQTT configurations are read as they are: the one with
/// schemas validates whole (string, bytes and number schemas without a
/// file, JSON Schemas from the working directory, `partitions = 1`); the
/// example's only complaint is its schema files under `/etc/schemas`, which
/// exist in upstream's container, not here.
#[test]
fn danube_connect_mqtt_configurations_validate_unchanged() {
    let out = upstream("validate", "config/connector-with-schemas.toml");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `run` checks what `validate` does, first: it refuses the example for
    // the same reason, before it reaches any broker.
    for command in ["validate", "run"] {
        let out = upstream(command, "example/connector.toml");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("cannot read schema_file /etc/schemas/sensor-data.json"),
            "{command}: {stderr}"
        );
    }
}

danube_testkit::on_both_brokers! {
    /// danube-connect's MQTT configuration with schemas runs as it is: the
    /// file unchanged (in a copy of its directory, upstream's working
    /// directory), the addresses through the environment overrides upstream
    /// documents, and the sandbox's grant on the command line. Each route's
    /// records land on its topic's partitions with the schema of its
    /// `[[schemas]]` entry; a record its JSON Schema refuses goes to the
    /// dead-letter topic.
    async fn danube_connect_mqtt_configuration_runs_unchanged(broker: Broker) {
        const SENSORS: usize = 20;
        const DEAD_LETTERS: &str = "/default/mqtt-schema-example-dlq";
        // As upstream's deployment bootstraps its broker: the namespace of
        // the file's topics exists. The topics exist too, with the
        // partitions the file gives them, for the taps to subscribe before
        // anything is published (a new subscription starts at the latest
        // message).
        broker.create_namespace("iot").await.unwrap();
        let topics = [("/iot/sensors", 8), ("/iot/metrics", 2), ("/iot/binary", 4), (DEAD_LETTERS, 0)];
        let mut taps = Vec::new();
        for (topic, partitions) in topics {
            broker.create_topic(topic, partitions, true).await.unwrap();
            taps.push(Tap::start(&broker.url(), topic).await.unwrap());
        }
        let mqtt = Mosquitto::start();
        let dir = tempfile::tempdir().unwrap();
        let upstream = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/danube-connectors/source-mqtt");
        let cwd = dir.path().join("source-mqtt");
        common::copy_tree(&upstream, &cwd);
        let config = cwd.join("config/connector-with-schemas.toml");
        let (port, allow) = (mqtt.port.to_string(), format!("127.0.0.1:{}", mqtt.port));
        let env = [
            ("DANUBE_SERVICE_URL", broker.url()),
            ("MQTT_BROKER_HOST", "127.0.0.1".to_string()),
            ("MQTT_BROKER_PORT", port),
            // Its metrics port is fixed (9090); tests run side by side.
            ("METRICS_PORT", "0".to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let host = Host::start_in(&cwd, &module(), &config, &env, &["--allow", &allow]);
        wait_subscribed(&host, 1).await;

        let sensor = |i: usize| {
            format!(
                r#"{{"device_id":"d{i}","sensor_type":"temperature","value":{i}.5,"timestamp":"2026-12-07T06:00:00Z"}}"#
            )
        };
        let mut sensors: Vec<String> = (0..SENSORS).map(sensor).collect();
        sensors.push(r#"{"device_id":"d-bad","value":"hot"}"#.to_string());
        // Keyed by MQTT topic: five rooms spread over the partitions.
        let mut publishers: Vec<Child> = sensors
            .chunks(5)
            .enumerate()
            .map(|(room, readings)| publish(mqtt.port, &format!("sensors/room{room}"), 1, readings.to_vec()))
            .collect();
        publishers.extend([
            publish(mqtt.port, "metrics/cpu", 1, vec!["42".into(), "3.5".into()]),
            publish(mqtt.port, "devices/d1/binary", 1, vec!["\u{1}\u{2}".into()]),
        ]);
        finish(publishers);
        let [sensors, metrics, binary, dead_letters] = &taps[..] else {
            unreachable!()
        };
        let expected = [(sensors, SENSORS), (metrics, 2), (binary, 1), (dead_letters, 1)];
        for (tap, count) in expected {
            tap.wait_for(count, Duration::from_secs(30)).await;
        }
        let arrived: Vec<usize> = taps.iter().map(|t| t.stored().len()).collect();
        assert_eq!(
            arrived,
            [SENSORS, 2, 1, 1],
            "sensors, metrics, binary, dead letters; log:\n{}",
            host.log()
        );
        for message in sensors.stored().iter().chain(&metrics.stored()) {
            assert!(message.schema_id.is_some(), "{message:?}");
        }
        let spread: HashSet<String> = sensors.stored().into_iter().map(|m| m.topic).collect();
        assert!(spread.len() > 1, "one partition only: {spread:?}");
        let refused = &dead_letters.stored()[0];
        assert!(String::from_utf8_lossy(&refused.payload).contains("d-bad"));
        assert_eq!(refused.attributes["dlq.error_class"], "invalid_data");
        // The connector's state lives in the working directory, as upstream's.
        assert!(host.terminate(Duration::from_secs(30)).success());
        assert!(cwd.join("danube-state").is_dir());
    }
}

/// mqtt-source through `danube-host test` against mosquitto, with readings
/// published at QoS 1 while it runs: every check passes, the resumption
/// included (a persistent session: the broker delivers again what the first
/// instance did not commit, and not what it did).
#[test]
fn mqtt_source_keeps_the_contract() {
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "mqtt.toml",
        "http://127.0.0.1:6650",
        "mqtt-harness",
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {}\nclient_id = \"mqtt-harness\"\n\
             clean_session = false\n\n{}qos = \"AtLeastOnce\"\n",
            sandbox(mqtt.port),
            mqtt.port,
            sensors_route("/default/sensors")
        ),
    );
    // Readings all along the run: its first instance subscribes a moment
    // after it starts, and what comes before is not kept for a session
    // that does not exist yet.
    let readings = (0..100_000).map(|i| format!(r#"{{"seq":{i}}}"#)).collect();
    let mut publisher = publish_paced(mqtt.port, "sensors/room1", 1, readings, 25);
    let (passed, report) = common::conformance(&module(), &config, &[], &[]);
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    assert!(passed, "{report}");
    assert!(
        report.contains("pass  a restarted instance resumes after its last commit"),
        "{report}"
    );
}
