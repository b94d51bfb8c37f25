//! The supervisor: the parent process that owns the Danube clients, the
//! pipelines and the lifecycle of one connector, and the worker process that
//! runs its guest.

mod danube;
mod retry;
mod sink;
mod source;
mod state_store;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{ConnectorConfig, documented_keys};
use crate::protocol::{
    CallOutcome, ConnectorError, ModuleInfo, NetRule, Opened, PROTOCOL_VERSION, SandboxLimits,
    WorkerInit,
};
pub use state_store::StateStore;
pub use worker::Worker;

/// Exit codes of `danube-host`.
pub mod exit {
    /// Drained and stopped on a signal, or finished.
    pub const OK: u8 = 0;
    /// Something unexpected inside the host.
    pub const INTERNAL: u8 = 1;
    /// Bad command line or configuration (host or connector).
    pub const CONFIG: u8 = 2;
    /// The module cannot be loaded: not a component, another world or version,
    /// corrupt, missing imports.
    pub const MODULE: u8 = 3;
    /// The connector failed for good: a fatal error, a trap, retries spent.
    pub const FATAL: u8 = 4;
}

/// Why a pipeline stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("{0}")]
    Fatal(String),
    #[error("the connector's configuration was rejected: {0}")]
    Config(String),
    #[error("{0}")]
    WorkerGone(String),
}

impl Stop {
    fn exit_code(&self) -> u8 {
        match self {
            Stop::Config(_) => exit::CONFIG,
            Stop::Fatal(_) | Stop::WorkerGone(_) => exit::FATAL,
        }
    }
}

/// Turns a reply that the pipeline did not expect at this point into a stop.
pub(crate) fn outcome_error(call: &str, outcome: CallOutcome) -> Stop {
    match outcome {
        CallOutcome::Error(ConnectorError::Config(m)) => Stop::Config(m),
        CallOutcome::Error(e) => Stop::Fatal(format!("{call} failed: {e}")),
        CallOutcome::Trapped(m) => Stop::WorkerGone(m),
        other => Stop::Fatal(format!("{call} returned an unexpected reply: {other:?}")),
    }
}

/// A fresh id tying together the log lines of one batch, in the host and in
/// the guest.
pub(crate) fn new_trace_id() -> u64 {
    rand::random()
}

/// How the host logs, passed on to workers.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub filter: String,
    pub json: bool,
}

/// Starts a worker for `module` and waits until it is loaded.
pub async fn start_worker(
    module: &Path,
    config: Option<&ConnectorConfig>,
    state: StateStore,
    log: &LogSettings,
    metrics: mpsc::UnboundedSender<crate::protocol::GuestMetric>,
) -> anyhow::Result<Worker> {
    let module = std::fs::canonicalize(module).map_err(|e| {
        anyhow::anyhow!("cannot open module {}: {e}", module.display())
    })?;
    let limits = match config {
        Some(c) => sandbox_limits(c)?,
        None => SandboxLimits {
            memory_bytes: 256 << 20,
            call_timeout_ms: 10_000,
            dirs: Vec::new(),
            allow: Vec::new(),
        },
    };
    let init = WorkerInit {
        protocol_version: PROTOCOL_VERSION,
        connector: config
            .map(|c| c.host.connector_name.clone())
            .unwrap_or_else(|| "inspect".into()),
        module,
        cache_dir: config
            .and_then(|c| c.host.sandbox.cache_dir.clone())
            .or_else(crate::worker::default_cache_dir),
        limits,
        state: state.entries().clone(),
        log_filter: log.filter.clone(),
        log_json: log.json,
    };
    Worker::spawn(init, state, metrics).await
}

/// Resolves `[sandbox]` into the limits a worker applies.
fn sandbox_limits(config: &ConnectorConfig) -> anyhow::Result<SandboxLimits> {
    let sandbox = &config.host.sandbox;
    let mut dirs = Vec::new();
    for dir in &sandbox.dirs {
        std::fs::create_dir_all(dir).ok();
        dirs.push(std::fs::canonicalize(dir).map_err(|e| {
            anyhow::anyhow!("[sandbox] dirs: cannot grant {}: {e}", dir.display())
        })?);
    }
    let mut allow = Vec::new();
    for entry in &sandbox.allow {
        allow.extend(parse_allow(entry).map_err(|e| anyhow::anyhow!("[sandbox] allow: {e}"))?);
    }
    Ok(SandboxLimits {
        memory_bytes: sandbox.memory_mb << 20,
        call_timeout_ms: sandbox.call_timeout_ms,
        dirs,
        allow,
    })
}

