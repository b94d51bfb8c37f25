//! The real Danube broker as a child process, for tests that must hold
//! against the reference implementation rather than the in-memory stand-in.
//!
//! The binary comes from `DANUBE_BROKER_BIN` (upstream `danube-broker`
//! v0.15.1). Each [`RealBroker`] runs in standalone mode on a fresh data
//! directory with four free loopback ports, and is killed when dropped.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use danube_core::admin_proto::Empty;
use danube_core::admin_proto::broker_admin_client::BrokerAdminClient;
use danube_core::proto::TopicLookupRequest;
use danube_core::proto::discovery_client::DiscoveryClient;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The variable naming the broker binary.
pub const BROKER_BIN_VAR: &str = "DANUBE_BROKER_BIN";

/// How to get a broker, for every error that lacks one.
const HOW_TO_GET_ONE: &str = "get the Danube broker v0.15.1 (Docker image \
    ghcr.io/danube-messaging/danube-broker, or `cargo build --release -p danube-broker \
    --bin danube-broker` in a clone of danube-messaging/danube) and set DANUBE_BROKER_BIN \
    to its path; see README.md, \"Testing against the real broker\"";

/// A standalone start takes well under a second; this bounds a broker that
/// hangs (or a machine that is very busy) without hanging the test.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Free ports are picked, released, then bound by the broker: another
/// process may take one in between. The broker does not exit then (it logs
/// the bind error and runs on without that listener), so a clash is read
/// from its log and the start retried on new ports.
const START_ATTEMPTS: usize = 5;

/// Bounds one round of readiness probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the broker logs when one of its listeners cannot bind.
const ADDR_IN_USE: &str = "Address already in use";

/// Lines of the broker's log shown with a failure.
const LOG_TAIL_LINES: usize = 40;

