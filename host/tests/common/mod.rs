//! Shared test support: building guest modules, running `danube-host` as a
//! child process, and waiting on conditions with deadlines.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod clickhouse;
pub mod delta;
pub mod directory;
pub mod http_endpoint;
pub mod mosquitto;
pub mod polyglot;
pub mod postgres;
pub mod probe;
pub mod s3;
pub mod server;
pub mod tls;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds a guest crate for wasm32-wasip2 (once per test process) and returns
/// its component. `.ci/run` builds them beforehand, so this is a no-op there.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building guest {package} failed");
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "{} missing after build", path.display());
    built.insert(package.to_string(), path.clone());
    path
}

pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_danube-host")
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`wait_until`].
pub async fn wait_until_async(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How [`Host::spawn`] starts the binary beyond its module and configuration.
#[derive(Default)]
struct Launch<'a> {
    group_leader: bool,
    dir: Option<&'a Path>,
    args: &'a [&'a str],
    /// The subcommand; `run` when `None`.
    command: Option<&'a str>,
}

/// A running `danube-host`, killed if the test ends without stopping it.
pub struct Host {
    child: Option<Child>,
    stderr_file: PathBuf,
}

impl Host {
    /// Starts `danube-host run --module M --config C` with text logs captured
    /// to a file beside the configuration.
    pub fn start(module: &Path, config: &Path, env: &[(&str, &str)]) -> Host {
        Host::start_binary(Path::new(host_bin()), module, config, env)
    }

    /// [`Host::start`] with the `danube-host` binary at `binary`.
    pub fn start_binary(binary: &Path, module: &Path, config: &Path, env: &[(&str, &str)]) -> Host {
        Host::spawn(binary, module, config, env, Launch::default())
    }

