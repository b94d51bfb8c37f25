//! The supervisor: the parent process that owns the Danube clients, the
//! pipelines and the lifecycle of each connector it runs, and the worker
//! processes that run their guests.

pub(crate) mod danube;
mod dead_letter;
mod delivery_watch;
mod fleet;
mod ingress;
mod publisher;
mod restart;
pub(crate) mod retry;
mod signals;
mod sink;
mod source;
#[cfg(test)]
mod test_doubles;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;

use crate::capability;
pub use crate::capability::state::StateStore;
use crate::config::ConnectorConfig;
use crate::connector_table::ConnectorTable;
use crate::contract::{CallOutcome, ConnectorError, ModuleInfo, World};
use crate::exit;
use crate::ipc::{PROTOCOL_VERSION, SelfTest, WorkerInit};
use crate::observability::{ConnectorMetrics, Observability, ServerHandle, Status};
use crate::operations::{Control, Loaded, Operations};
pub use fleet::Fleet;
use retry::RetryPolicy;
pub use signals::shutdown_on_signals;
pub use worker::{Guest, Worker};

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
    metrics: Option<ConnectorMetrics>,
) -> anyhow::Result<Worker> {
    let module =
        std::fs::canonicalize(module).map_err(|e| anyhow::anyhow!("cannot open it: {e}"))?;
    let cache_dir = cache_dir(config);
    let limits = match config {
        Some(c) => capability::worker_limits(c, &module, cache_dir.as_deref())?,
        None => capability::default_limits(),
    };
    let init = WorkerInit {
        protocol_version: PROTOCOL_VERSION,
        connector: config
            .map(|c| c.host.connector_name.clone())
            .unwrap_or_else(|| "inspect".into()),
        module,
        cache_dir,
        limits,
        state: state.entries().clone(),
        log_filter: log.filter.clone(),
        log_json: log.json,
        self_test: self_test()?,
    };
    Worker::spawn(init, state, metrics).await
}

/// The compiled-module cache a worker uses: `[sandbox] cache_dir`, else the
/// user's cache directory.
fn cache_dir(config: Option<&ConnectorConfig>) -> Option<PathBuf> {
    config
        .and_then(|c| c.host.sandbox.cache_dir.clone())
        .or_else(crate::worker::default_cache_dir)
}

/// `[sandbox]` checked on its own, before a worker starts, so that a grant or
/// an allow entry that cannot be given is reported as the configuration
/// error it is, naming the file.
fn check_sandbox(module: &Path, config: &ConnectorConfig) -> Result<(), String> {
    let cache = cache_dir(Some(config));
    capability::worker_limits(config, module, cache.as_deref())
        .map(drop)
        .map_err(|e| format!("{}: {e:#}", config.path.display()))
}

/// The worker self-test asked for in `DANUBE_HOST_WORKER_SELF_TEST`
/// (`read:PATH` or `syscall:NAME`): a way for the host's tests to watch the
/// worker's lockdown hold, undocumented for users.
fn self_test() -> anyhow::Result<Option<SelfTest>> {
    std::env::var(ENV_WORKER_SELF_TEST)
        .ok()
        .map(|v| {
            v.parse()
                .map_err(|e| anyhow::anyhow!("{ENV_WORKER_SELF_TEST}: {e}"))
        })
        .transpose()
}

const ENV_WORKER_SELF_TEST: &str = "DANUBE_HOST_WORKER_SELF_TEST";

/// Why a connector stopped for good: the exit code a host running only it
/// ends with, and a one-line reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Runs one connector until it is stopped by a signal or fails for good: the
/// fleet of one, serving its endpoint where its configuration says.
pub async fn run(
    module: PathBuf,
    config: ConnectorConfig,
    log: LogSettings,
    api: ApiSettings,
) -> ExitCode {
    let name = config.host.connector_name.clone();
    let fail = |failure: Failure| {
        eprintln!("danube-host: connector {name}: {failure}");
        ExitCode::from(failure.code)
    };
    let observability = Observability::new();
    let operations = Operations::default();
    let server = match serve(
        &observability,
        &operations,
        config.host.metrics_addr(),
        &api,
    )
    .await
    {
        Ok(server) => server,
        Err(failure) => {
            tracing::error!("{failure}");
            return fail(failure);
        }
    };
    let mut shutdown = shutdown_on_signals();
    let mut fleet = Fleet::new(observability, operations, log);
    fleet.start(&name, module, config);
    let ended = tokio::select! {
        (_, ended) = fleet.next_ended() => ended,
        _ = shutdown.changed() => fleet.stop(&name).await.unwrap_or(Ok(())),
    };
    server.stop().await;
    match ended {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => fail(failure),
    }
}

