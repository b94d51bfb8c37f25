//! webhook-source end to end: a broker, `danube-host` listening for
//! webhooks on a free loopback port, and real HTTP clients (ureq). A sender
//! gets 200 only once Danube stored its request's record, so every 200 is
//! counted in Danube, also across worker kills.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::free_port;
use common::{Host, guest, kill_worker, wait_until_async, write_config};
use danube_testkit::{BrokerKind, Tap, TestBroker, take_turn};
use serde_json::{Value, json};

const PATH: &str = "/webhooks/payments";
const TOPIC: &str = "/default/payments";

/// The host's tables: the listener on `port`, then `rest` (endpoints and
/// anything else).
fn webhook_text(port: u16, server: &str, rest: &str) -> String {
    format!(
        "[retry]\nmax_retries = 50\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
         [server]\nhost = \"127.0.0.1\"\nport = {port}\ntimeout_seconds = 20\n{server}\n\n{rest}"
    )
}

fn endpoint(extra: &str) -> String {
    format!(
        "[[endpoints]]\npath = \"{PATH}\"\ndanube_topic = \"{TOPIC}\"\nreliable_dispatch = true\n{extra}\n"
    )
}

fn config(dir: &Path, broker_url: &str, name: &str, text: &str) -> PathBuf {
    write_config(dir, &format!("{name}.toml"), broker_url, name, text)
}

