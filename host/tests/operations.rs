//! The management API (`--api`) and the live views built on it, as an
//! operator uses them: a real HTTP client against running hosts, counted
//! flows through pause, resume, restarts of the host and of a connector,
//! `danube-host tap` as a process, `danube-host top` in a tmux pane.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Host, endpoint, guest, http_call, seqs_in_file, wait_subscribed, write_config};
use danube_testkit::{BrokerKind, TestBroker, take_turn, wait_until};
use serde_json::Value;

const TOPIC: &str = "/default/ops";
const SOURCE: &str = "ops-source";
const SINK: &str = "ops-sink";

/// `method path` on the host's endpoint, with the token when given: (status,
/// the JSON answer).
fn api(host: &Host, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let addr = endpoint(host).expect("the host serves its endpoint");
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (status, body) = http_call(&addr, method, path, &headers);
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

/// `method path` with a JSON body.
fn api_with_body(host: &Host, method: &str, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = endpoint(host).expect("the host serves its endpoint");
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A connector's entry in `GET /connectors`.
fn listed(host: &Host, name: &str) -> Value {
    let (status, list) = api(host, "GET", "/connectors", None);
    assert_eq!(status, 200, "{list}");
    list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .clone()
}

fn sent(host: &Host, name: &str) -> u64 {
    listed(host, name)["counters"]["sent"].as_u64().unwrap()
}

async fn wait_for(what: &str, host: &Host, mut condition: impl FnMut() -> bool) {
    let met = wait_until(Duration::from_secs(60), || {
        let met = condition();
        async move { met }
    })
    .await;
    assert!(met, "{what}; log:\n{}", host.log());
}

fn start(config: &Path, module: &str) -> Host {
    let host = Host::start_in(
        config.parent().unwrap(),
        &guest(module),
        config,
        &[],
        &["--api"],
    );
    assert!(
        common::wait_until(Duration::from_secs(60), || endpoint(&host).is_some()),
        "no endpoint; log:\n{}",
        host.log()
    );
    host
}

danube_testkit::on_both_brokers! {
    /// A datagen source and a file sink, each on a host with the API on.
    /// The list shows both; a paused sink takes nothing more (at most the
    /// broker's window of unacknowledged messages is finished) while the
    /// source goes on, says so on /connectors, /health and /metrics; resumed,
    /// it catches up. Both paused, the sink's host is restarted and comes
    /// back paused (kept beside its state); resumed, the flow goes on, the
    /// source is restarted through the API mid-flow, and every record
    /// reaches the file. Last, the paused source's position is moved back
    /// 500 records: resumed, it publishes them again.
    async fn pause_resume_and_restarts_lose_nothing(broker: Broker) {
        const N: u64 = 3000;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        let sink_config = write_config(
            dir.path(),
            "sink.toml",
            &broker.url(),
            SINK,
            &format!(
                "[processing]\nbatch_size = 100\n\n{}",
                common::file_sink_tables(&out, TOPIC, "ops")
            ),
        );
        let sink = start(&sink_config, "file-sink");
        wait_subscribed(&broker, &[TOPIC.to_string()], "ops", &sink).await;
        // 300 records a second: a paused sink on the real broker must not
        // fall 256 behind (the broker then drops the subscription's
        // messages), so pauses below are short or pause the source too.
        let source_config = write_config(
            dir.path(),
            "source.toml",
            &broker.url(),
            SOURCE,
            &format!("[datagen]\ntopics = [\"{TOPIC}\"]\ncount = {N}\nrate = 300\n"),
        );
        let source = start(&source_config, "datagen-source");
        let out_file = out.join("records.jsonl");
        let written = || seqs_in_file(&out_file).values().sum::<usize>() as u64;

        wait_for("the sink writes", &sink, || written() >= 200).await;
        let entry = listed(&sink, SINK);
        assert_eq!(entry["state"], "running", "{entry}");
        assert_eq!(entry["world"], "sink", "{entry}");
        assert_eq!(entry["module_sha256"].as_str().unwrap().len(), 64, "{entry}");
        assert_eq!(listed(&source, SOURCE)["world"], "source");

        // Pause the sink while the source goes on.
        let (status, answer) = api(&sink, "POST", &format!("/connectors/{SINK}/pause"), None);
        assert_eq!((status, answer["paused"].as_bool()), (200, Some(true)), "{answer}");
        let at_pause = written();
        let source_at_pause = sent(&source, SOURCE);
        wait_for("the source publishes on", &source, || {
            sent(&source, SOURCE) >= source_at_pause + 150
        })
        .await;
        // What the sink had taken when the pause took hold is finished: no
        // more than the broker's window of 10 unacknowledged messages, twice
        // (those taken, and those delivered meanwhile).
        let during = written() - at_pause;
        assert!(during <= 20, "{during} records written while paused");
        let entry = listed(&sink, SINK);
        assert_eq!(entry["state"], "paused", "{entry}");
        let detail = entry["health"]["detail"].as_str().unwrap();
        assert!(detail.contains("paused"), "{entry}");
        let metrics = common::http_get(&endpoint(&sink).unwrap(), "/metrics").1;
        assert!(
            metrics.contains(&format!("connector_paused{{connector=\"{SINK}\"}} 1")),
            "{metrics}"
        );
        let (status, _) = api(&sink, "POST", &format!("/connectors/{SINK}/resume"), None);
        assert_eq!(status, 200);
        wait_for("the sink catches up", &sink, || {
            written() >= sent(&source, SOURCE).min(N) && written() > at_pause + during
        })
        .await;

        // Both paused; the sink's host stops and starts again: still paused.
        for (host, name) in [(&source, SOURCE), (&sink, SINK)] {
            let (status, _) = api(host, "POST", &format!("/connectors/{name}/pause"), None);
            assert_eq!(status, 200);
        }
        assert!(dir.path().join(format!("state/{SINK}.paused")).exists());
        assert!(sink.terminate(Duration::from_secs(30)).success());
        let sink = start(&sink_config, "file-sink");
        wait_for("the sink comes back paused", &sink, || {
            let entry = listed(&sink, SINK);
            entry["state"] == "paused" && entry["world"] == "sink"
        })
        .await;
        for (host, name) in [(&sink, SINK), (&source, SOURCE)] {
            let (status, _) = api(host, "POST", &format!("/connectors/{name}/resume"), None);
            assert_eq!(status, 200);
        }
        assert!(!dir.path().join(format!("state/{SINK}.paused")).exists());

        // The source restarted through the API mid-flow.
        let before = sent(&source, SOURCE);
        wait_for("the source publishes after the resume", &source, || {
            sent(&source, SOURCE) >= (before + 100).min(N)
        })
        .await;
        let (status, answer) = api(&source, "POST", &format!("/connectors/{SOURCE}/restart"), None);
        assert_eq!(status, 202, "{answer}");
        wait_for("the source restarts", &source, || {
            source.log().contains("restarting: draining, then starting again")
                && listed(&source, SOURCE)["state"] == "running"
        })
        .await;

        wait_for("every record is written", &sink, || {
            seqs_in_file(&out_file).len() as u64 >= N
        })
        .await;
        let seqs = seqs_in_file(&out_file);
        assert!((0..N).all(|s| seqs.contains_key(&s)), "a record is missing");
        wait_for("the source commits its last record", &source, || {
            common::committed_seq(&dir.path().join(format!("state/{SOURCE}.state.json")))
                == Some(N - 1)
        })
        .await;

        // The source's position, read and moved back 500 records while
        // paused: resumed, it publishes them again, and they reach the file.
        let offsets = format!("/connectors/{SOURCE}/offsets");
        let (status, answer) = api(&source, "GET", &offsets, None);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"]["committed_seq"], (N - 1).to_string(), "{answer}");
        let rewind = format!("{{\"state\": {{\"committed_seq\": \"{}\"}}}}", N - 501);
        let (status, answer) = api_with_body(&source, "PUT", &offsets, &rewind);
        assert_eq!(status, 409, "not paused: {answer}");
        assert_eq!(api(&sink, "GET", &format!("/connectors/{SINK}/offsets"), None).0, 409);
        api(&source, "POST", &format!("/connectors/{SOURCE}/pause"), None);
        let (status, answer) = api_with_body(&source, "PUT", &offsets, &rewind);
        assert_eq!(status, 202, "{answer}");
        wait_for("the source restarts from the new position", &source, || {
            api(&source, "GET", &offsets, None).1["state"]["committed_seq"].as_str()
                == Some((N - 501).to_string().as_str())
                && listed(&source, SOURCE)["state"] == "paused"
        })
        .await;
        api(&source, "POST", &format!("/connectors/{SOURCE}/resume"), None);
        wait_for("the rewound records reach the file again", &sink, || {
            let seqs = seqs_in_file(&out_file);
            (N - 500..N).all(|s| seqs.get(&s).is_some_and(|&n| n >= 2))
        })
        .await;
        let seqs = seqs_in_file(&out_file);
        assert!((0..N).all(|s| seqs.contains_key(&s)), "a record is missing");
        println!(
            "{:?} broker: {N} records through pauses and restarts, {} written while paused, {} lines",
            broker.kind(),
            during,
            seqs.values().sum::<usize>()
        );
        assert!(source.terminate(Duration::from_secs(30)).success());
        assert!(sink.terminate(Duration::from_secs(30)).success());
    }
}

/// The API's description covers what it serves; an unknown connector is a
/// 404 naming it; a tokened API refuses requests without the token; off
/// loopback the host refuses to serve the API without a token; without
/// `--api` there is no `/connectors`. A connector's detail shows its
/// configuration (secrets redacted: `operations::redact`'s unit test).
#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_described_and_guarded() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "gen.toml",
        &broker.url(),
        "gen",
        &format!("[datagen]\ntopics = [\"{TOPIC}\"]\nrate = 10\n"),
    );
    let token_file = dir.path().join("token");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_arg = token_file.to_str().unwrap();
    let host = Host::start_in(
        dir.path(),
        &guest("datagen-source"),
        &config,
        &[],
        &["--api", "--api-token-file", token_arg],
    );
    assert!(common::wait_until(Duration::from_secs(60), || endpoint(
        &host
    )
    .is_some()));

    let (status, answer) = api(&host, "GET", "/connectors", None);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("Bearer"),
        "{answer}"
    );
    let (status, _) = api(&host, "GET", "/connectors", Some("wrong"));
    assert_eq!(status, 401);
    let (status, doc) = api(&host, "GET", "/openapi.json", Some(token));
    assert_eq!(status, 200);
    for path in [
        "/connectors",
        "/connectors/{name}",
        "/connectors/{name}/pause",
        "/connectors/{name}/resume",
        "/connectors/{name}/restart",
        "/connectors/{name}/tap",
        "/connectors/{name}/offsets",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not described");
    }
    let (status, answer) = api(&host, "GET", "/connectors/nope", Some(token));
    assert_eq!(status, 404);
    assert!(
        answer["error"].as_str().unwrap().contains("nope"),
        "{answer}"
    );
    let (status, detail) = api(&host, "GET", "/connectors/gen", Some(token));
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["config"]["host"]["connector_name"], "gen",
        "{detail}"
    );
    assert_eq!(detail["config"]["connector"]["rate"], 10, "{detail}");
    assert!(detail["recent_errors"].is_array(), "{detail}");
    assert!(host.terminate(Duration::from_secs(30)).success());

    // Off loopback without a token: refused at start, saying what to do.
    let open = dir.path().join("open.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("bind = \"127.0.0.1\"", "bind = \"0.0.0.0\"");
    std::fs::write(&open, text).unwrap();
    let refused = Host::start_in(dir.path(), &guest("datagen-source"), &open, &[], &["--api"]);
    let status = refused.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let log = std::fs::read_to_string(open.with_extension("log")).unwrap();
    assert!(log.contains("--api-token-file"), "{log}");

    // Without --api: no /connectors.
    let plain = Host::start_in(dir.path(), &guest("datagen-source"), &config, &[], &[]);
    assert!(common::wait_until(Duration::from_secs(60), || endpoint(
        &plain
    )
    .is_some()));
    assert_eq!(api(&plain, "GET", "/connectors", None).0, 404);
    assert!(plain.terminate(Duration::from_secs(30)).success());
}