/// `--api` and its token, as the command line gave them.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    pub enabled: bool,
    pub token: Option<String>,
}

/// Serves `/metrics`, `/health` and `/ready` on `addr` for every connector of
/// `observability`, and the management API over `operations` when `api`
/// asks for it: off loopback only with a token.
pub async fn serve(
    observability: &Observability,
    operations: &Operations,
    addr: std::net::SocketAddr,
    api: &ApiSettings,
) -> Result<ServerHandle, Failure> {
    if api.enabled && api.token.is_none() && !addr.ip().is_loopback() {
        return Err(Failure::new(
            exit::CONFIG,
            format!(
                "the management API would listen on {addr}, beyond this machine, without a \
                 token: give one with --api-token-file FILE, or bind the endpoint to 127.0.0.1"
            ),
        ));
    }
    let router = api.enabled.then(|| {
        crate::operations::api::router(operations.clone(), observability.clone(), api.token.clone())
    });
    let server = observability
        .serve(addr, router)
        .await
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e:#}")))?;
    match api.enabled {
        true => {
            tracing::info!(addr = %server.local_addr(), "serving /metrics, /health, /ready and the management API (/connectors, /openapi.json)")
        }
        false => {
            tracing::info!(addr = %server.local_addr(), "serving /metrics, /health and /ready")
        }
    }
    Ok(server)
}

/// What is wrong with a module and configuration, as `danube-host validate`
/// reports it.
#[derive(Debug)]
pub enum Invalid {
    /// The module cannot be loaded (the reason does not name the file).
    Module(anyhow::Error),
    /// The configuration does not fit the module (one line naming the file).
    Config(String),
}

impl Invalid {
    /// One line for a person: what is wrong, naming `module` when it is the
    /// module that cannot be loaded.
    pub fn describe(&self, module: &Path) -> String {
        match self {
            Invalid::Module(e) => format!("cannot load {}: {e:#}", module.display()),
            Invalid::Config(message) => message.clone(),
        }
    }
}

/// Loads `module` in a throwaway worker (no state, no broker) and checks
/// what every start checks before it reaches the broker; `config` comes
/// back with the environment's overrides applied, as a start would use it.
pub async fn validate(
    module: &Path,
    config: &mut ConnectorConfig,
    log: &LogSettings,
) -> Result<ModuleInfo, Invalid> {
    check_files(module, config).map_err(Invalid::Config)?;
    let worker = start_worker(module, Some(config), StateStore::in_memory(), log, None)
        .await
        .map_err(Invalid::Module)?;
    let info = worker.info().clone();
    worker.stop().await;
    check_connector(config, &info)?;
    Ok(info)
}

/// What `validate` and every start check before loading the module: the
/// schema files can be read, the sandbox's grants are sound.
fn check_files(module: &Path, config: &ConnectorConfig) -> Result<(), String> {
    for entry in &config.host.schemas {
        crate::schema::read_schema_file(config, entry)
            .map_err(|e| format!("{}: [[schemas]] {e}", config.path.display()))?;
    }
    check_sandbox(module, config)
}

/// What `validate` and every start check once the module has described
/// itself: its configuration schema is usable, and the connector's table,
/// with the environment's overrides applied to `config`, fits it. Errors
/// are one line naming the file, the key and the connector.
fn check_connector(config: &mut ConnectorConfig, info: &ModuleInfo) -> Result<(), Invalid> {
    if info.world == World::Ingress {
        ingress::check(config)
            .map_err(|e| Invalid::Config(format!("{}: {e}", config.path.display())))?;
    } else if let Some(table) = config.host.ingress_table() {
        return Err(Invalid::Config(format!(
            "{}: [{table}] configures the HTTP listener of an ingress connector, and {} is a {} connector: remove [{table}]",
            config.path.display(),
            info.name,
            info.world
        )));
    }
    let table = ConnectorTable::of(info).map_err(|e| Invalid::Module(anyhow::anyhow!(e)))?;
    config.apply_connector_env(&table, &|k| std::env::var(k).ok());
    table
        .check(config.section.as_deref(), &config.connector)
        .map_err(|e| Invalid::Config(format!("{}: {e} ({})", config.path.display(), info.name)))
}