/// A running `danube-broker` in standalone mode. Dropping it kills the
/// process; dropped while the thread panics, it also prints the tail of the
/// broker's log and keeps its directory for a post-mortem.
#[derive(Debug)]
pub struct RealBroker {
    process: Child,
    /// `None` once kept for a post-mortem.
    dir: Option<TempDir>,
    log_path: PathBuf,
    client: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl RealBroker {
    /// Starts the broker named by `DANUBE_BROKER_BIN` and waits until its
    /// client, admin and metrics endpoints answer.
    pub async fn start() -> anyhow::Result<RealBroker> {
        let binary = broker_binary()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&binary).await? {
                Started::Ready(broker) => return Ok(broker),
                Started::PortClash(log) if attempt < START_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "danube-broker lost a port to another process; retrying:\n{log}"
                    );
                    attempt += 1;
                }
                Started::PortClash(log) => bail!(
                    "danube-broker could not bind its ports in {START_ATTEMPTS} attempts; last log:\n{log}"
                ),
            }
        }
    }

    async fn start_once(binary: &Path) -> anyhow::Result<Started> {
        let dir = tempfile::Builder::new()
            .prefix("danube-broker-")
            .tempdir()
            .context("creating the broker's temporary directory")?;
        let log_path = dir.path().join("broker.log");
        let log = File::create(&log_path).context("creating the broker's log file")?;
        let [client, admin, raft, metrics] = free_ports()?;
        let mut command = Command::new(binary);
        command
            .args(["--mode", "standalone", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--broker-addr")
            .arg(client.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--raft-addr")
            .arg(raft.to_string())
            .arg("--prom-exporter")
            .arg(metrics.to_string())
            // Plain text: the log tail is meant for people reading test output.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        let process = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut broker = RealBroker {
            process,
            dir: Some(dir),
            log_path,
            client,
            admin,
            metrics,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if broker.log().contains(ADDR_IN_USE) {
                return Ok(Started::PortClash(broker.log_tail()));
            }
            if let Some(status) = broker.process.try_wait()? {
                bail!(broker.post_mortem(&format!(
                    "danube-broker exited with {status} before it was ready"
                )));
            }
            // Bounded: a port taken by something that accepts and stays
            // silent must not hang the start.
            let answered = tokio::time::timeout(PROBE_TIMEOUT, broker.answers()).await;
            if answered.unwrap_or(false) {
                // A listener that failed to bind is logged at once, so a clash
                // is visible by now: the endpoints that answered are ours.
                if broker.log().contains(ADDR_IN_USE) {
                    return Ok(Started::PortClash(broker.log_tail()));
                }
                return Ok(Started::Ready(broker));
            }
            if Instant::now() >= deadline {
                bail!(broker.post_mortem(&format!(
                    "danube-broker was not ready within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether all three endpoints serve real requests: a topic lookup on the
    /// client port, the namespace listing on the admin port, a metrics scrape.
    async fn answers(&self) -> bool {
        let client = async {
            let mut discovery = DiscoveryClient::connect(self.url()).await.ok()?;
            let request = TopicLookupRequest {
                request_id: 0,
                topic: "/default/readiness-probe".into(),
            };
            discovery.topic_partitions(request).await.ok()
        };
        let admin = async {
            let mut admin = BrokerAdminClient::connect(self.admin_url()).await.ok()?;
            admin.list_namespaces(Empty {}).await.ok()
        };
        let (client, admin, metrics) = tokio::join!(client, admin, http_get(self.metrics));
        client.is_some() && admin.is_some() && metrics.is_ok_and(|(status, _)| status == 200)
    }

    /// The URL for `DanubeClient::builder().service_url(..)`.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The URL of the admin gRPC services (`danube_core::admin_proto`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The Prometheus exporter's page.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    /// The metrics page as text, for tests that read one series.
    pub async fn scrape_metrics(&self) -> io::Result<String> {
        match http_get(self.metrics).await? {
            (200, body) => Ok(body),
            (status, _) => Err(io::Error::other(format!(
                "GET {} answered {status}",
                self.metrics_url()
            ))),
        }
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- danube-broker log, last {} lines ---\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Keeps the directory (data and full log) for a post-mortem and says
    /// what happened, where the directory is, and how the log ends.
    fn post_mortem(&mut self, what: &str) -> String {
        let kept = match self.dir.take() {
            Some(dir) => format!("its directory is kept at {}", dir.keep().display()),
            None => format!("its log is {}", self.log_path.display()),
        };
        format!("{what}; {kept}\n{}", self.log_tail())
    }
}

enum Started {
    Ready(RealBroker),
    /// Another process holds one of the ports; the broker's log tail.
    PortClash(String),
}

impl Drop for RealBroker {
    fn drop(&mut self) {
        // The broker has no graceful shutdown (it handles no signal), and its
        // data is never reused: kill it, and reap it so no zombie is left.
        let _ = self.process.kill();
        let _ = self.process.wait();
        if std::thread::panicking() {
            let what = format!("danube-broker at {} (a test failed)", self.url());
            eprintln!("{}", self.post_mortem(&what));
        }
    }
}

/// The broker binary from `DANUBE_BROKER_BIN`, or how to get one.
fn broker_binary() -> anyhow::Result<PathBuf> {
    let Some(path) = std::env::var_os(BROKER_BIN_VAR).filter(|p| !p.is_empty()) else {
        bail!("{BROKER_BIN_VAR} is not set: {HOW_TO_GET_ONE}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(anyhow!(
            "{BROKER_BIN_VAR}={} is not a file: {HOW_TO_GET_ONE}",
            path.display()
        ));
    }
    Ok(path)
}

/// Four distinct free loopback ports: all are bound at once so the kernel
/// cannot hand out one twice, then released for the broker to bind.
fn free_ports() -> io::Result<[SocketAddr; 4]> {
    let listeners = [(); 4].map(|()| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)));
    let mut addrs = [SocketAddr::from((Ipv4Addr::LOCALHOST, 0)); 4];
    for (addr, listener) in addrs.iter_mut().zip(listeners) {
        *addr = listener?.local_addr()?;
    }
    Ok(addrs)
}

/// Has the kernel kill the broker if the test process dies without running
/// destructors (a SIGKILL, an abort), so no broker outlives its test run.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe, which is all `pre_exec` requires.
    // The signal follows the spawning thread: brokers are spawned from the
    // test's runtime threads, which live as long as the test.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `GET /metrics`; returns the status and the body. HTTP/1.0, so that the
/// body comes whole (no chunked encoding) and ends with the connection.
async fn http_get(addr: SocketAddr) -> io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of HTTP headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP status line: {head}")))?;
    Ok((status, body.to_owned()))
}
