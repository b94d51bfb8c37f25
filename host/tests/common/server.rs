//! A server process a test starts (mosquitto, PostgreSQL, ClickHouse): on a
//! free loopback port, ready only once it answers, its output kept in a log
//! file, and killed on drop so no test leaves one behind.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
}

impl Server {
    /// Runs `command` with its output appended to `log`, then waits up to
    /// `deadline` for `ready`; panics naming `what` and showing the log if
    /// it never holds.
    pub fn start(
        what: &str,
        command: &mut Command,
        log: &Path,
        deadline: Duration,
        ready: impl FnMut() -> bool,
    ) -> Server {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not run ({e}); is it installed?"));
        let server = Server { child };
        assert!(
            wait_until(deadline, ready),
            "{what} did not come up; log:\n{}",
            read_log(log)
        );
        server
    }

    /// Sends `signal` (the server's own clean or fast shutdown) and waits for
    /// the process to exit.
    pub fn stop(mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a server's log file; empty while there is none.
pub fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}