    /// [`Host::start`] in the working directory `dir`, with more arguments.
    pub fn start_in(
        dir: &Path,
        module: &Path,
        config: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Host {
        let launch = Launch {
            dir: Some(dir),
            args,
            ..Launch::default()
        };
        Host::spawn(Path::new(host_bin()), module, config, env, launch)
    }

    /// `danube-host dev` on `module` and `config` with more arguments; what
    /// it says on standard output goes to [`Host::log`] too.
    pub fn start_dev(module: &Path, config: &Path, args: &[&str]) -> Host {
        let launch = Launch {
            args,
            command: Some("dev"),
            ..Launch::default()
        };
        Host::spawn(Path::new(host_bin()), module, config, &[], launch)
    }

    /// [`Host::start`] as the leader of a process group of its own, as a
    /// shell starts a job (or `timeout` and `tini -g` their child): then
    /// [`Host::signal_group`] reaches it and whatever else is in its group,
    /// as Ctrl-C in a terminal does.
    pub fn start_group_leader(module: &Path, config: &Path, env: &[(&str, &str)]) -> Host {
        let launch = Launch {
            group_leader: true,
            ..Launch::default()
        };
        Host::spawn(Path::new(host_bin()), module, config, env, launch)
    }

    fn spawn(
        binary: &Path,
        module: &Path,
        config: &Path,
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Host {
        use std::os::unix::process::CommandExt;
        let stderr_file = config.with_extension("log");
        let stderr = std::fs::File::create(&stderr_file).unwrap();
        let stdout = stderr.try_clone().unwrap();
        let mut command = Command::new(binary);
        command
            .arg(launch.command.unwrap_or("run"))
            .args(["--log-format", "text", "--module"])
            .arg(module)
            .arg("--config")
            .arg(config)
            .args(launch.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"));
        for (k, v) in env {
            command.env(k, v);
        }
        if launch.group_leader {
            command.process_group(0);
        }
        if let Some(dir) = launch.dir {
            command.current_dir(dir);
        }
        Host {
            child: Some(command.spawn().expect("danube-host starts")),
            stderr_file,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends `signal` to the host's process group (see
    /// [`Host::start_group_leader`]).
    pub fn signal_group(&self, signal: i32) {
        // SAFETY: kill(2) on the process group this test's child leads.
        unsafe { libc::kill(-self.pid(), signal) };
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_file) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_exit(&mut child, deadline).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "danube-host did not stop within {deadline:?} after SIGTERM; log:\n{}",
                self.log()
            )
        })
    }

    /// Waits for the host to exit by itself.
    pub fn wait(mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_exit(&mut child, deadline).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "danube-host did not exit within {deadline:?}; log:\n{}",
                self.log()
            )
        })
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `danube-host ARGS` to completion; returns (exit code, stdout, stderr).
pub fn run_host(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(host_bin())
        .args(args)
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .output()
        .expect("danube-host runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a host configuration file: the root keys, a state directory in
/// `dir`, metrics on a free loopback port, then `rest` verbatim.
pub fn write_config(
    dir: &Path,
    file: &str,
    broker_url: &str,
    connector: &str,
    rest: &str,
) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "danube_service_url = \"{broker_url}\"\nconnector_name = \"{connector}\"\n\n[state]\ndir = \"{}\"\n\n[metrics]\nbind = \"127.0.0.1\"\nport = 0\n\n{rest}",
        dir.join("state").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A broker a test can ask whether a subscription is in place.
pub trait Subscriptions {
    /// Whether `subscription` is ready on `topic` (one partition).
    async fn subscribed(&self, topic: &str, subscription: &str) -> bool;
}

/// On the test broker: a consumer has its message stream open.
impl Subscriptions for danube_testkit::TestBroker {
    async fn subscribed(&self, topic: &str, subscription: &str) -> bool {
        self.subscription(topic, subscription)
            .is_some_and(|s| s.consumers > 0)
    }
}

/// On the real broker, which cannot be asked about consumers: the admin API
/// lists the subscription, so it exists and takes messages published from
/// now on.
impl Subscriptions for danube_testkit::Broker {
    async fn subscribed(&self, topic: &str, subscription: &str) -> bool {
        match self.as_test() {
            Some(broker) => broker.subscribed(topic, subscription).await,
            None => self
                .subscriptions(topic)
                .await
                .is_ok_and(|listed| listed.iter().any(|s| s == subscription)),
        }
    }
}

/// Waits until `subscription` is in place on every one of `topics` (a sink
/// subscribed), or panics with the host's log.
pub async fn wait_subscribed(
    broker: &impl Subscriptions,
    topics: &[String],
    subscription: &str,
    host: &Host,
) {
    let subscribed = danube_testkit::wait_until(Duration::from_secs(30), || async {
        for topic in topics {
            if !broker.subscribed(topic, subscription).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        subscribed,
        "the sink did not subscribe; log:\n{}",
        host.log()
    );
}

/// A created reliable producer on `topic`, through the real client.
pub async fn reliable_producer(broker_url: &str, topic: &str) -> danube_client::Producer {
    let client = danube_client::DanubeClient::builder()
        .service_url(broker_url)
        .build()
        .await
        .unwrap();
    let mut producer = client
        .new_producer()
        .with_topic(topic)
        .with_name("test-producer")
        .with_reliable_dispatch()
        .build()
        .unwrap();
    producer.create().await.unwrap();
    producer
}

/// `danube-host COMMAND` (`validate` or `run`) with `module` on `file`, a
/// fixture of `tests/fixtures/danube-connectors/CONNECTOR` (danube-connect's
/// own files, unchanged), run in that directory as upstream runs it, with
/// `env` beside the test's.
pub fn upstream(
    connector: &str,
    module: &Path,
    command: &str,
    file: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/danube-connectors")
        .join(connector);
    Command::new(host_bin())
        .current_dir(&dir)
        .args([command, "--module"])
        .arg(module)
        .arg("--config")
        .arg(dir.join(file))
        // Their metrics port is fixed (9090); tests run side by side.
        .env("METRICS_PORT", "0")
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Sends `payloads` as JSON, in order, through one reliable producer.
pub async fn produce_json(
    broker_url: String,
    topic: &str,
    payloads: impl IntoIterator<Item = serde_json::Value>,
) {
    let producer = reliable_producer(&broker_url, topic).await;
    for p in payloads {
        producer
            .send(serde_json::to_vec(&p).unwrap(), None)
            .await
            .unwrap();
    }
}

/// For tests of `[sandbox] dirs`: a directory `granted` under `dir` holding
/// `inside.txt`, and `outside.txt` beside it (readable by the host, but not
/// in the granted directory). Returns both paths.
pub fn granted_and_outside(dir: &Path) -> (PathBuf, PathBuf) {
    let granted = dir.join("granted");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), "inside").unwrap();
    let outside = dir.join("outside.txt");
    std::fs::write(&outside, "outside").unwrap();
    (granted, outside)
}

/// The JSON lines of a file a file-sink writes (a missing file: none).
/// Read while the sink writes, the file may end in half a line: only lines
/// with their newline count.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| serde_json::from_str(l).expect("file-sink writes JSON lines"))
        .collect()
}

/// Sequence numbers in the file-sink's output (datagen payloads), with counts.
pub fn seqs_in_file(out_file: &Path) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for v in json_lines(out_file) {
        *seen
            .entry(v["payload"]["seq"].as_u64().unwrap())
            .or_default() += 1;
    }
    seen
}

/// The sequence number datagen-source last committed, from the host's state
/// file (the connector stores it as JSON text, which the host keeps readable).
pub fn committed_seq(state_file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
    map.get("committed_seq")?.as_str()?.trim().parse().ok()
}

/// The worker process of a host: its only child. Children are listed per
/// thread of the parent, so every thread is looked at.
pub fn worker_pid(host_pid: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{host_pid}/task")).ok()?;
    tasks.flatten().find_map(|task| {
        let children = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    })
}

/// SIGKILLs the host's worker, waiting for one to exist; returns its pid.
pub async fn kill_worker(host: &Host) -> i32 {
    let mut pid = None;
    assert!(
        wait_until_async(Duration::from_secs(20), || {
            pid = worker_pid(host.pid());
            pid.is_some()
        })
        .await,
        "the host has no worker process; log:\n{}",
        host.log()
    );
    let pid = pid.unwrap();
    // SAFETY: kill(2) on a process this test started (through the host).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    pid
}

/// The address the host logged for its observability endpoints.
pub fn endpoint(host: &Host) -> Option<String> {
    host.log()
        .lines()
        .find(|l| l.contains("serving /metrics"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_string)
}

/// A plain HTTP GET; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_call(addr, "GET", path, &[])
}

/// A plain HTTP request without a body, with `headers`; returns (status,
/// body).
pub fn http_call(addr: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The host's `/health` document and its HTTP status, once it serves one.
pub fn health(host: &Host) -> Option<(u16, serde_json::Value)> {
    let addr = endpoint(host)?;
    std::net::TcpStream::connect(&addr).ok()?;
    let (status, body) = http_get(&addr, "/health");
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Waits until the host's `/health` document satisfies `condition`; panics
/// with the last document and the host's log if it does not in `deadline`.
pub async fn wait_health(
    host: &Host,
    deadline: Duration,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = None;
    let met = wait_until_async(deadline, || {
        last = health(host).map(|(_, doc)| doc);
        last.as_ref().is_some_and(&condition)
    })
    .await;
    assert!(met, "{what}: /health was {last:?}; log:\n{}", host.log());
    last.unwrap()
}

/// The `[sandbox]` and `[file]` tables of a file-sink writing into `out`
/// what it consumes from `topic` as `subscription`; more `[file]` keys may
/// follow.
pub fn file_sink_tables(out: &Path, topic: &str, subscription: &str) -> String {
    format!(
        "[sandbox]\ndirs = [\"{out}\"]\n\n[file]\npath = \"{out}\"\ntopics = [\"{topic}\"]\nsubscription = \"{subscription}\"\n",
        out = out.display()
    )
}

/// The `[broker]` table for a host on `broker`: its Prometheus page, so
/// that a sink tells on `/health` when the broker skips or withholds
/// messages of its subscription.
pub fn broker_table(broker: &danube_testkit::Broker) -> String {
    format!("[broker]\nmetrics_url = \"{}\"\n\n", broker.metrics_url())
}

/// The host's `/health` document as one line, for assertion messages (a
/// sink short of records says there whether the broker skipped some).
pub fn health_detail(host: &Host) -> String {
    match health(host) {
        Some((status, doc)) => format!("/health ({status}): {doc}"),
        None => "/health: not served".into(),
    }
}

/// The `seq` attribute of each message a tap received (datagen sets it),
/// with how many times it was stored: a message delivered to the tap twice
/// (same topic and offset) counts once.
pub fn tap_seqs(tap: &danube_testkit::Tap) -> std::collections::BTreeMap<u64, usize> {
    let mut seqs = std::collections::BTreeMap::new();
    for message in tap.stored() {
        let seq = message.attributes["seq"].parse().expect("a seq attribute");
        *seqs.entry(seq).or_default() += 1;
    }
    seqs
}

/// `danube-host test` on `module` with `config`, its `scenarios` and `env`:
/// whether it passed, and its report.
pub fn conformance(
    module: &Path,
    config: &Path,
    scenarios: &[&Path],
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut command = Command::new(host_bin());
    command
        .args(["test", "--log-format", "text", "--module"])
        .arg(module)
        .arg("--config")
        .arg(config)
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .envs(env.iter().copied());
    for scenario in scenarios {
        command.arg("--scenario").arg(scenario);
    }
    let out = command.output().expect("danube-host runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// Runs `danube-host test` on the sink `module` with `config` and `env` and
/// a scenario (written in `dir`) handing it `payloads`, each with the
/// outcome it must get (`written`, `invalid_data`, `retryable`); asserts
/// that every check and the scenario passed.
pub fn assert_sink_scenario_passes(
    dir: &Path,
    module: &Path,
    config: &Path,
    payloads: &[(serde_json::Value, &str)],
    env: &[(&str, &str)],
) {
    let records: Vec<String> = payloads
        .iter()
        .map(|(payload, expect)| {
            let payload = toml::Value::String(payload.to_string());
            format!("[[records]]\npayload = {payload}\nexpect = \"{expect}\"\n")
        })
        .collect();
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, records.join("\n")).unwrap();
    let (passed, report) = conformance(module, config, &[&scenario], env);
    assert!(passed, "{report}");
    let expected = format!("{} records as expected", payloads.len());
    assert!(
        report.contains("pass  scenario scenario.toml") && report.contains(&expected),
        "{report}"
    );
}

/// Copies the directory tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