/// An agent that hands every status back as a response.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// POSTs `body` with `headers` to `path` on `port`: the status and body.
fn post(
    agent: &ureq::Agent,
    port: u16,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let request = headers.iter().fold(
        agent.post(format!("http://127.0.0.1:{port}{path}")),
        |r, (k, v)| r.header(*k, *v),
    );
    match request.send(body) {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until the listener answers (any status), or panics with the log.
async fn wait_listening(port: u16, host: &Host) {
    let answered = wait_until_async(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(
        answered,
        "the listener did not come up; log:\n{}",
        host.log()
    );
}

danube_testkit::on_both_brokers! {
    /// 100 webhooks, each answered 200 once stored: each is in Danube with
    /// its body, its routing key from a header and its chosen header as an
    /// attribute. Unknown paths are 404, GET is 405, an oversized body 413.
    async fn webhooks_are_answered_200_once_stored(broker: Broker) {
        const N: usize = 100;
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        let tap = Tap::start(&broker.url(), TOPIC).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = webhook_text(
            port,
            "max_body_size = 4096",
            &endpoint("key_header = \"X-Customer\"\nforward_headers = [\"X-Event-Type\"]"),
        );
        let cfg = config(dir.path(), &broker.url(), "webhooks", &text);
        let host = Host::start(&guest("webhook-source"), &cfg, &[]);
        wait_listening(port, &host).await;

        let answers = tokio::task::spawn_blocking(move || {
            let agent = agent();
            (0..N)
                .map(|i| {
                    let body = json!({"id": i, "amount": i * 10}).to_string();
                    let customer = format!("cust-{}", i % 5);
                    post(
                        &agent,
                        port,
                        PATH,
                        body.as_bytes(),
                        &[("content-type", "application/json"), ("X-Customer", &customer), ("X-Event-Type", "paid")],
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}; log:\n{}", host.log());
            let body: Value = serde_json::from_str(body).unwrap();
            assert_eq!(body, json!({"status": "stored", "records": 1}));
        }
        // Answered 200 means stored: the tap gets every one.
        assert!(
            tap.wait_for(N, Duration::from_secs(30)).await,
            "{} of {N} stored; log:\n{}",
            tap.count(),
            host.log()
        );
        let mut ids = BTreeSet::new();
        for message in tap.stored() {
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            let id = body["id"].as_u64().unwrap();
            ids.insert(id);
            assert_eq!(message.routing_key.as_deref(), Some(format!("cust-{}", id % 5).as_str()));
            assert_eq!(message.attributes["http.header.x-event-type"], "paid");
            assert_eq!(message.attributes["http.method"], "POST");
            assert_eq!(message.attributes["http.path"], PATH);
        }
        assert_eq!(ids.len(), N);

        let refusals = tokio::task::spawn_blocking(move || {
            let agent = agent();
            let unknown = post(&agent, port, "/elsewhere", b"{}", &[]).0;
            let get = agent
                .get(format!("http://127.0.0.1:{port}{PATH}"))
                .call()
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            let large = post(&agent, port, PATH, &[b'x'; 5000], &[]).0;
            (unknown, get, large)
        })
        .await
        .unwrap();
        assert_eq!(refusals, (404, 405, 413));
        assert_eq!(tap.stored().len(), N, "nothing refused was published");
        assert!(host.terminate(Duration::from_secs(30)).success());
    }
}

/// 8 senders post 2,000 webhooks while the worker is killed twice; a
/// sender tries again whatever did not get a 2xx, as webhook senders do.
/// Every request answered 2xx is in Danube (counted by id), and in the
/// end every webhook is.
#[tokio::test(flavor = "multi_thread")]
async fn every_2xx_is_stored_across_worker_kills() {
    let _turn = take_turn(BrokerKind::Test).await;
    const SENDERS: usize = 8;
    const PER_SENDER: usize = 250;
    let broker = TestBroker::start().await.unwrap();
    broker.create_topic(TOPIC, 0, true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = webhook_text(port, "", &endpoint(""));
    let cfg = config(dir.path(), &broker.url(), "webhooks-kill", &text);
    let host = Host::start(&guest("webhook-source"), &cfg, &[]);
    wait_listening(port, &host).await;

    // Ids answered 2xx, and how many answers were not 2xx.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
            tokio::task::spawn_blocking(move || {
                let agent = agent();
                for i in 0..PER_SENDER {
                    let id = (s * PER_SENDER + i) as u64;
                    let body = json!({"id": id}).to_string();
                    loop {
                        let (status, _) = post(&agent, port, PATH, body.as_bytes(), &[]);
                        if (200..300).contains(&status) {
                            acknowledged.lock().unwrap().insert(id);
                            break;
                        }
                        *refused.lock().unwrap().entry(status).or_default() += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    for kill_at in [400, 1200] {
        let reached = wait_until_async(Duration::from_secs(120), || {
            acknowledged.lock().unwrap().len() >= kill_at
        })
        .await;
        assert!(
            reached,
            "stuck at {} answered; log:\n{}",
            acknowledged.lock().unwrap().len(),
            host.log()
        );
        kill_worker(&host).await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let total = (SENDERS * PER_SENDER) as u64;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len() as u64, total);
    let stored = |b: &TestBroker| -> BTreeSet<u64> {
        b.messages(TOPIC)
            .iter()
            .map(|m| {
                serde_json::from_slice::<Value>(&m.payload).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    // Every 2xx was answered after the broker stored the record: they are
    // all there now, without waiting.
    let missing: Vec<u64> = acknowledged
        .difference(&stored(&broker))
        .copied()
        .take(20)
        .collect();
    assert!(
        missing.is_empty(),
        "answered 2xx but not stored: {missing:?}"
    );
    let published = broker.messages(TOPIC).len() as u64;
    println!(
        "{total} webhooks, {published} messages stored ({} duplicates), answers other than 2xx: {:?}",
        published - total,
        refused.lock().unwrap()
    );
    assert!(host.log().contains("worker"), "log:\n{}", host.log());
    assert!(host.terminate(Duration::from_secs(30)).success());
}

/// webhook-source through `danube-host test`: the ingress checks pass.
#[test]
fn webhook_source_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let text = webhook_text(free_port(), "", &endpoint(""));
    let cfg = config(
        dir.path(),
        "http://127.0.0.1:6650",
        "webhooks-harness",
        &text,
    );
    let (passed, report) = common::conformance(&guest("webhook-source"), &cfg, &[], &[]);
    assert!(passed, "{report}");
    assert!(
        report.contains("handle makes records for declared topics"),
        "{report}"
    );
}
