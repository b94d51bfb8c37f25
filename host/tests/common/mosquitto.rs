//! A real mosquitto (Debian's `mosquitto`) on a free loopback port, with its
//! own directory for persistence, password files and certificates; stopped
//! on drop.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{Server, free_port, read_log};

/// A mosquitto broker on a free loopback port.
pub struct Mosquitto {
    server: Option<Server>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Configuration lines beyond the listener and persistence; anonymous
    /// clients are admitted when they are empty.
    extra: String,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(|_| String::new())
    }

    /// Starts with the configuration lines `extra` returns (authentication,
    /// TLS, limits), given the broker's directory (for a password file or
    /// certificates).
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(dir.path());
        let mut m = Mosquitto {
            server: None,
            port: free_port(),
            dir,
            extra,
        };
        m.spawn();
        m
    }

    /// Starts the broker (again) on its port and persistence directory.
    pub fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Unlimited queue for offline persistent sessions: the default (1000)
        // drops messages while the connector is down, which is what the
        // restart test must not see.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {data}/\n\
                 max_queued_messages 0\nlog_dest stderr\nuser root\n",
                port = self.port,
                extra = if self.extra.is_empty() {
                    "allow_anonymous true\n"
                } else {
                    &self.extra
                },
                data = data.display()
            ),
        )
        .unwrap();
        let port = self.port;
        let server = Server::start(
            "mosquitto",
            Command::new("mosquitto").arg("-c").arg(&conf),
            &self.log_file(),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        self.server = Some(server);
    }

    /// Stops the broker cleanly (SIGTERM saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(libc::SIGTERM);
        }
    }

    /// The broker's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        read_log(&self.log_file())
    }
}

/// Starts `mosquitto_pub` publishing each line of `lines` as one message.
pub fn publish(port: u16, topic: &str, qos: u8, lines: Vec<String>) -> Child {
    publish_with(port, topic, qos, lines, &[])
}

/// [`publish`] with more `mosquitto_pub` arguments (credentials, TLS).
pub fn publish_with(port: u16, topic: &str, qos: u8, lines: Vec<String>, extra: &[&str]) -> Child {
    let (child, mut stdin) = mosquitto_pub(port, topic, qos, extra);
    std::thread::spawn(move || {
        let mut text = lines.join("\n");
        text.push('\n');
        let _ = stdin.write_all(text.as_bytes());
    });
    child
}

/// [`publish`] at `rate` lines a second.
pub fn publish_paced(port: u16, topic: &str, qos: u8, lines: Vec<String>, rate: u64) -> Child {
    let (child, mut stdin) = mosquitto_pub(port, topic, qos, &[]);
    std::thread::spawn(move || {
        let started = Instant::now();
        for (i, line) in lines.iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if writeln!(stdin, "{line}").is_err() {
                return;
            }
        }
    });
    child
}

/// `mosquitto_pub -l` (a message per line of its input) on `topic`, under a
/// client id of its own.
fn mosquitto_pub(port: u16, topic: &str, qos: u8, extra: &[&str]) -> (Child, ChildStdin) {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", topic, "-q", &qos.to_string(), "-l"])
        .args(["-i", &format!("pub-{}-{id}", topic.replace('/', "_"))])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Waits for every publisher to exit, each successfully.
pub fn finish(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
