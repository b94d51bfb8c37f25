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
         [server]\nhost = \"127.0.0.1\"\nport = {port}\n{server}\n\n{rest}"
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

/// 32 senders post 20,000 webhooks while the worker is killed -9 twice; a
/// sender tries again whatever did not get a 2xx, as webhook senders do.
/// Every request answered 2xx is in Danube (counted by id), and in the
/// end every webhook is.
#[tokio::test(flavor = "multi_thread")]
async fn every_2xx_is_stored_across_worker_kills() {
    let _turn = take_turn(BrokerKind::Test).await;
    const SENDERS: usize = 32;
    const PER_SENDER: usize = 625;
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
    let mut killed = Vec::new();
    for kill_at in [4_000, 12_000] {
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
        killed.push(kill_worker(&host).await);
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
    assert_ne!(killed[0], killed[1], "the second kill found a new worker");
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

const SECRET: &str = "whsec_s3cret-for-tests";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The hex HMAC-SHA256 of `text` with [`SECRET`].
fn sign(text: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    hex::encode(ring::hmac::sign(&key, text).as_ref())
}

/// A test broker with [`TOPIC`], and a host on it listening on a free
/// port with `server` keys and `tables` ([auth], [rate_limit], ...),
/// started with `env`.
struct Listening {
    broker: TestBroker,
    host: Host,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Listening {
    async fn start(name: &str, server: &str, tables: &str, env: &[(&str, &str)]) -> Listening {
        Listening::start_with(name, server, tables, "", env).await
    }

    /// [`Listening::start`] with more keys for the endpoint.
    async fn start_with(
        name: &str,
        server: &str,
        tables: &str,
        endpoint_keys: &str,
        env: &[(&str, &str)],
    ) -> Listening {
        let broker = TestBroker::start().await.unwrap();
        broker.create_topic(TOPIC, 0, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = webhook_text(
            port,
            server,
            &format!("{tables}\n\n{}", endpoint(endpoint_keys)),
        );
        let cfg = config(dir.path(), &broker.url(), name, &text);
        let host = Host::start(&guest("webhook-source"), &cfg, env);
        wait_listening(port, &host).await;
        Listening {
            broker,
            host,
            port,
            _dir: dir,
        }
    }

    /// POSTs `body` with `headers`, off the runtime's threads.
    async fn post(&self, body: &str, headers: &[(&str, String)]) -> (u16, String) {
        let (port, body) = (self.port, body.to_string());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            post(&agent(), port, PATH, body.as_bytes(), &headers)
        })
        .await
        .unwrap()
    }

    fn stored(&self) -> usize {
        self.broker.messages(TOPIC).len()
    }
}

/// HMAC: a signature over `<time>.<body>` is taken once; sent again, with
/// a stale time, a wrong signature or none it is refused (401, naming
/// why) and nothing is published. Stripe's `t=,v1=` form is taken too.
#[tokio::test(flavor = "multi_thread")]
async fn hmac_signatures_are_taken_fresh_and_once() {
    let _turn = take_turn(BrokerKind::Test).await;
    let auth = "[auth]\ntype = \"hmac\"\nsecret_env = \"HOOK_SECRET\"\nheader = \"X-Signature\"";
    let l = Listening::start("webhooks-hmac", "", auth, &[("HOOK_SECRET", SECRET)]).await;
    let body = r#"{"id": 1}"#;
    let signed = |t: u64, body: &str| {
        vec![
            (
                "X-Signature",
                format!("sha256={}", sign(format!("{t}.{body}").as_bytes())),
            ),
            ("X-Webhook-Timestamp", t.to_string()),
        ]
    };
    let now = now_secs();
    let other = r#"{"id": 2}"#;
    let cases = [
        ("signed", body, signed(now, body), 200, ""),
        (
            "the same request again",
            body,
            signed(now, body),
            401,
            "used already",
        ),
        ("another signed body", other, signed(now, other), 200, ""),
        (
            "a stale time",
            body,
            signed(now - 600, body),
            401,
            "600 s from now",
        ),
        (
            "a wrong signature",
            body,
            vec![
                ("X-Signature", format!("sha256={}", sign(b"x"))),
                ("X-Webhook-Timestamp", now.to_string()),
            ],
            401,
            "bad signature",
        ),
        (
            "no signature",
            body,
            vec![],
            401,
            "missing header x-signature",
        ),
        (
            "no signing time",
            body,
            vec![("X-Signature", sign(body.as_bytes()))],
            401,
            "no signing time",
        ),
    ];
    let mut stored = 0;
    for (what, request_body, headers, status, why) in cases {
        let (got, answer) = l.post(request_body, &headers).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.contains(why), "{what}: {answer}");
        stored += usize::from(got == 200);
    }
    // Stripe's form: the time inside the signature header.
    let t = now_secs();
    let stripe = format!("t={t},v1={}", sign(format!("{t}.{body}").as_bytes()));
    let auth_stripe =
        "[auth]\ntype = \"hmac\"\nsecret_env = \"HOOK_SECRET\"\nheader = \"Stripe-Signature\"";
    let s = Listening::start(
        "webhooks-stripe",
        "",
        auth_stripe,
        &[("HOOK_SECRET", SECRET)],
    )
    .await;
    assert_eq!(
        s.post(body, &[("Stripe-Signature", stripe.clone())])
            .await
            .0,
        200
    );
    assert_eq!(s.post(body, &[("Stripe-Signature", stripe)]).await.0, 401);
    assert!(
        l.broker
            .wait_for(Duration::from_secs(10), |b| b.messages(TOPIC).len()
                >= stored)
            .await
    );
    assert_eq!(
        l.stored(),
        stored,
        "only what was answered 200 is published"
    );
    assert_eq!(s.stored(), 1);
    assert!(
        !l.host.log().contains(SECRET),
        "the secret appears in the log"
    );
}

/// API keys and JWTs (RS256 with a public key file): the right key or a
/// valid token is taken, a wrong key, an expired token or one signed by
/// another key is refused with 401.
#[tokio::test(flavor = "multi_thread")]
async fn api_keys_and_tokens_are_checked() {
    let _turn = take_turn(BrokerKind::Test).await;
    let auth = "[auth]\ntype = \"apikey\"\nsecret_env = \"HOOK_KEY\"\nheader = \"X-API-Key\"";
    // The connector asks for the key's header: it is not handed over.
    let l = Listening::start_with(
        "webhooks-key",
        "",
        auth,
        "forward_headers = [\"X-API-Key\", \"X-Event\"]",
        &[("HOOK_KEY", SECRET)],
    )
    .await;
    let with_key = [
        ("X-API-Key", SECRET.to_string()),
        ("X-Event", "paid".into()),
    ];
    assert_eq!(l.post("{}", &with_key).await.0, 200);
    let (status, answer) = l.post("{}", &[("X-API-Key", "guess".into())]).await;
    assert_eq!(
        (status, answer.contains("wrong key")),
        (401, true),
        "{answer}"
    );
    assert_eq!(l.post("{}", &[]).await.0, 401);

    let keys = tempfile::tempdir().unwrap();
    for name in ["sender", "stranger"] {
        common::tls::openssl(
            keys.path(),
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &format!("{name}.key"),
            ],
        );
    }
    common::tls::openssl(
        keys.path(),
        &["pkey", "-in", "sender.key", "-pubout", "-out", "sender.pub"],
    );
    let auth = format!(
        "[auth]\ntype = \"jwt\"\npublic_key_path = \"{}\"",
        keys.path().join("sender.pub").display()
    );
    let j = Listening::start("webhooks-jwt", "", &auth, &[]).await;
    let token = |key: &str, exp: u64| {
        let pem = std::fs::read(keys.path().join(key)).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &json!({"sub": "billing", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap()
    };
    let bearer = |t: String| vec![("Authorization", format!("Bearer {t}"))];
    assert_eq!(
        j.post("{}", &bearer(token("sender.key", now_secs() + 300)))
            .await
            .0,
        200
    );
    let (status, answer) = j
        .post("{}", &bearer(token("sender.key", now_secs() - 10)))
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("ExpiredSignature"), "{answer}");
    let (status, answer) = j
        .post("{}", &bearer(token("stranger.key", now_secs() + 300)))
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("InvalidSignature"), "{answer}");
    assert!(
        j.broker
            .wait_for(Duration::from_secs(10), |b| !b.messages(TOPIC).is_empty())
            .await
    );
    assert_eq!((l.stored(), j.stored()), (1, 1));
    let attributes = &l.broker.messages(TOPIC)[0].attributes;
    assert_eq!(
        attributes.get("http.header.x-event").map(String::as_str),
        Some("paid")
    );
    assert!(
        !attributes.contains_key("http.header.x-api-key"),
        "the key reached the connector: {attributes:?}"
    );
}