/// Supervises one connector until `shutdown` turns true (then drains) or it
/// fails for good; a failure also marks it unhealthy.
///
/// A worker that dies (trap, crash, hang) is replaced with capped exponential
/// backoff; the Danube side (subscriptions, producers, batches the dead worker
/// held) carries over to the new one.
///
/// A restart asked through the management API drains the connector the same
/// way and starts it again; a pause reaches its pipelines.
async fn supervise(
    module: PathBuf,
    config: ConnectorConfig,
    log: LogSettings,
    metrics: ConnectorMetrics,
    mut shutdown: watch::Receiver<bool>,
    (control, operations): (Control, Operations),
) -> Result<(), Failure> {
    let mut pause = control.pause();
    let shown = metrics.clone();
    let showing_pause = tokio::spawn(async move {
        loop {
            shown.set_paused(pause.is_paused());
            pause.changed().await;
        }
    });
    let ended = loop {
        // Turns true on shutdown or on a restart asked for.
        let (drain_tx, drain) = watch::channel(*shutdown.borrow());
        let mut restarting = false;
        let run = supervise_workers(
            module.clone(),
            config.clone(),
            log.clone(),
            &metrics,
            drain,
            (&control, &operations),
        );
        tokio::pin!(run);
        let ended = loop {
            tokio::select! {
                ended = &mut run => break ended,
                changed = shutdown.changed(), if !*drain_tx.borrow() => {
                    // A dropped sender stops the connector too.
                    if changed.is_err() || *shutdown.borrow() {
                        drain_tx.send_replace(true);
                    }
                }
                _ = control.restart_asked(), if !restarting => {
                    restarting = true;
                    tracing::info!("restarting: draining, then starting again");
                    metrics.set_health(Status::Healthy, "restarting");
                    drain_tx.send_replace(true);
                }
            }
        };
        if !restarting || *shutdown.borrow() || ended.is_err() {
            break ended;
        }
        if let Err(e) = control.apply_reset() {
            break Err(Failure::new(
                exit::FATAL,
                format!("cannot replace the state store: {e:#}"),
            ));
        }
    };
    showing_pause.abort();
    metrics.set_ready(false);
    match &ended {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(failure) => {
            metrics.set_health(Status::Unhealthy, failure.message.clone());
            tracing::error!("{failure}");
        }
    }
    ended
}

async fn supervise_workers(
    module: PathBuf,
    mut config: ConnectorConfig,
    log: LogSettings,
    metrics: &ConnectorMetrics,
    shutdown: watch::Receiver<bool>,
    (control, operations): (&Control, &Operations),
) -> Result<(), Failure> {
    let spawn = |config: &ConnectorConfig| {
        let config = config.clone();
        let (module, log, metrics) = (module.clone(), log.clone(), Some(metrics.clone()));
        async move {
            let state = StateStore::open(&config.state_file())?;
            start_worker(&module, Some(&config), state, &log, metrics)
                .await
                .map_err(|e| anyhow::anyhow!("cannot load {}: {e:#}", module.display()))
        }
    };

    check_files(&module, &config).map_err(|m| Failure::new(exit::CONFIG, m))?;
    let first = spawn(&config)
        .await
        .map_err(|e| Failure::new(exit::MODULE, format!("{e:#}")))?;
    let info = first.info().clone();
    tracing::info!(module = %module.display(), world = %info.world, guest = %info.name, guest_version = %info.version, "module loaded");
    operations.loaded(
        &config.host.connector_name,
        Loaded {
            world: info.world.to_string(),
            guest: info.name.clone(),
            version: info.version.clone(),
        },
    );
    if let Err(invalid) = check_connector(&mut config, &info) {
        first.stop().await;
        return Err(match invalid {
            Invalid::Module(e) => Failure::new(exit::MODULE, format!("{e:#}")),
            Invalid::Config(message) => Failure::new(exit::CONFIG, message),
        });
    }
    let config = config;

    let limit = Duration::from_millis(config.host.processing.publish_timeout_ms);
    let policy = RetryPolicy {
        config: config.host.retry.clone(),
        metrics: metrics.clone(),
    };
    let client = match danube::connect(&config.host.danube_service_url, &policy, limit).await {
        Ok(client) => client,
        Err(e) => {
            first.stop().await;
            return Err(Failure::new(
                exit::FATAL,
                format!(
                    "cannot reach Danube at {}: {e}",
                    config.host.danube_service_url
                ),
            ));
        }
    };
    let spawn = || async {
        spawn(&config)
            .await
            .map_err(|e| Stop::Fatal(format!("{e:#}")))
    };
    let pause = control.pause();
    let result =
        restart::run_workers(&client, &config, &policy, first, spawn, &shutdown, pause).await;
    result.map_err(|stop| Failure::new(stop.exit_code(), stop.to_string()))
}
