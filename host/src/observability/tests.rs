//! The endpoint over real HTTP, the exposition read back by a strict parser.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One HTTP/1.1 GET: status, lower-cased headers, body.
async fn get(addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let code: u16 = parts.next().unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)
    } else {
        let len: usize = headers["content-length"].parse().unwrap();
        assert_eq!(body.len(), len, "content-length");
        body.to_string()
    };
    (code, headers, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Prometheus text exposition (format 0.0.4), parsed strictly: every
/// sample belongs to a family declared by `# TYPE` before it, no sample twice,
/// no stray lines.
#[derive(Debug, Default)]
struct Scrape {
    types: HashMap<String, String>,
    samples: HashMap<(String, Labels), f64>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}")),
    }
}

fn parse_labels(s: &str) -> (Labels, &str) {
    let mut labels = Labels::new();
    let mut rest = s;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (name, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {s:?}"));
        assert!(
            valid_name(name) && !name.contains(':'),
            "label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unterminated value in {s:?}"));
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape {other:?} in {s:?}"),
                },
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} twice in {s:?}"
        );
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "HELP name {name:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "TYPE name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                scrape.types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let split = line.find(['{', ' ']).expect("sample");
        let name = &line[..split];
        assert!(valid_name(name), "sample name {name:?}");
        let (labels, rest) = match line[split..].strip_prefix('{') {
            Some(r) => parse_labels(r),
            None => (Labels::new(), &line[split..]),
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().expect("value"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().expect("timestamp");
        }
        assert!(fields.next().is_none(), "trailing fields: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| {
                    scrape
                        .types
                        .get(*f)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
            })
            .unwrap_or(name);
        assert!(
            scrape.types.contains_key(family),
            "sample without TYPE: {line}"
        );
        assert!(
            scrape
                .samples
                .insert((name.to_string(), labels), value)
                .is_none(),
            "sample twice: {line}"
        );
    }
    scrape
}

