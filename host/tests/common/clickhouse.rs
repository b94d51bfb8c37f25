//! A real ClickHouse server (Debian's `clickhouse-server`) on free loopback
//! ports, with its own data directory and a `users.xml` holding one user
//! with a password; stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The user the server knows, and its password.
pub const USER: &str = "danube";
pub const PASSWORD: &str = "ch-test-Secret-7Q";

pub struct ClickHouse {
    child: Option<Child>,
    pub http_port: u16,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ClickHouse {
    /// Starts a server and waits for it to answer `/ping`.
    pub fn start() -> ClickHouse {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (http_port, tcp_port) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
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
                 <http_port>{http_port}</http_port>\n  <tcp_port>{tcp_port}</tcp_port>\n  \
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
            child: None,
            http_port,
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

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Starts the server process (again) and waits for `/ping`.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("clickhouse-server runs (apt-get install clickhouse-server)");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(60), || self.ping());
        assert!(
            up,
            "ClickHouse did not answer /ping on {}; log:\n{}",
            self.http_port,
            self.log()
        );
    }

    fn ping(&self) -> bool {
        self.agent
            .get(format!("{}/ping", self.url()))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
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

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
