//! http-sink end to end: a broker, `danube-host` running the connector, and
//! a real HTTP endpoint started here (axum on a free loopback port, HTTPS
//! through rustls) that keeps every request and answers as each test says.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http_endpoint::{Answer, Endpoint, Request};
use common::server::free_port;
use common::tls::{make_ca, make_server_certificate};
use common::{
    Host, guest, health_detail, kill_worker, produce_json, reliable_producer, wait_health,
    wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::{BrokerKind, TestBroker, take_turn};
use serde_json::{Value, json};

const TOKEN: &str = "t0ken-Http-s3cret";

/// The host's tables for a sink sending `topic` (consumed as `http`) to
/// the endpoint on `port`; `http` holds more `[http]` keys (`url` among
/// them).
fn sink_text(port: u16, sandbox: &str, http: &str, topic: &str) -> String {
    format!(
        "[retry]\nmax_retries = 100\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
         [processing]\nhealth_interval_ms = 500\n\n\
         [sandbox]\nallow = [\"127.0.0.1:{port}\"]\n{sandbox}\n\
         [http]\nconnect_timeout_secs = 2\nrequest_timeout_secs = 10\n{http}\n\n\
         [[http.routes]]\ntopic = \"{topic}\"\nsubscription = \"http\"\n"
    )
}

/// Writes the configuration of the sink `name` into `dir`.
fn sink_config(dir: &Path, broker_url: &str, name: &str, text: &str) -> PathBuf {
    write_config(dir, &format!("{name}.toml"), broker_url, name, text)
}

/// A test broker holding `topic`, and the http-sink `name` on it, sending
/// to the endpoint on `port` with the `[http]` keys `http`, subscribed to
/// the topic as `http`; the directory holds its configuration and log.
async fn sink(
    topic: &str,
    name: &str,
    port: u16,
    http: &str,
) -> (TestBroker, Host, tempfile::TempDir) {
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(topic, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sink_config(
        dir.path(),
        &broker.url(),
        name,
        &sink_text(port, "", http, topic),
    );
    let host = start_sink(&config);
    wait_subscribed(&broker, &[topic.to_string()], "http", &host).await;
    (broker, host, dir)
}

fn start_sink(config: &Path) -> Host {
    Host::start(&guest("http-sink"), config, &[("HTTP_BEARER_TOKEN", TOKEN)])
}

/// `{"seq": N, "device": ...}`.
fn event(seq: u64) -> Value {
    json!({"seq": seq, "device": format!("dev-{}", seq % 7), "v": seq as f64 * 0.5})
}

/// How many times each `seq` reached the endpoint in a request it took.
fn accepted_seqs(endpoint: &Endpoint) -> BTreeMap<u64, usize> {
    let mut seqs = BTreeMap::new();
    for value in endpoint.accepted() {
        let value = value.get("payload").unwrap_or(&value);
        *seqs.entry(value["seq"].as_u64().unwrap()).or_default() += 1;
    }
    seqs
}

/// Waits until every seq of `0..n` reached the endpoint, or panics with
/// what is missing and the host's log.
async fn wait_all_accepted(endpoint: &Endpoint, n: u64, host: &Host) -> BTreeMap<u64, usize> {
    let mut seqs = BTreeMap::new();
    let all = wait_until_async(Duration::from_secs(120), || {
        seqs = accepted_seqs(endpoint);
        (0..n).all(|s| seqs.contains_key(&s))
    })
    .await;
    let missing: Vec<u64> = (0..n).filter(|s| !seqs.contains_key(s)).take(20).collect();
    assert!(
        all,
        "{} of {n} records reached the endpoint (missing, first 20: {missing:?}); {}\nlog:\n{}",
        seqs.len(),
        health_detail(host),
        host.log()
    );
    seqs
}

/// Answers 401 unless the request carries the bearer token.
fn authenticated(request: &Request, answer: Answer) -> Answer {
    if request.header("authorization") == format!("Bearer {TOKEN}") {
        answer
    } else {
        Answer::status(401, "missing or wrong token")
    }
}

danube_testkit::on_both_brokers! {
    /// 500 JSON records reach the endpoint as JSON arrays, each at least
    /// once, with the bearer token, the configured header and the content
    /// type; the token never appears in the host's log.
    async fn records_reach_the_endpoint_as_json_arrays(broker: Broker) {
        const N: u64 = 500;
        const TOPIC: &str = "/default/events";
        let endpoint = Endpoint::start(|request, _| authenticated(request, Answer::ok()));
        let dir = tempfile::tempdir().unwrap();
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        let http = format!(
            "url = \"{}\"\nheaders = {{ \"X-Source\" = \"danube\" }}",
            endpoint.url("/ingest")
        );
        let config = sink_config(
            dir.path(),
            &broker.url(),
            "http-arrays",
            &sink_text(endpoint.port, "", &http, TOPIC),
        );
        let host = start_sink(&config);
        wait_subscribed(&broker, &[TOPIC.to_string()], "http", &host).await;

        // The real broker drops what a reliable subscription falls behind
        // its producer on (at 400/s it did here, with 10 unacked messages
        // out at a time): paced there, to 100/s.
        let producer = reliable_producer(&broker.url(), TOPIC).await;
        for seq in 0..N {
            producer.send(serde_json::to_vec(&event(seq)).unwrap(), None).await.unwrap();
            if broker.kind() == BrokerKind::Real && seq % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let seqs = wait_all_accepted(&endpoint, N, &host).await;
        assert_eq!(seqs.len() as u64, N, "only the records published arrive");

        let requests = endpoint.requests();
        assert!(requests.iter().all(|r| r.status == 200), "every request authenticated");
        for request in requests.iter() {
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, "/ingest");
            assert_eq!(request.header("content-type"), "application/json");
            assert_eq!(request.header("x-source"), "danube");
        }
        println!(
            "{:?} broker: {N} records in {} requests",
            broker.kind(),
            requests.len()
        );
        drop(requests);
        assert!(!host.log().contains(TOKEN), "the token appears in the host's log");
        assert!(host.terminate(Duration::from_secs(30)).success());
    }
}

/// The endpoint answers 503 with `Retry-After: 2`, then 429 with an
/// HTTP-date a second ahead, then takes everything: the sink waits as
/// asked before sending again, and every record arrives.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_waited_out_and_nothing_is_lost() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 300;
    const TOPIC: &str = "/default/busy";
    let endpoint = Endpoint::start(|_, n| match n {
        0 => Answer::status(503, "busy").with_header("retry-after", "2"),
        1 => {
            let at = std::time::SystemTime::now() + Duration::from_secs(2);
            Answer::status(429, "slow down")
                .with_header("retry-after", &httpdate::fmt_http_date(at))
        }
        _ => Answer::ok(),
    });
    let http = format!("url = \"{}\"", endpoint.url("/in"));
    let (broker, host, _dir) = sink(TOPIC, "http-busy", endpoint.port, &http).await;
    produce_json(broker.url(), TOPIC, (0..N).map(event)).await;
    wait_all_accepted(&endpoint, N, &host).await;

    let requests = endpoint.requests();
    let statuses: Vec<u16> = requests.iter().take(3).map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 200]);
    // Each wait is measured from the refusal's arrival: the sink received
    // the answer after that, so the gap is at least the wait asked for.
    let first_wait = requests[1].at - requests[0].at;
    assert!(
        first_wait >= Duration::from_millis(1950),
        "waited {first_wait:?} after Retry-After: 2"
    );
    // An HTTP-date has one-second resolution: at least one second.
    let second_wait = requests[2].at - requests[1].at;
    assert!(
        second_wait >= Duration::from_millis(950),
        "waited {second_wait:?} after a date 2 s ahead"
    );
    drop(requests);
    assert!(
        host.log()
            .contains("answered HTTP 503: busy (Retry-After: 2 s)"),
        "log:\n{}",
        host.log()
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// The endpoint refuses (422) any request holding a record marked bad: the
/// sink halves refused batches until the bad records are alone, sends them
/// to the dead-letter topic with the status and the endpoint's words, and
/// everything else arrives. A payload that is not JSON is dead-lettered
/// without being sent.
#[tokio::test(flavor = "multi_thread")]
async fn refused_records_are_dead_lettered_with_the_status_and_the_answer() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 100;
    const TOPIC: &str = "/default/picky";
    const DLQ: &str = "/default/http-picky-dlq";
    const BAD: [u64; 3] = [13, 14, 71];
    let endpoint = Endpoint::start(|request, _| {
        let bad: Vec<u64> = request
            .json_values()
            .iter()
            .filter(|v| v["bad"] == json!(true))
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        match bad.first() {
            Some(seq) => {
                Answer::status(422, &format!("record {seq}: field `bad` is not allowed\n"))
            }
            None => Answer::ok(),
        }
    });
    let http = format!("url = \"{}\"", endpoint.url("/in"));
    let (broker, host, _dir) = sink(TOPIC, "http-picky", endpoint.port, &http).await;
    let producer = reliable_producer(&broker.url(), TOPIC).await;
    for seq in 0..N {
        let mut value = event(seq);
        if BAD.contains(&seq) {
            value["bad"] = json!(true);
        }
        let payload = if seq == 50 {
            b"not json".to_vec()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        producer.send(payload, None).await.unwrap();
    }

    let landed = broker
        .wait_for(Duration::from_secs(60), |b| {
            b.messages(DLQ).len() > BAD.len()
        })
        .await;
    assert!(
        landed,
        "dead letters: {}; log:\n{}",
        broker.messages(DLQ).len(),
        host.log()
    );
    let mut dead: Vec<(String, String)> = broker
        .messages(DLQ)
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.attributes["dlq.error"].clone(),
            )
        })
        .collect();
    dead.sort();
    for (payload, error) in &dead {
        if payload == "not json" {
            assert!(error.contains("not valid JSON"), "{error}");
            continue;
        }
        let seq = serde_json::from_str::<Value>(payload).unwrap()["seq"]
            .as_u64()
            .unwrap();
        assert!(BAD.contains(&seq), "seq {seq} dead-lettered: {error}");
        assert!(
            error.contains("answered HTTP 422")
                && error.contains(&format!("record {seq}: field `bad` is not allowed")),
            "dlq.error for {seq}: {error}"
        );
    }
    assert_eq!(dead.len(), BAD.len() + 1);
    let wanted: Vec<u64> = (0..N).filter(|s| !BAD.contains(s) && *s != 50).collect();
    let mut taken = Vec::new();
    let all = wait_until_async(Duration::from_secs(60), || {
        taken = accepted_seqs(&endpoint).into_keys().collect();
        taken.len() >= wanted.len()
    })
    .await;
    assert!(
        all,
        "{} of {} records taken; log:\n{}",
        taken.len(),
        wanted.len(),
        host.log()
    );
    assert_eq!(taken, wanted);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// `format = "single"` sends each payload as it is, bytes that are not