impl Scrape {
    fn value(&self, name: &str, pairs: &[(&str, &str)]) -> f64 {
        let key = labels(pairs);
        match self.samples.get(&(name.to_string(), key.clone())) {
            Some(v) => *v,
            None => panic!(
                "no sample {name}{key:?}; have: {:#?}",
                self.samples
                    .keys()
                    .filter(|(n, _)| n == name)
                    .collect::<Vec<_>>()
            ),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (code, headers, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
    parse(&body)
}

async fn json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (code, headers, body) = get(addr, path).await;
    assert_eq!(headers["content-type"], "application/json");
    (code, serde_json::from_str(&body).expect("JSON body"))
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn observability_metrics_scrape_matches_what_was_recorded() {
    let obs = Observability::new();
    let src = obs.connector("src");
    let snk = obs.connector("snk");
    let server = obs.serve(local(), None).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    src.received("/default/a", 10);
    src.received("/default/a", 5);
    src.received("/default/other", 0);
    src.sent("/default/a", 12);
    src.error("retryable");
    src.error("retryable");
    src.error("fatal");
    src.observe_call("poll", Duration::from_millis(3));
    src.observe_call("poll", Duration::from_millis(7));
    src.observe_call("commit", Duration::from_secs(2));
    src.batch_size(100);
    src.batch_size(3);
    src.set_in_flight(42);
    src.set_guest_memory(1 << 20);
    snk.received("/default/b", 7);
    snk.sent("/default/b", 6);
    snk.dead_lettered("/default/b", 1);
    snk.error("invalid_data");
    snk.retry("process_batch");
    snk.retry("process_batch");
    snk.retry("ack");
    snk.worker_restarted();
    snk.set_in_flight(9);
    snk.set_in_flight(4);
    // A clone is the same handle; asking again by name too.
    src.clone().sent("/default/a", 1);
    obs.connector("snk").worker_restarted();

    let s = scrape(addr).await;
    let received = "connector_messages_received_total";
    let sent = "connector_messages_sent_total";
    let errors = "connector_errors_total";
    let dlq = "connector_dead_lettered_total";
    let retries = "connector_retries_total";
    for counter in [received, sent, errors, dlq, retries] {
        assert_eq!(s.types[counter], "counter", "{counter}");
    }
    let expected = [
        (
            received,
            [("connector", "src"), ("topic", "/default/a")],
            15.0,
        ),
        (
            received,
            [("connector", "src"), ("topic", "/default/other")],
            0.0,
        ),
        (
            received,
            [("connector", "snk"), ("topic", "/default/b")],
            7.0,
        ),
        (sent, [("connector", "src"), ("topic", "/default/a")], 13.0),
        (sent, [("connector", "snk"), ("topic", "/default/b")], 6.0),
        (errors, [("connector", "src"), ("class", "retryable")], 2.0),
        (errors, [("connector", "src"), ("class", "fatal")], 1.0),
        (
            errors,
            [("connector", "src"), ("class", "invalid_data")],
            0.0,
        ),
        (errors, [("connector", "src"), ("class", "config")], 0.0),
        (
            errors,
            [("connector", "snk"), ("class", "invalid_data")],
            1.0,
        ),
        (errors, [("connector", "snk"), ("class", "retryable")], 0.0),
        (dlq, [("connector", "snk"), ("topic", "/default/b")], 1.0),
        (
            retries,
            [("connector", "snk"), ("operation", "process_batch")],
            2.0,
        ),
        (retries, [("connector", "snk"), ("operation", "ack")], 1.0),
    ];
    for (metric, labels, value) in expected {
        assert_eq!(s.value(metric, &labels), value, "{metric} {labels:?}");
    }
    let restarts = "connector_worker_restarts_total";
    assert_eq!(s.value(restarts, &[("connector", "snk")]), 2.0);
    assert_eq!(s.value(restarts, &[("connector", "src")]), 0.0);
    let in_flight = "connector_in_flight_records";
    assert_eq!(s.types[in_flight], "gauge");
    assert_eq!(s.value(in_flight, &[("connector", "src")]), 42.0);
    assert_eq!(s.value(in_flight, &[("connector", "snk")]), 4.0);
    assert_eq!(
        s.value("connector_memory_bytes", &[("connector", "src")]),
        1048576.0
    );

    let calls = "connector_processing_duration_seconds";
    assert_eq!(s.types[calls], "histogram");
    let poll = [("connector", "src"), ("call", "poll")];
    assert_eq!(s.value(&format!("{calls}_count"), &poll), 2.0);
    assert!((s.value(&format!("{calls}_sum"), &poll) - 0.010).abs() < 1e-9);
    let bucket = |le: &str| {
        s.value(
            &format!("{calls}_bucket"),
            &[("connector", "src"), ("call", "poll"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.0025"), 0.0);
    assert_eq!(bucket("0.005"), 1.0);
    assert_eq!(bucket("0.01"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    let commit = [("connector", "src"), ("call", "commit")];
    assert_eq!(s.value(&format!("{calls}_count"), &commit), 1.0);
    assert_eq!(s.value(&format!("{calls}_sum"), &commit), 2.0);
    let batch = "connector_batch_size";
    assert_eq!(s.types[batch], "histogram");
    assert_eq!(
        s.value(&format!("{batch}_count"), &[("connector", "src")]),
        2.0
    );
    assert_eq!(
        s.value(&format!("{batch}_sum"), &[("connector", "src")]),
        103.0
    );
    assert_eq!(
        s.value(
            &format!("{batch}_bucket"),
            &[("connector", "src"), ("le", "5")]
        ),
        1.0
    );

    #[cfg(target_os = "linux")]
    {
        assert!(s.has("process_resident_memory_bytes"), "process metrics");
        assert!(s.value("process_open_fds", &[]) > 0.0);
    }

    // Values move between scrapes.
    src.received("/default/a", 1);
    let s = scrape(addr).await;
    assert_eq!(
        s.value(received, &[("connector", "src"), ("topic", "/default/a")]),
        16.0
    );
    server.stop().await;
}

#[tokio::test]
async fn observability_health_and_ready_follow_the_connectors() {
    let obs = Observability::new();
    let server = obs.serve(local(), None).await.unwrap();
    let addr = server.local_addr();

    let (code, body) = json(addr, "/ready").await;
    assert_eq!(
        (code, body),
        (503, serde_json::json!({"ready": false})),
        "no connector yet"
    );

    let a = obs.connector("a");
    let b = obs.connector("b");
    let (code, body) = json(addr, "/health").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["connectors"]["a"]["status"], "healthy");
    assert_eq!(body["connectors"]["a"]["detail"], "starting");
    let since = body["connectors"]["a"]["since"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        since.len() == 20 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
        "{since}"
    );

    a.set_ready(true);
    assert_eq!(
        json(addr, "/ready").await,
        (503, serde_json::json!({"ready": false})),
        "b is not ready"
    );
    b.set_ready(true);
    assert_eq!(
        json(addr, "/ready").await,
        (200, serde_json::json!({"ready": true}))
    );

    a.set_health(Status::Degraded, "poll failed; retrying in 200 ms");
    let (code, body) = json(addr, "/health").await;
    assert_eq!(code, 200, "degraded still answers 200");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["connectors"]["a"]["status"], "degraded");
    assert_eq!(
        body["connectors"]["a"]["detail"],
        "poll failed; retrying in 200 ms"
    );
    assert_eq!(body["connectors"]["b"]["status"], "healthy");

    a.set_health(Status::Healthy, "running");
    let (code, body) = json(addr, "/health").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["connectors"]["a"]["detail"], "running");

    b.set_health(
        Status::Unhealthy,
        "writing a batch kept failing after 5 retries",
    );
    a.set_health(Status::Degraded, "broker unreachable");
    let (code, body) = json(addr, "/health").await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "unhealthy", "the worst connector wins");
    assert_eq!(body["connectors"]["b"]["status"], "unhealthy");
    assert_eq!(
        body["connectors"]["b"]["detail"],
        "writing a batch kept failing after 5 retries"
    );
    assert_eq!(body["connectors"]["a"]["status"], "degraded");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "status and connectors only"
    );
    assert_eq!(
        body["connectors"]["b"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["detail", "since", "status"]
    );
    server.stop().await;
}

#[test]
fn observability_since_changes_only_with_the_status() {
    let board = health::Board::default();
    board.register("c");
    board.set("c", Status::Degraded, "retrying".into());
    // Make the stored time recognisably old, then change only the detail.
    board.set_since_for_test("c", "2000-01-01T00:00:00Z");
    board.set("c", Status::Degraded, "retrying again".into());
    let now = board.report().connectors["c"].clone();
    assert_eq!(now.since, "2000-01-01T00:00:00Z");
    assert_eq!(now.detail, "retrying again");
    board.set("c", Status::Healthy, "ok".into());
    assert_ne!(board.report().connectors["c"].since, "2000-01-01T00:00:00Z");
}

#[test]
fn observability_conditions_outlast_the_pipelines_updates_until_cleared() {
    let board = health::Board::default();
    board.register("c");
    board.set_condition(
        "c",
        "topic /default/b",
        Some((Status::Degraded, "waiting for topic /default/b".into())),
    );
    // The pipeline recovering elsewhere does not hide the condition.
    board.set("c", Status::Healthy, "running".into());
    let c = board.report().connectors["c"].clone();
    assert_eq!(
        (c.status, c.detail.as_str()),
        (Status::Degraded, "waiting for topic /default/b")
    );

    // The worst condition comes first and sets the status; the pipeline's
    // own detail shows while it is not healthy.
    board.set_condition("c", "stall", Some((Status::Unhealthy, "stalled".into())));
    board.set("c", Status::Degraded, "publish failed, retrying".into());
    let c = board.report().connectors["c"].clone();
    assert_eq!(c.status, Status::Unhealthy);
    assert_eq!(
        c.detail,
        "publish failed, retrying; stalled; waiting for topic /default/b"
    );

    board.set_condition("c", "stall", None);
    board.set_condition("c", "topic /default/b", None);
    board.set("c", Status::Healthy, "running".into());
    let c = board.report().connectors["c"].clone();
    assert_eq!((c.status, c.detail.as_str()), (Status::Healthy, "running"));
    // Conditions of a connector not (or no longer) known are ignored.
    board.set_condition("gone", "x", Some((Status::Unhealthy, "x".into())));
    assert!(!board.report().connectors.contains_key("gone"));
}

#[test]
fn observability_rfc3339_dates() {
    assert_eq!(health::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(health::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(health::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(health::rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
}

fn counter(name: &str, value: u64, labels: &[(&str, &str)]) -> GuestMetric {
    GuestMetric::Counter {
        name: name.into(),
        value,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn gauge(name: &str, value: f64, labels: &[(&str, &str)]) -> GuestMetric {
    GuestMetric::Gauge {
        name: name.into(),
        value,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn observability_guest_metrics_carry_the_connector_and_bad_ones_are_refused() {
    let obs = Observability::new();
    let a = obs.connector("a");
    let b = obs.connector("b");
    let server = obs.serve(local(), None).await.unwrap();

    a.guest_metric(counter("rows.written", 3, &[("table", "t1")]));
    a.guest_metric(counter("rows.written", 4, &[("table", "t1")]));
    b.guest_metric(counter("rows.written", 5, &[("table", "t1")]));
    a.guest_metric(gauge("queue-depth", 2.5, &[]));
    a.guest_metric(gauge("queue-depth", 1.5, &[]));
    a.guest_metric(counter(
        "bytes_total",
        10,
        &[("b", "2"), ("a", "quote\" back\\slash")],
    ));
    a.guest_metric(counter(
        "bytes_total",
        1,
        &[("a", "quote\" back\\slash"), ("b", "2")],
    ));
    a.guest_metric(gauge("2fast", 1.0, &[("9lives", "x")]));

    // Refused, each without a panic.
    a.guest_metric(counter("", 1, &[]));
    a.guest_metric(counter("  ", 1, &[]));
    a.guest_metric(counter("...", 1, &[]));
    a.guest_metric(counter(&"x".repeat(101), 1, &[]));
    a.guest_metric(counter("spoof", 1, &[("connector", "b")]));
    a.guest_metric(counter("reserved", 1, &[("__name__", "x")]));
    a.guest_metric(counter("twice", 1, &[("k", "1"), ("k", "2")]));
    a.guest_metric(counter("twice2", 1, &[("k.x", "1"), ("k-x", "2")]));
    a.guest_metric(counter("empty_label", 1, &[("", "1")]));
    a.guest_metric(counter("long_value", 1, &[("k", &"v".repeat(300))]));
    let many: Vec<(String, String)> = (0..9).map(|i| (format!("l{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    a.guest_metric(counter("many_labels", 1, &many));
    // Conflicts with the first use of the name: other kind, other labels.
    a.guest_metric(gauge("rows_written_total", 1.0, &[("table", "t1")]));
    b.guest_metric(counter("rows.written", 1, &[("tbl", "t1")]));
    b.guest_metric(counter("rows.written", 1, &[]));
    a.guest_metric(counter("queue-depth", 1, &[]));
    a.guest_metric(gauge("bytes", 1.0, &[("a", "x"), ("b", "y")]));
    // Series beyond the per-connector cap are refused; other connectors are
    // not affected.
    for i in 0..guest::MAX_SERIES + 50 {
        a.guest_metric(gauge("per_item", i as f64, &[("item", &i.to_string())]));
    }
    b.guest_metric(gauge("per_item", 1.0, &[("item", "b-only")]));

    let s = scrape(server.local_addr()).await;
    let rows = "connector_guest_rows_written_total";
    assert_eq!(s.types[rows], "counter");
    assert_eq!(s.value(rows, &[("connector", "a"), ("table", "t1")]), 7.0);
    assert_eq!(s.value(rows, &[("connector", "b"), ("table", "t1")]), 5.0);
    assert_eq!(s.samples.keys().filter(|(n, _)| n == rows).count(), 2);
    assert_eq!(s.types["connector_guest_queue_depth"], "gauge");
    assert_eq!(
        s.value("connector_guest_queue_depth", &[("connector", "a")]),
        1.5
    );
    let bytes = "connector_guest_bytes_total";
    assert_eq!(
        s.value(
            bytes,
            &[("connector", "a"), ("a", "quote\" back\\slash"), ("b", "2")]
        ),
        11.0,
        "label order does not matter, values are escaped"
    );
    assert_eq!(
        s.value(
            "connector_guest_2fast",
            &[("connector", "a"), ("_9lives", "x")]
        ),
        1.0
    );
    for refused in [
        "connector_guest_spoof_total",
        "connector_guest_reserved_total",
        "connector_guest_twice_total",
        "connector_guest_twice2_total",
        "connector_guest_empty_label_total",
        "connector_guest_long_value_total",
        "connector_guest_many_labels_total",
        "connector_guest_queue_depth_total",
        "connector_guest_bytes",
    ] {
        assert!(!s.has(refused), "{refused} was refused");
    }
    assert!(
        !s.samples
            .keys()
            .any(|(n, _)| n.starts_with("connector_guest_x"))
    );
    // `a` already had 4 series (rows, queue_depth, bytes, 2fast).
    let per_item = |c: &str| {
        s.samples
            .keys()
            .filter(|(n, l)| n == "connector_guest_per_item" && l["connector"] == c)
            .count()
    };
    assert_eq!(per_item("a"), guest::MAX_SERIES - 4);
    assert_eq!(per_item("b"), 1);
    // An existing series still updates at the cap.
    a.guest_metric(gauge("per_item", 99.0, &[("item", "0")]));
    let s = parse(&obs.render_metrics());
    assert_eq!(
        s.value(
            "connector_guest_per_item",
            &[("connector", "a"), ("item", "0")]
        ),
        99.0
    );
    server.stop().await;
}

#[test]
fn observability_guest_names_are_sanitized() {
    assert_eq!(
        guest::exported_name("rows.written", true).unwrap(),
        "connector_guest_rows_written_total"
    );
    assert_eq!(
        guest::exported_name("bytes_total", true).unwrap(),
        "connector_guest_bytes_total"
    );
    assert_eq!(
        guest::exported_name(" queue-depth ", false).unwrap(),
        "connector_guest_queue_depth"
    );
    assert_eq!(
        guest::exported_name("héllo wörld", false).unwrap(),
        "connector_guest_h_llo_w_rld"
    );
    assert!(guest::exported_name("", false).is_err());
    assert!(guest::exported_name("-.-", false).is_err());
}

#[tokio::test]
async fn observability_bind_errors_name_the_address_and_stop_frees_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let obs = Observability::new();
    let err = obs
        .serve(addr, None)
        .await
        .err()
        .expect("address in use")
        .to_string();
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("metrics_port"), "{err}");
    drop(taken);

    let server = obs.serve(addr, None).await.expect("free again");
    assert_eq!(get(addr, "/nope").await.0, 404);
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped"
    );

    // Dropping the handle stops it too.
    let server = obs.serve(local(), None).await.unwrap();
    let addr = server.local_addr();
    drop(server);
    let mut gone = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "dropped handle stops the server");
}

#[tokio::test]
async fn observability_a_forgotten_connector_leaves_no_series_and_starts_again_at_zero() {
    let obs = Observability::new();
    let server = obs.serve(local(), None).await.unwrap();
    let (gone, kept) = (obs.connector("gone"), obs.connector("kept"));
    for c in [&gone, &kept] {
        c.received("/default/t", 3);
        c.sent("/default/t", 2);
        c.error("retryable");
        c.retry("ack");
        c.observe_call("poll", Duration::from_millis(1));
        c.batch_size(3);
        c.guest_metric(counter("rows", 4, &[("table", "t")]));
        c.guest_metric(gauge("depth", 1.0, &[]));
    }
    let series_of = |s: &Scrape, connector: &str| {
        s.samples
            .keys()
            .filter(|(_, labels)| {
                labels
                    .iter()
                    .any(|(k, v)| k == "connector" && v == connector)
            })
            .count()
    };
    let before = scrape(server.local_addr()).await;
    let kept_series = series_of(&before, "kept");
    assert_eq!(series_of(&before, "gone"), kept_series);

    obs.forget("gone");
    let after = scrape(server.local_addr()).await;
    assert_eq!(
        series_of(&after, "gone"),
        0,
        "a forgotten connector's series"
    );
    assert_eq!(series_of(&after, "kept"), kept_series);
    let rows = [("connector", "kept"), ("table", "t")];
    assert_eq!(after.value("connector_guest_rows_total", &rows), 4.0);

    // Back under the same name: its series again, from 0.
    let again = obs.connector("gone");
    again.guest_metric(counter("rows", 1, &[("table", "t")]));
    let s = scrape(server.local_addr()).await;
    let received = [("connector", "gone"), ("topic", "/default/t")];
    assert!(
        !s.samples.contains_key(&(
            "connector_messages_received_total".to_string(),
            labels(&received)
        )),
        "no topic series before a record"
    );
    assert_eq!(
        s.value(
            "connector_errors_total",
            &[("connector", "gone"), ("class", "retryable")]
        ),
        0.0
    );
    let rows = [("connector", "gone"), ("table", "t")];
    assert_eq!(s.value("connector_guest_rows_total", &rows), 1.0);
    server.stop().await;
}
