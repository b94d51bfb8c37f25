//! A real ClickHouse server (Debian's `clickhouse-server`) on free loopback
//! ports, with its own data directory and a `users.xml` holding one user
//! with a password, and optionally an HTTPS port; stopped on drop. Also the connector configuration and
//! payloads the ClickHouse tests and bench share.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use danube_testkit::{BrokerConfig, TestBroker};
use serde_json::{Value, json};

use super::server::{Server, free_port, read_log};
use super::tls::make_server_certificate;
use super::{Host, guest, write_config};

/// The user the server knows, and its password.
pub const USER: &str = "danube";
pub const PASSWORD: &str = "ch-test-Secret-7Q";

pub struct ClickHouse {
    server: Option<Server>,
    pub http_port: u16,
    /// Set when started with HTTPS.
    pub https_port: Option<u16>,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl ClickHouse {
    /// Starts a server and waits for it to answer `/ping`.
    pub fn start() -> ClickHouse {
        ClickHouse::start_with(false)
    }

    /// [`ClickHouse::start`]; with `https`, also an HTTPS port with a
    /// certificate for 127.0.0.1 signed by the CA `ca.pem` in
    /// [`ClickHouse::dir`].
    pub fn start_with(https: bool) -> ClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let (http_port, tcp_port) = (ports[0], ports[1]);
        let https_port = https.then_some(ports[2]);
        let https_config = match https_port {
            None => String::new(),
            Some(port) => {
                make_server_certificate(root);
                format!(
                    "<https_port>{port}</https_port>\n  <openSSL><server>\
                     <certificateFile>{root}/server.pem</certificateFile>\
                     <privateKeyFile>{root}/server.key</privateKeyFile>\
                     <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>\
                     <disableProtocols>sslv2,sslv3</disableProtocols></server></openSSL>\n  ",
                    root = root.display()
                )
            }
        };
        std::fs::write(
            root.join("users.xml"),
            format!(
                "<?xml version=\"1.0\"?>\n<yandex>\n  <profiles><default></default></profiles>\n  \
                 <users><{USER}><password>{PASSWORD}</password>\
                 <networks><ip>127.0.0.1</ip></networks><profile>default</profile>\
                 <quota>default</quota></{USER}></users>\n  \
                 <quotas><default></default></quotas>\n</yandex>\n"
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("config.xml"),
            format!(
                "<?xml version=\"1.0\"?>\n<yandex>\n  \
                 <logger><level>warning</level><console>1</console></logger>\n  \
                 <http_port>{http_port}</http_port>\n  <tcp_port>{tcp_port}</tcp_port>\n  {https_config}\
                 <listen_host>127.0.0.1</listen_host>\n  \
                 <path>{root}/data/</path>\n  <tmp_path>{root}/tmp/</tmp_path>\n  \
                 <users_config>{root}/users.xml</users_config>\n  \
                 <default_profile>default</default_profile>\n  \
                 <default_database>default</default_database>\n  \
                 <mark_cache_size>268435456</mark_cache_size>\n</yandex>\n",
                root = root.display()
            ),
        )
        .unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut server = ClickHouse {
            server: None,
            http_port,
            https_port,
            dir,
            agent,
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://127.0.0.1:PORT`, for a server started with HTTPS.
    pub fn https_url(&self) -> String {
        let port = self.https_port.expect("the server was started with HTTPS");
        format!("https://127.0.0.1:{port}")
    }

    /// Its directory, where the certificates are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        read_log(&self.log_file())
    }

    /// Starts the server process (again) and waits for `/ping`.
    pub fn spawn(&mut self) {
        let server = Server::start(
            "clickhouse-server",
            Command::new("clickhouse-server")
                .arg(format!(
                    "--config-file={}",
                    self.dir.path().join("config.xml").display()
                ))
                .current_dir(self.dir.path()),
            &self.log_file(),
            Duration::from_secs(60),
            || self.ping(),
        );
        self.server = Some(server);
    }

    fn ping(&self) -> bool {
        self.agent
            .get(format!("{}/ping", self.url()))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(libc::SIGTERM);
        }
    }

    /// Runs `sql` as the test user; panics with ClickHouse's answer unless it
    /// succeeds. Returns the response body, trimmed.
    pub fn query(&self, sql: &str) -> String {
        let mut response = self
            .agent
            .post(format!("{}/", self.url()))
            .header("X-ClickHouse-User", USER)
            .header("X-ClickHouse-Key", PASSWORD)
            .send(sql)
            .unwrap_or_else(|e| panic!("ClickHouse unreachable for `{sql}`: {e}"));
        let status = response.status();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "`{sql}` failed: {body}");
        body.trim().to_string()
    }