/// A burst above `[rate_limit]` is answered 429 with `Retry-After`; what
/// was taken is stored, nothing refused is.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_rate_limit_is_answered_429() {
    let _turn = take_turn(BrokerKind::Test).await;
    let limit = "[rate_limit]\nrequests_per_second = 2\nburst_size = 5";
    let l = Listening::start("webhooks-limited", "", limit, &[]).await;
    let port = l.port;
    let answers = tokio::task::spawn_blocking(move || {
        let agent = agent();
        (0..30)
            .map(|i| {
                let response = agent
                    .post(format!("http://127.0.0.1:{port}{PATH}"))
                    .send(json!({"id": i}).to_string())
                    .unwrap();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                (response.status().as_u16(), retry_after)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let taken = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!((5..=10).contains(&taken), "{answers:?}");
    assert_eq!(taken + limited.len(), 30, "{answers:?}");
    assert!(
        limited
            .iter()
            .all(|(_, after)| after.is_some_and(|a| a >= 1)),
        "{answers:?}"
    );
    assert!(
        l.broker
            .wait_for(Duration::from_secs(10), |b| b.messages(TOPIC).len()
                >= taken)
            .await
    );
    assert_eq!(l.stored(), taken);
}

/// While Danube is down, senders get 503 with `Retry-After` and /health
/// says degraded; once it is back, senders that try again are answered
/// 200, and every request answered 200 is stored.
#[tokio::test(flavor = "multi_thread")]
async fn while_danube_is_down_senders_are_told_to_try_again() {
    let _turn = take_turn(BrokerKind::Test).await;
    let l = Listening::start("webhooks-outage", "timeout_seconds = 2", "", &[]).await;
    assert_eq!(l.post(r#"{"id": 0}"#, &[]).await.0, 200);
    l.broker.stop().await;
    let (status, answer) = l.post(r#"{"id": 1}"#, &[]).await;
    assert_eq!(status, 503, "{answer}");
    common::wait_health(
        &l.host,
        Duration::from_secs(30),
        "degraded while Danube is down",
        |doc| doc.to_string().contains("degraded"),
    )
    .await;
    l.broker.restart().await.unwrap();
    // The sender tries again, as it was told, until it is answered 200.
    let mut back = false;
    for _ in 0..120 {
        if l.post(r#"{"id": 1}"#, &[]).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        back,
        "never answered 200 after Danube came back; log:\n{}",
        l.host.log()
    );
    let ids: BTreeSet<u64> = l
        .broker
        .messages(TOPIC)
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, BTreeSet::from([0, 1]));
}

/// `[server] tls_cert_path` and `tls_key_path`: the listener speaks HTTPS
/// (checked with curl against the test CA), and plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn https_when_a_certificate_is_configured() {
    let _turn = take_turn(BrokerKind::Test).await;
    let certs = tempfile::tempdir().unwrap();
    common::tls::make_server_certificate(certs.path());
    let server = format!(
        "tls_cert_path = \"{}\"\ntls_key_path = \"{}\"",
        certs.path().join("server.pem").display(),
        certs.path().join("server.key").display()
    );
    let l = Listening::start("webhooks-tls", &server, "", &[]).await;
    let url = format!("https://127.0.0.1:{}{PATH}", l.port);
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-d",
                "{}",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let ca = certs.path().join("ca.pem");
    let out = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{out:?}; log:\n{}",
        l.host.log()
    );
    let plain = curl(&[&url.replace("https", "http")]);
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    assert!(
        l.broker
            .wait_for(Duration::from_secs(10), |b| !b.messages(TOPIC).is_empty())
            .await
    );
    assert_eq!(l.stored(), 1);
}

/// danube-connect's webhook configurations validate with this module as
/// they are: `[server]`, `[auth]` (its secret named in the environment),
/// `[rate_limit]` and `[[routes]]`; without the secret in the environment,
/// validate names the variable; the example's only complaint is its
/// schema files under `/etc/schemas`, which exist in upstream's container.
#[test]
fn danube_connect_webhook_configurations_validate_unchanged() {
    let validate = |file: &str, env: &[(&str, &str)]| {
        let out = common::upstream(
            "source-webhook",
            &guest("webhook-source"),
            "validate",
            file,
            env,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let secret = [("STRIPE_WEBHOOK_SECRET", SECRET)];
    for file in ["config/connector.toml", "config/connector-no-schemas.toml"] {
        let (code, text) = validate(file, &secret);
        assert_eq!(code, Some(0), "{file}: {text}");
        assert!(
            text.contains("runs ingress connector webhook-source"),
            "{text}"
        );
    }
    let (code, text) = validate("config/connector.toml", &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("the environment has no STRIPE_WEBHOOK_SECRET"),
        "{text}"
    );
    let (code, text) = validate("example/connector.toml", &[("WEBHOOK_API_KEY", SECRET)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot read schema_file /etc/schemas/payment.json"),
        "{text}"
    );
}

/// `validate` names what is wrong with the listener's tables: a TLS file
/// that cannot be read, half a TLS pair, an auth type without its secret,
/// a secret variable that is not set; and refuses them for a connector
/// that is no ingress.
#[test]
fn validate_names_what_is_wrong_with_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |name: &str, server: &str, tables: &str, module: &Path| {
        let text = webhook_text(
            free_port(),
            server,
            &format!("{tables}\n\n{}", endpoint("")),
        );
        let cfg = config(dir.path(), "http://127.0.0.1:6650", name, &text);
        let (code, _, stderr) = common::run_host(&[
            "validate",
            "--module",
            module.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{name}: {stderr}");
        stderr
    };
    let missing = dir.path().join("missing.pem").display().to_string();
    let cases = [
        (
            format!("tls_cert_path = \"{missing}\"\ntls_key_path = \"{missing}\""),
            "",
            "[server] tls_cert_path",
        ),
        (format!("tls_cert_path = \"{missing}\""), "", "go together"),
        (
            String::new(),
            "[auth]\ntype = \"jwt\"",
            "needs `secret_env`",
        ),
        (
            String::new(),
            "[auth]\ntype = \"apikey\"\nsecret_env = \"NO_SUCH_VARIABLE_HERE\"",
            "the environment has no NO_SUCH_VARIABLE_HERE",
        ),
    ];
    let module = guest("webhook-source");
    for (i, (server, tables, why)) in cases.iter().enumerate() {
        let stderr = validate(&format!("bad-{i}"), server, tables, &module);
        assert!(stderr.contains(why), "{why:?} missing: {stderr}");
    }
    let stderr = validate("not-ingress", "", "", &guest("datagen-source"));
    assert!(
        stderr.contains("[server] configures the HTTP listener of an ingress connector"),
        "{stderr}"
    );
}