/// JSON included, with the record's topic, offset, key and an
/// Idempotency-Key in headers, by PUT with the configured content type.
#[tokio::test(flavor = "multi_thread")]
async fn single_requests_carry_the_payload_and_the_record_in_headers() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: usize = 20;
    const TOPIC: &str = "/default/one-by-one";
    let endpoint = Endpoint::start(|_, _| Answer::status(204, ""));
    let http = format!(
        "url = \"{}\"\nformat = \"single\"\nmethod = \"put\"\ncontent_type = \"application/octet-stream\"",
        endpoint.url("/blobs")
    );
    let (broker, host, _dir) = sink(TOPIC, "http-single", endpoint.port, &http).await;
    let producer = reliable_producer(&broker.url(), TOPIC).await;
    let payload = |i: usize| vec![0xff, 0x00, i as u8, b'\n'];
    for i in 0..N {
        producer.send(payload(i), None).await.unwrap();
    }
    let arrived =
        wait_until_async(Duration::from_secs(60), || endpoint.requests().len() >= N).await;
    assert!(
        arrived,
        "{} requests; log:\n{}",
        endpoint.requests().len(),
        host.log()
    );
    let requests = endpoint.requests();
    let mut offsets = Vec::new();
    for request in requests.iter() {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.header("content-type"), "application/octet-stream");
        assert_eq!(request.header("x-danube-topic"), TOPIC);
        let offset: usize = request.header("x-danube-offset").parse().unwrap();
        assert_eq!(
            request.header("idempotency-key"),
            format!("{TOPIC}/{offset}")
        );
        assert_eq!(
            &request.body[..],
            &payload(offset)[..],
            "the payload of offset {offset}, unchanged"
        );
        offsets.push(offset);
    }
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets, (0..N).collect::<Vec<_>>());
    drop(requests);
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// An endpoint that is not there yet, then a worker killed mid-flow: the
/// sink reports itself degraded, keeps the records, and once the endpoint
/// listens every record arrives (as NDJSON, with the envelope's
/// metadata); the kill costs duplicates at most.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_is_down_and_a_killed_worker_lose_nothing() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 2_000;
    const TOPIC: &str = "/default/patient";
    let port = free_port();
    let http =
        format!("url = \"http://127.0.0.1:{port}/lines\"\nformat = \"ndjson\"\nenvelope = true");
    let (broker, host, _dir) = sink(TOPIC, "http-patient", port, &http).await;
    produce_json(broker.url(), TOPIC, (0..N / 2).map(event)).await;
    let doc = wait_health(
        &host,
        Duration::from_secs(30),
        "degraded while the endpoint is down",
        |doc| doc.to_string().contains("unreachable"),
    )
    .await;
    println!("while down: {doc}");

    // Slow answers keep records in flight when the worker is killed.
    let slow = Arc::new(AtomicBool::new(true));
    let endpoint = {
        let slow = slow.clone();
        Endpoint::start_on(port, None, move |_, _| {
            if slow.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            Answer::ok()
        })
    };
    let producing = tokio::spawn({
        let url = broker.url();
        async move { produce_json(url, TOPIC, (N / 2..N).map(event)).await }
    });
    assert!(
        wait_until_async(Duration::from_secs(60), || endpoint.accepted().len() > 100).await,
        "nothing reached the endpoint after it started; log:\n{}",
        host.log()
    );
    kill_worker(&host).await;
    slow.store(false, Ordering::Relaxed);
    producing.await.unwrap();
    let seqs = wait_all_accepted(&endpoint, N, &host).await;
    let duplicates: usize = seqs.values().map(|n| n - 1).sum();
    println!("{N} records, {duplicates} delivered twice after the kill");

    for value in endpoint.accepted().iter().take(5) {
        assert_eq!(value["topic"], TOPIC);
        assert!(
            value["offset"].is_u64() && value["producer"].is_string(),
            "{value}"
        );
    }
    assert!(
        endpoint
            .requests()
            .iter()
            .all(|r| r.header("content-type") == "application/x-ndjson")
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// A token the endpoint refuses stops the host (exit 4: it is the
/// operator's to fix; nothing is acknowledged, so nothing is lost) with a message naming
/// the credentials, and never the token.
#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_stop_the_host_naming_them() {
    let _turn = take_turn(BrokerKind::Test).await;
    const TOPIC: &str = "/default/guarded";
    let endpoint = Endpoint::start(|request, _| authenticated(request, Answer::ok()));
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http = format!("url = \"{}\"", endpoint.url("/in"));
    let config = sink_config(
        dir.path(),
        &broker.url(),
        "http-guarded",
        &sink_text(endpoint.port, "", &http, TOPIC),
    );
    let wrong = "not-the-t0ken";
    let host = Host::start(
        &guest("http-sink"),
        &config,
        &[("HTTP_BEARER_TOKEN", wrong)],
    );
    wait_subscribed(&broker, &[TOPIC.to_string()], "http", &host).await;
    produce_json(broker.url(), TOPIC, (0..10).map(event)).await;
    let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(4), "a fatal stop; log:\n{log}");
    assert!(
        log.contains("refused the credentials") && log.contains("HTTP 401"),
        "log:\n{log}"
    );
    assert!(!log.contains(wrong), "the token appears in the log");
    assert!(endpoint.accepted().is_empty());
    assert_eq!(
        broker.subscription(TOPIC, "http").map(|s| s.acked),
        Some(0),
        "nothing acknowledged"
    );
}

