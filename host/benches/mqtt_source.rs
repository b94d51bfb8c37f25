//! Throughput of the MQTT source: messages per second from a real mosquitto
//! (started here on a free loopback port), through `danube-host` running the
//! mqtt-source connector, into Danube (the in-memory test broker).
//!
//! ```sh
//! cargo bench -p danube-host --bench mqtt_source
//! BENCH_MESSAGES=50000 cargo bench -p danube-host --bench mqtt_source
//! ```
//!
//! For each row, a fresh mosquitto and host; 500 warm-up messages, then
//! `BENCH_MESSAGES` (default 20,000) published by one `mosquitto_pub -l`
//! from its standard input. Time runs from the first byte handed to the
//! publisher to the moment the host counts the last message stored by the
//! broker (`connector_messages_sent_total`, polled every 5 ms); the broker's
//! own count is checked afterwards. Needs the Debian packages `mosquitto` and
//! `mosquitto-clients`.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::{Host, endpoint, guest, wait_until, write_config};
use danube_testkit::TestBroker;

const WARM_UP: usize = 500;
const PAYLOAD_BYTES: usize = 64;

/// One row of the table.
struct Case {
    qos: u8,
    /// mosquitto's `max_inflight_messages` (its default is 20).
    inflight: u32,
}

struct Row {
    case: Case,
    published: Duration,
    stored: Duration,
    count: usize,
    distinct: usize,
}

fn main() {
    let Some((count, runtime)) = harness::start("mqtt_source", "BENCH_MESSAGES") else {
        return;
    };
    let messages = count as usize;
    let cases = [
        Case {
            qos: 0,
            inflight: 20,
        },
        Case {
            qos: 1,
            inflight: 20,
        },
        Case {
            qos: 1,
            inflight: 200,
        },
    ];
    let module = guest("mqtt-source");
    let mut rows = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let row = runtime.block_on(run(i, case, messages, &module));
        eprintln!(
            "QoS {}, inflight {}: {:.0} msg/s",
            row.case.qos,
            row.case.inflight,
            messages as f64 / row.stored.as_secs_f64()
        );
        rows.push(row);
    }

    harness::print_table(
        &format!(
            "mosquitto -> mqtt-source -> Danube test broker: {messages} messages of {PAYLOAD_BYTES} bytes, one publisher"
        ),
        &[
            "QoS",
            "mosquitto max_inflight_messages",
            "published in",
            "stored in",
            "msg/s",
            "stored",
            "distinct",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.case.qos.to_string(),
                    r.case.inflight.to_string(),
                    format!("{:.2} s", r.published.as_secs_f64()),
                    format!("{:.2} s", r.stored.as_secs_f64()),
                    format!("{:.0}", r.count as f64 / r.stored.as_secs_f64()),
                    r.count.to_string(),
                    r.distinct.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

async fn run(index: usize, case: Case, messages: usize, module: &Path) -> Row {
    let inflight = case.inflight;
    let mqtt = Mosquitto::start_with(|_| {
        format!("allow_anonymous true\nmax_inflight_messages {inflight}\n")
    });
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("mqtt-bench-{index}");
    let topic = format!("/default/bench-{index}");
    let qos = case.qos;
    let cfg = write_config(
        dir.path(),
        "bench.toml",
        &broker.url(),
        &name,
        &format!(
            "[sandbox]\nallow = [\"127.0.0.1:{port}\"]\n\n[mqtt]\nbroker_host = \"127.0.0.1\"\nbroker_port = {port}\nclient_id = \"{name}\"\n\n\
             [[mqtt.routes]]\nfrom = \"bench/#\"\nto = \"{topic}\"\nqos = {qos}\n",
            port = mqtt.port
        ),
    );
    let host = Host::start(module, &cfg, &[]);
    let up = wait_until(Duration::from_secs(60), || {
        host.log().contains("connected to MQTT broker") && endpoint(&host).is_some()
    });
    assert!(up, "the connector did not connect; log:\n{}", host.log());
    let addr = endpoint(&host).unwrap();
    let sent = || sent_total(&addr, &topic);

    // Warm-up: the producer connected, code paths hot.
    let warm: Vec<String> = (0..WARM_UP).map(|i| format!("warm-{i}")).collect();
    let (publisher, _) = publish(mqtt.port, qos, warm);
    finish(publisher);
    assert!(
        wait_until(Duration::from_secs(60), || sent() >= WARM_UP),
        "the warm-up did not arrive; log:\n{}",
        host.log()
    );

    let lines = (0..messages)
        .map(|i| {
            let mut line = format!("m-{i:08}-");
            line.extend(std::iter::repeat_n('x', PAYLOAD_BYTES - line.len()));
            line
        })
        .collect();
    let target = WARM_UP + messages;
    let (mut publisher, started) = publish(mqtt.port, qos, lines);
    let (published, stored) = {
        let mut done = None;
        // Poll the counter while the publisher runs, so both times are
        // measured on one clock.
        let mut last_change = (sent(), Instant::now());
        let stored = loop {
            if done.is_none()
                && let Some(status) = publisher.try_wait().unwrap()
            {
                assert!(status.success(), "mosquitto_pub failed");
                done = Some(started.elapsed());
            }
            let n = sent();
            if n >= target {
                break started.elapsed();
            }
            if n != last_change.0 {
                last_change = (n, Instant::now());
            } else if done.is_some() && last_change.1.elapsed() > Duration::from_secs(10) {
                eprintln!("stalled at {n} of {target}");
                break last_change.1 - started;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let published = match done {
            Some(d) => d,
            None => {
                let _ = publisher.wait();
                started.elapsed()
            }
        };
        (published, stored)
    };
    let stored_messages = broker.messages(&topic);
    let measured: Vec<&[u8]> = stored_messages
        .iter()
        .map(|m| m.payload.as_slice())
        .filter(|p| p.starts_with(b"m-"))
        .collect();
    let distinct = measured
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let row = Row {
        case,
        published,
        stored,
        count: measured.len(),
        distinct,
    };
    assert!(host.terminate(Duration::from_secs(30)).success());
    row
}

/// `connector_messages_sent_total` for `topic`, from the host's `/metrics`.
fn sent_total(addr: &str, topic: &str) -> usize {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .lines()
        .find(|l| {
            l.starts_with("connector_messages_sent_total{")
                && l.contains(&format!("topic=\"{topic}\""))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

/// Starts `mosquitto_pub -l` on `bench/load`, waits until it is connected
/// (it reads its input only then), then hands it `lines` at once. Returns
/// the publisher and the moment the first line went out.
fn publish(port: u16, qos: u8, lines: Vec<String>) -> (Child, Instant) {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "bench/load",
        ])
        .args(["-q", &qos.to_string(), "-l", "-i"])
        .arg(format!("bench-pub-{}", std::process::id()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    // Give the publisher its connection before the clock starts.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    (child, started)
}

fn finish(mut child: Child) {
    assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
}