/// `danube-host tap NAME` prints the records a source produces (topic,
/// key, attributes, payload), at most
/// `--rate` a second, and says how many it did not show; `top` in a tmux
/// pane shows the connector running with its rate.
#[tokio::test(flavor = "multi_thread")]
async fn tap_prints_records_and_top_shows_the_connector_in_a_terminal() {
    let _turn = take_turn(BrokerKind::Test).await;
    let broker = TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "live.toml",
        &broker.url(),
        "live-gen",
        &format!("[datagen]\ntopics = [\"{TOPIC}\"]\nrate = 200\n"),
    );
    let host = start(&config, "datagen-source");
    let addr = endpoint(&host).unwrap();

    let mut tap = std::process::Command::new(common::host_bin())
        .args(["tap", "live-gen", "--endpoint", &addr, "--rate", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tap.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(6)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    let started = std::time::Instant::now();
    let lines = lines.join().unwrap();
    let took = started.elapsed();
    let _ = tap.kill();
    let _ = tap.wait();
    assert_eq!(lines.len(), 6, "{lines:?}");
    for line in &lines {
        assert!(line.starts_with(&format!("-> {TOPIC}")), "{line}");
        // The attribute datagen sets, then the payload.
        assert!(line.contains(" seq=") && line.contains("\"seq\""), "{line}");
    }
    // Five a second at most: six lines take at least a second; at 200
    // records a second most are not shown, and the lines say so.
    assert!(took >= Duration::from_millis(900), "{took:?}: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("not shown)")), "{lines:?}");

    let session = format!("danube-top-{}", std::process::id());
    let top = format!(
        "{} top --endpoint {addr} --interval-ms 300",
        common::host_bin()
    );
    let started = std::process::Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "20",
            &top,
        ])
        .status()
        .expect("tmux is installed (scripts/setup.sh)");
    assert!(started.success());
    let mut pane = String::new();
    let shown = common::wait_until(Duration::from_secs(30), || {
        let out = std::process::Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        pane = String::from_utf8_lossy(&out.stdout).into_owned();
        // The rate column shows a number once two screens were taken.
        pane.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&"live-gen")
                && cols.get(2) == Some(&"running")
                && cols
                    .get(5)
                    .and_then(|r| r.parse::<u64>().ok())
                    .is_some_and(|r| r > 0)
        })
    });
    let _ = std::process::Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert!(shown, "top's pane:\n{pane}");
    assert!(
        pane.contains("CONNECTOR") && pane.contains("OUT/s"),
        "{pane}"
    );
    println!("top's pane:\n{pane}");
    assert!(host.terminate(Duration::from_secs(30)).success());
}