    /// The single number `sql` returns.
    pub fn count(&self, sql: &str) -> u64 {
        let text = self.query(sql);
        text.parse()
            .unwrap_or_else(|_| panic!("`{sql}` returned `{text}`, not a number"))
    }

    /// The rows of `sql` (without a FORMAT clause) as JSON objects.
    pub fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        self.query(&format!("{sql} FORMAT JSONEachRow"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Every column type, every metadata column, one nullable column.
pub const COLUMNS: &str = r#"metadata = { topic = "danube_topic", offset = "danube_offset", publish_time = "danube_publish_time", producer = "danube_producer" }
columns = [
  { column = "device", path = "device", type = "text" },
  { column = "seq", path = "seq", type = "bigint" },
  { column = "reading", path = "m.reading", type = "int" },
  { column = "temp", path = "m.temp", type = "double" },
  { column = "ok", path = "ok", type = "bool" },
  { column = "at", path = "at", type = "timestamp" },
  { column = "extra", path = "extra", type = "json" },
  { column = "note", path = "note", type = "text", nullable = true },
]
"#;

/// The payload of reading `seq`: every thousandth carries its time as
/// RFC 3339 text, the others as epoch seconds; every third has no note.
pub fn reading(seq: u64) -> Value {
    let mut v = json!({
        "device": format!("dev-{}", seq % 10),
        "seq": seq,
        "m": {"reading": seq as i64 - 5000, "temp": seq as f64 * 0.25},
        "ok": seq.is_multiple_of(2),
        "at": if seq.is_multiple_of(1000) { json!("2024-01-02T03:04:05+01:00") } else { json!(1_700_000_000 + seq) },
        "extra": {"tags": ["a", seq]},
    });
    if !seq.is_multiple_of(3) {
        v["note"] = json!(format!("n{seq}"));
    }
    v
}

/// A test broker holding the reliable `topic`, that lets a subscription
/// have `max_unacked` messages out (the real broker's default of 10 makes
/// every batch tiny).
pub async fn broker(topic: &str, max_unacked: usize) -> TestBroker {
    let broker = TestBroker::start_with(BrokerConfig {
        max_unacked_messages: max_unacked,
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    broker.create_topic(topic, 0, true).unwrap();
    broker
}

/// The host config: generous retries (ClickHouse restarts take seconds),
/// the ClickHouse port granted, then `routes`.
pub fn sink_config(
    dir: &Path,
    broker: &TestBroker,
    name: &str,
    ch: &ClickHouse,
    routes: &str,
) -> PathBuf {
    let text = config_text(&ch.url(), ch.http_port, "", routes);
    write_config(dir, &format!("{name}.toml"), &broker.url(), name, &text)
}

/// [`sink_config`] for the server's HTTPS port, with the sandbox granted the
/// certificate directory `certs`; `routes` may start with more
/// `[clickhouse]` keys (`ca_file`).
pub fn https_sink_config(
    dir: &Path,
    broker: &TestBroker,
    name: &str,
    ch: &ClickHouse,
    certs: &Path,
    routes: &str,
) -> PathBuf {
    let port = ch.https_port.expect("the server was started with HTTPS");
    let sandbox = format!("dirs = [\"{}\"]\n", certs.display());
    let text = config_text(&ch.https_url(), port, &sandbox, routes);
    write_config(dir, &format!("{name}.toml"), &broker.url(), name, &text)
}

pub fn config_text(url: &str, port: u16, sandbox: &str, routes: &str) -> String {
    format!(
        "[retry]\nmax_retries = 100\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n\n\
         [sandbox]\nallow = [\"127.0.0.1:{port}\"]\n{sandbox}\n\
         [clickhouse]\nurl = \"{url}\"\nuser = \"{USER}\"\nconnect_timeout_secs = 2\nrequest_timeout_secs = 20\n\n{routes}"
    )
}

/// One auto-created route from `topic` to `table` with [`COLUMNS`].
pub fn route(topic: &str, subscription: &str, table: &str) -> String {
    format!(
        "[[clickhouse.routes]]\ntopic = \"{topic}\"\nsubscription = \"{subscription}\"\ntable = \"{table}\"\nauto_create = true\n{COLUMNS}"
    )
}

/// Starts the host with the right password in the environment.
pub fn start_host(config: &Path) -> Host {
    Host::start(
        &guest("clickhouse-sink"),
        config,
        &[("CLICKHOUSE_PASSWORD", PASSWORD)],
    )
}