/// Parses `host:port` (names resolved here, by the host) or
/// `address/prefix:port`.
fn parse_allow(entry: &str) -> Result<Vec<NetRule>, String> {
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry:?} has no port; write host:port, e.g. \"mqtt.local:1883\""))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{entry:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Some((network, prefix)) = host.split_once('/') {
        let network: std::net::IpAddr = network
            .parse()
            .map_err(|_| format!("{entry:?}: {network:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{entry:?}: /{prefix} is not a prefix length (0-{max})"))?;
        return Ok(vec![NetRule { network, prefix_len, port }]);
    }
    use std::net::ToSocketAddrs;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    Ok(addrs
        .map(|a| NetRule {
            network: a.ip(),
            prefix_len: if a.is_ipv4() { 32 } else { 128 },
            port,
        })
        .collect())
}

/// Runs one connector until it is stopped by a signal or fails.
pub async fn run(module: PathBuf, mut config: ConnectorConfig, log: LogSettings) -> ExitCode {
    let name = config.host.connector_name.clone();
    let fail = |code: u8, message: String| {
        tracing::error!(connector = %name, "{message}");
        eprintln!("danube-host: connector {name}: {message}");
        ExitCode::from(code)
    };

    let state = match StateStore::open(&config.state_file()) {
        Ok(s) => s,
        Err(e) => return fail(exit::CONFIG, format!("{e:#}")),
    };
    let (metrics_tx, mut metrics_rx) = mpsc::unbounded_channel();
    let worker = match start_worker(&module, Some(&config), state, &log, metrics_tx).await {
        Ok(w) => w,
        Err(e) => {
            return fail(
                exit::MODULE,
                format!("cannot load {}: {e:#}", module.display()),
            );
        }
    };
    tokio::spawn(async move {
        while let Some(metric) = metrics_rx.recv().await {
            tracing::debug!(?metric, "connector metric");
        }
    });
    let info = worker.info().clone();
    tracing::info!(connector = %name, module = %module.display(), world = %info.world, guest = %info.name, guest_version = %info.version, "module loaded");

    config.apply_connector_env(&documented_keys(&info.config_example), &|k| std::env::var(k).ok());
    let opened = match worker
        .call(new_trace_id(), crate::protocol::Call::Open { config_json: config.connector_json() })
        .await
    {
        Ok(CallOutcome::Opened(opened)) => opened,
        Ok(CallOutcome::Error(ConnectorError::Config(m))) => {
            return fail(exit::CONFIG, format!("{}: [{}] {m}", config.path.display(), config.section.as_deref().unwrap_or("connector")));
        }
        Ok(other) => return fail(exit::FATAL, format!("open failed: {}", outcome_error("open", other))),
        Err(e) => return fail(exit::FATAL, format!("open failed: {e}")),
    };

    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(watch_signals(shutdown_tx));

    let limit = Duration::from_millis(config.host.processing.publish_timeout_ms);
    let result = match danube::connect(&config.host.danube_service_url, &config.host.retry, limit).await {
        Err(e) => Err(Stop::Fatal(format!("cannot reach Danube at {}: {e}", config.host.danube_service_url))),
        Ok(client) => match opened {
            Opened::Source(producers) => source::run(&worker, &client, &config, producers, shutdown).await,
            Opened::Sink(consumers) => sink::run(&worker, &client, &config, consumers, shutdown).await,
        },
    };

    let closed = tokio::time::timeout(
        Duration::from_millis(config.host.sandbox.call_timeout_ms),
        worker.call(new_trace_id(), crate::protocol::Call::Close),
    )
    .await;
    if let Ok(Ok(CallOutcome::Trapped(m))) = &closed {
        tracing::warn!(connector = %name, "close trapped: {m}");
    }
    worker.shutdown().await;
    match result {
        Ok(()) => {
            tracing::info!(connector = %name, "stopped cleanly");
            ExitCode::from(exit::OK)
        }
        Err(stop) => fail(stop.exit_code(), stop.to_string()),
    }
}

/// The first SIGTERM or SIGINT asks for a drain; a second one exits at once.
async fn watch_signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (send it again to exit at once)");
    let _ = shutdown.send(true);
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(130);
}

/// What `inspect` and `validate` print about a module.
pub fn describe_module(info: &ModuleInfo) -> String {
    format!(
        "world: {}\ncontract: danube:connect@{}\nconnector: {} {}\n{}\n\nconfiguration example:\n{}",
        info.world,
        info.wit_version,
        info.name,
        info.version,
        info.description,
        info.config_example.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_and_explain_mistakes() {
        let rules = parse_allow("10.0.0.0/8:5432").unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allows("10.20.30.40:5432".parse().unwrap()));
        let local = parse_allow("127.0.0.1:1883").unwrap();
        assert!(local[0].allows("127.0.0.1:1883".parse().unwrap()));
        assert!(parse_allow("mqtt.local").unwrap_err().contains("has no port"));
        assert!(parse_allow("10.0.0.0/40:1").unwrap_err().contains("prefix length"));
    }
}
