//! Directory mode: running `danube-host --modules-dir` and dropping files
//! into its directory the way users are told to.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Host, host_bin, target_dir};

impl Host {
    /// Starts `danube-host --modules-dir DIR` with the shared endpoint on a
    /// free loopback port and text logs captured to `log_file`.
    pub fn start_directory(modules_dir: &Path, log_file: &Path) -> Host {
        Host::start_directory_with(modules_dir, log_file, &[])
    }

    /// [`Host::start_directory`] with more arguments (`--api`).
    pub fn start_directory_with(modules_dir: &Path, log_file: &Path, args: &[&str]) -> Host {
        let stderr = std::fs::File::create(log_file).unwrap();
        let child = Command::new(host_bin())
            .args(["--log-format", "text", "--metrics-bind", "127.0.0.1"])
            .args(["--metrics-port", "0", "--modules-dir"])
            .arg(modules_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
            .env_remove("LOG_LEVEL")
            .env_remove("RUST_LOG")
            .spawn()
            .expect("danube-host starts");
        Host {
            child: Some(child),
            stderr_file: log_file.to_path_buf(),
        }
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Sends `signal` to the host.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

/// Puts `bytes` at `dir/file` the documented way: written beside it as
/// `file.tmp`, then renamed into place.
pub fn place(dir: &Path, file: &str, bytes: impl AsRef<[u8]>) {
    let staging = dir.join(format!("{file}.tmp"));
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, dir.join(file)).unwrap();
}

/// `module` with a custom section appended: other bytes (so another module
/// to the host), the same behaviour.
pub fn changed_module(module: &Path, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(module).unwrap();
    let name = b"test-build";
    let body_len = 1 + name.len() + tag.len();
    assert!(body_len < 128 && name.len() < 128, "one-byte LEB sizes");
    bytes.push(0); // custom section
    bytes.push(body_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}