/// HTTPS: with the endpoint's CA the records arrive; with a CA that did
/// not sign its certificate the host stops with a configuration error
/// (exit 2) naming the handshake.
#[tokio::test(flavor = "multi_thread")]
async fn https_verifies_the_endpoint_and_carries_the_records() {
    let _turn = take_turn(BrokerKind::Test).await;
    const N: u64 = 200;
    const TOPIC: &str = "/default/secure";
    let certs = tempfile::tempdir().unwrap();
    make_server_certificate(certs.path());
    make_ca(certs.path(), "rogue");
    let endpoint = Endpoint::start_on(free_port(), Some(certs.path()), |_, _| Answer::ok());
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, ca: &str| {
        let http = format!(
            "url = \"{}\"\nca_file = \"{}\"",
            endpoint.url("/in"),
            certs.path().join(ca).display()
        );
        let sandbox = format!("dirs = [\"{}\"]", certs.path().display());
        sink_config(
            dir.path(),
            &broker.url(),
            name,
            &sink_text(endpoint.port, &sandbox, &http, TOPIC),
        )
    };
    let host = start_sink(&config("http-tls", "ca.pem"));
    wait_subscribed(&broker, &[TOPIC.to_string()], "http", &host).await;
    produce_json(broker.url(), TOPIC, (0..N).map(event)).await;
    wait_all_accepted(&endpoint, N, &host).await;
    assert!(host.terminate(Duration::from_secs(30)).success());

    let rogue = config("http-rogue", "rogue.pem");
    let host = start_sink(&rogue);
    produce_json(broker.url(), TOPIC, (N..N + 5).map(event)).await;
    let status = tokio::task::spawn_blocking(move || host.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(rogue.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(2), "a configuration error; log:\n{log}");
    assert!(
        log.contains("TLS handshake failed") && log.contains("UnknownIssuer"),
        "log:\n{log}"
    );
}

/// http-sink through `danube-host test`: the contract, then a scenario of
/// records the endpoint takes, one it refuses and one that is not JSON.
#[test]
fn http_sink_keeps_the_contract_and_its_scenario() {
    const TOPIC: &str = "/default/events";
    let endpoint = Endpoint::start(|request, _| {
        let refused = request
            .json_values()
            .iter()
            .any(|v| v["refuse"] == json!(true));
        authenticated(
            request,
            if refused {
                Answer::status(400, "refused")
            } else {
                Answer::ok()
            },
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let http = format!("url = \"{}\"", endpoint.url("/in"));
    let config = sink_config(
        dir.path(),
        "http://127.0.0.1:6650",
        "http-harness",
        &sink_text(endpoint.port, "", &http, TOPIC),
    );
    let mut payloads: Vec<(Value, &str)> = (0..5).map(|seq| (event(seq), "written")).collect();
    payloads.push((json!({"seq": 5, "refuse": true}), "invalid_data"));
    payloads.push((json!("a JSON string"), "written"));
    common::assert_sink_scenario_passes(
        dir.path(),
        &guest("http-sink"),
        &config,
        &payloads,
        &[("HTTP_BEARER_TOKEN", TOKEN)],
    );
    let seqs = accepted_seqs_where(&endpoint, |v| v.get("seq").is_some());
    assert!((0..5).all(|s| seqs.contains(&s)), "{seqs:?}");
}

/// The seqs of the accepted values `keep` selects.
fn accepted_seqs_where(endpoint: &Endpoint, keep: impl Fn(&Value) -> bool) -> Vec<u64> {
    endpoint
        .accepted()
        .iter()
        .filter(|v| keep(v))
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}
