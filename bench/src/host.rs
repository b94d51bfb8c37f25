//! `danube-host` run as a child process: its configuration, its `/metrics`
//! counters and the memory of its supervisor and worker processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Env;
use crate::cpu::HostCpu;

/// Where the binaries and guest components of this build are.
pub struct Paths {
    pub host: PathBuf,
    pub testkit: PathBuf,
    pub guests: PathBuf,
}

impl Paths {
    /// Beside this executable (`target/release/`), guests in
    /// `target/wasm32-wasip2/release/`, as `scripts/bench.sh` builds them.
    pub fn beside_self() -> anyhow::Result<Paths> {
        let exe = std::env::current_exe()?;
        let bin_dir = exe.parent().context("executable has no directory")?;
        let target = bin_dir.parent().context("executable is not in target/")?;
        let paths = Paths {
            host: bin_dir.join("danube-host"),
            testkit: bin_dir.join("danube-testkit"),
            guests: target.join("wasm32-wasip2/release"),
        };
        for file in [&paths.host, &paths.testkit] {
            if !file.exists() {
                bail!(
                    "{} is missing: run scripts/bench.sh, which builds it",
                    file.display()
                );
            }
        }
        Ok(paths)
    }

    pub fn guest(&self, crate_name: &str) -> anyhow::Result<PathBuf> {
        let path = self
            .guests
            .join(format!("{}.wasm", crate_name.replace('-', "_")));
        if !path.exists() {
            bail!(
                "{} is missing: run scripts/bench.sh, which builds it",
                path.display()
            );
        }
        Ok(path)
    }
}

/// Resident memory of the supervisor and its worker, in KiB.
#[derive(Clone, Copy, Default)]
pub struct Rss {
    pub supervisor_kib: u64,
    pub worker_kib: u64,
}

impl Rss {
    pub fn max(self, other: Rss) -> Rss {
        Rss {
            supervisor_kib: self.supervisor_kib.max(other.supervisor_kib),
            worker_kib: self.worker_kib.max(other.worker_kib),
        }
    }
}

/// One running `danube-host`, killed if dropped while running.
pub struct HostProcess {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl HostProcess {
    /// Writes `NAME.toml` in the bench's directory (the root keys, state
    /// beside it, metrics on a free loopback port, `[sandbox]` with the
    /// module cache `cache` and `sandbox` lines, then `rest`) and starts
    /// `danube-host` on it.
    pub fn start(
        env: &Env,
        module: &Path,
        name: &str,
        cache: &Path,
        sandbox: &str,
        rest: &str,
    ) -> anyhow::Result<HostProcess> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = env.work.path();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "danube_service_url = \"{url}\"\nconnector_name = \"{name}\"\n\n\
                 [state]\ndir = \"{state}\"\n\n[metrics]\nbind = \"127.0.0.1\"\nport = {port}\n\n\
                 [sandbox]\ncache_dir = \"{cache}\"\n{sandbox}\n\n{rest}",
                url = env.url(),
                state = dir.join("state").display(),
                cache = cache.display(),
            ),
        )?;
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(&env.paths.host)
            // The management API on (for the tap scenario): routes only,
            // nothing runs until a request comes.
            .args(["run", "--api", "--log-format", "text", "--module"])
            .arg(module)
            .arg("--config")
            .arg(&config)
            // Warnings only, unless the bench is told otherwise (with --keep).
            .env(
                "LOG_LEVEL",
                std::env::var("DANUBE_BENCH_HOST_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", env.paths.host.display()))?;
        Ok(HostProcess {
            child,
            metrics: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads `GET /connectors/NAME/tap?rate=RATE` on a thread of its own,
    /// counting the lines, until the reader is dropped.
    pub fn tap(&self, name: &str, rate: u32) -> anyhow::Result<TapReader> {
        use std::io::{BufRead, BufReader};
        let started = Instant::now();
        loop {
            // Not listening yet: the host is starting.
            let Ok(mut stream) = TcpStream::connect(self.metrics) else {
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("the host's endpoint {} does not answer", self.metrics);
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            write!(
                stream,
                "GET /connectors/{name}/tap?rate={rate} HTTP/1.1\r\nHost: bench\r\n\r\n"
            )?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut status = String::new();
            reader.read_line(&mut status)?;
            if status.split_whitespace().nth(1) == Some("200") {
                let lines = Arc::new(AtomicU64::new(0));
                let counted = lines.clone();
                let thread = std::thread::spawn(move || {
                    // Chunk sizes and headers are lines too: records are
                    // the JSON ones.
                    for line in reader.split(b'\n') {
                        match line {
                            Ok(line) if line.starts_with(b"{") => {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                return Ok(TapReader {
                    stream,
                    lines,
                    thread: Some(thread),
                });
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the host's tap answered {}", status.trim());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sum of a counter over all its labels; 0 while the endpoint is not up.
    pub fn counter(&self, name: &str) -> u64 {
        let body = self
            .get("/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let prefix = format!("{name}{{");
        body.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Records the connector handed on: for a source, acknowledged by Danube;
    /// for a sink, written by the guest.
    pub fn sent(&self) -> u64 {
        self.counter("connector_messages_sent_total")
    }

    pub fn ready(&self) -> bool {
        self.get("/ready").is_some_and(|(status, _)| status == 200)
    }

    /// Waits until the host reports ready, or fails with its log.
    pub fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        self.wait_for(deadline, "ready", |h| h.ready())
    }

    /// Polls `condition` every millisecond; fails with the host's log if the
    /// host exits or `deadline` passes first.
    pub fn wait_for(
        &mut self,
        deadline: Duration,
        what: &str,
        condition: impl FnMut(&HostProcess) -> bool,
    ) -> anyhow::Result<()> {
        if !self.wait_until(deadline, what, condition)? {
            bail!(
                "danube-host not {what} within {deadline:?}; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// Polls `condition` every millisecond until it holds (`true`) or
    /// `deadline` passes (`false`); fails with the host's log if the host
    /// exits first.
    pub fn wait_until(
        &mut self,
        deadline: Duration,
        what: &str,
        mut condition: impl FnMut(&HostProcess) -> bool,
    ) -> anyhow::Result<bool> {
        let end = Instant::now() + deadline;
        while !condition(self) {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "danube-host exited ({status}) before {what}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > end {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(true)
    }

    /// The host's CPU time so far (supervisor, worker, reaped workers).
    pub fn cpu(&self) -> Option<HostCpu> {
        HostCpu::sample(self.pid(), self.worker_pid())
    }

    /// The worker process: the host's only child (children are listed per
    /// thread of the parent).
    pub fn worker_pid(&self) -> Option<i32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        tasks.flatten().find_map(|task| {
            let children = std::fs::read_to_string(task.path().join("children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })
    }

    pub fn rss(&self) -> Rss {
        Rss {
            supervisor_kib: vm_rss_kib(self.pid()),
            worker_kib: self.worker_pid().map_or(0, vm_rss_kib),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (drain) and wait for the exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > end {
                bail!("danube-host did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a process, from `/proc/PID/status`; 0 if it is gone.
/// A tap being read (see [`HostProcess::tap`]).
pub struct TapReader {
    stream: TcpStream,
    lines: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TapReader {
    /// Records read so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}

impl Drop for TapReader {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
