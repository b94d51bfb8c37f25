//! mqtt-source end to end: a real mosquitto (started here on a free loopback
//! port), `mosquitto_pub` publishing, `danube-host` running the connector and
//! the test broker receiving. Needs the Debian packages `mosquitto` and
//! `mosquitto-clients`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Host, guest, wait_until, wait_until_async, write_config};
use danube_testkit::{StoredMessage, TestBroker};

/// A mosquitto broker on a free loopback port, stopped on drop.
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Unlimited queue for offline persistent sessions: the default (1000)
        // drops messages while the connector is down, which is what the
        // restart test must not see.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {data}/\n\
                 max_queued_messages 0\nlog_dest stderr\nuser root\n",
                port = self.port,
                data = data.display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(
            up,
            "mosquitto did not listen on {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Stops the broker cleanly (SIGTERM saves its persistence file).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `mosquitto_pub` publishing each line of `lines` as one message.
fn publish(port: u16, topic: &str, qos: u8, lines: Vec<String>) -> Child {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-q",
            &qos.to_string(),
            "-l",
        ])
        .args([
            "-i",
            &format!("pub-{}-{}", topic.replace('/', "_"), rand_suffix()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let mut text = lines.join("\n");
        text.push('\n');
        let _ = stdin.write_all(text.as_bytes());
    });
    child
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn finish(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

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

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_qos1_messages_arrive_with_their_attributes_and_are_acknowledged() {
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
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &broker,
        "mqtt-routes",
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"mqtt-routes\"\n\n\
             [[mqtt.routes]]\nfrom = \"sensors/+/temp\"\nto = \"/default/temps\"\npartitions = 3\n\n\
             [[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"/default/other\"\nqos = 0\n\n\
             [[mqtt.topic_mappings]]\nmqtt_topic = \"alerts/#\"\ndanube_topic = \"/default/alerts\"\nqos = \"ExactlyOnce\"\npartitions = 2\n",
            sandbox(mqtt.port),
            port = mqtt.port
        ),
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
    const TOTAL: usize = 6_000;
    const TOPIC: &str = "/default/kill";
    let broker = TestBroker::start().await.unwrap();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &broker,
        "mqtt-kill",
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"mqtt-kill\"\nclean_session = false\n\n\
             [[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"{TOPIC}\"\npartitions = 2\n",
            sandbox(mqtt.port),
            port = mqtt.port
        ),
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
    const TOPIC: &str = "/default/restart";
    let broker = TestBroker::start().await.unwrap();
    let mut mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &broker,
        "mqtt-restart",
        &format!(
            "{}[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"mqtt-restart\"\nkeep_alive_secs = 5\n\n\
             [[mqtt.routes]]\nfrom = \"sensors/#\"\nto = \"{TOPIC}\"\n",
            sandbox(mqtt.port),
            port = mqtt.port
        ),
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
