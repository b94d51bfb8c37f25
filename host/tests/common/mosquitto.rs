//! A real mosquitto (Debian's `mosquitto`) on a free loopback port, with its
//! own directory for persistence, password files and certificates; stopped
//! on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
