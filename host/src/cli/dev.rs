//! `danube-host dev`: one connector run as `run` runs it, started again
//! whenever its module or configuration changes, and rebuilt first when a
//! watched source file changes and a build command is given. The state
//! store stays where the configuration puts it, so the connector resumes
//! from its last commit after each restart, as after a deployment.
//!
//! A change that does not validate (or a build that fails) is reported and
//! the running connector is left as it is; a connector that stops waits for
//! the next change instead of ending the command. The records it produces
//! or consumes are printed as they flow, through its tap
//! ([`crate::observability::tap`]), at most `--records` lines a second.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::{DevArgs, load, load_config, log_settings, runtime};
use crate::config::ConnectorConfig;
use crate::exit;
use crate::observability::Observability;
use crate::observability::tap::TappedRecord;
use crate::operations::Operations;
use crate::supervisor::{self, Fleet, LogSettings, shutdown_on_signals};

/// Changes closer together than this make one restart (an editor's save,
/// a build writing its output).
const SETTLE: Duration = Duration::from_millis(300);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// The module or the configuration: start again.
    Deployed,
    /// A watched source file: build, then start again.
    Source,
}

pub fn dev(args: DevArgs) -> ExitCode {
    let (module, config) = match load(&args.run) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let log = log_settings(&config.host.processing.log_level, args.run.log_format);
    runtime().block_on(dev_loop(args, module, config, log))
}

async fn dev_loop(
    args: DevArgs,
    module: PathBuf,
    config: ConnectorConfig,
    log: LogSettings,
) -> ExitCode {
    let config_path = config.path.clone();
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let _watchers = match watch(&module, &config_path, &args.watch, changes_tx) {
        Ok(watchers) => watchers,
        Err(message) => {
            eprintln!("danube-host: {message}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let observability = Observability::new();
    let operations = Operations::default();
    let addr = config.host.metrics_addr();
    let server =
        match supervisor::serve(&observability, &operations, addr, &Default::default()).await {
            Ok(server) => server,
            Err(failure) => {
                eprintln!("danube-host: {failure}");
                return ExitCode::from(failure.code);
            }
        };
    let mut shutdown = shutdown_on_signals();
    let mut fleet = Fleet::new(observability.clone(), operations, log.clone());
    let mut name = config.host.connector_name.clone();
    fleet.start(&name, module.clone(), config);
    let mut records = observability.tap(&name).listen();
    let mut shown = Shown::new(args.records);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    say(&format!(
        "running {name}; watching {}{}",
        watched_list(&module, &config_path, &args.watch),
        match &args.build {
            Some(build) => format!("; building with `{build}`"),
            None => String::new(),
        }
    ));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            record = records.recv(), if args.records > 0 => match record {
                Ok(record) => shown.offer(&record),
                Err(broadcast::error::RecvError::Lagged(lost)) => shown.skipped += lost,
                // The connector was forgotten with its tap: listen to the next.
                Err(broadcast::error::RecvError::Closed) => records = observability.tap(&name).listen(),
            },
            _ = second.tick() => shown.flush(),
            (_, ended) = fleet.next_ended() => match ended {
                Ok(()) => say(&format!("{name} stopped; waiting for a change")),
                Err(failure) => say(&format!("{name} failed: {failure}; waiting for a change")),
            },
            Some(first) = changes.recv() => {
                // Sources are watched only with a build (`--watch` requires it).
                let change = settle(first, &mut changes).await;
                if let (Change::Source, Some(build)) = (change, &args.build) {
                    if !build_with(build).await {
                        continue;
                    }
                    // What the build wrote is part of this change.
                    settle(Change::Deployed, &mut changes).await;
                }
                match checked(&module, &config_path, &args.run.allow, &log).await {
                    Ok(config) => {
                        let _ = fleet.stop(&name).await;
                        name = config.host.connector_name.clone();
                        fleet.start(&name, module.clone(), config);
                        records = observability.tap(&name).listen();
                        say(&format!("restarted {name}; it resumes from its last commit"));
                    }
                    Err(message) => say(&format!("{message}; {name} keeps running as it was")),
                }
            },
        }
    }
    let ended = fleet.stop(&name).await;
    server.stop().await;
    match ended {
        Some(Err(failure)) => {
            eprintln!("danube-host: connector {name}: {failure}");
            ExitCode::from(failure.code)
        }
        _ => ExitCode::from(exit::OK),
    }
}

/// The records printed, at most `per_second` lines a second; the rest are
/// counted and the count printed once a second.
struct Shown {
    per_second: u32,
    window: Instant,
    lines: u32,
    skipped: u64,
}

impl Shown {
    fn new(per_second: u32) -> Shown {
        Shown {
            per_second,
            window: Instant::now(),
            lines: 0,
            skipped: 0,
        }
    }

    fn offer(&mut self, record: &TappedRecord) {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.flush();
        }
        match self.lines < self.per_second {
            true => {
                self.lines += 1;
                println!("  {}", record.line());
            }
            false => self.skipped += 1,
        }
    }

    fn flush(&mut self) {
        if self.skipped > 0 {
            println!("  ... {} more records", self.skipped);
        }
        self.window = Instant::now();
        self.lines = 0;
        self.skipped = 0;
    }
}

fn say(message: &str) {
    println!("danube-host dev: {message}");
}

/// The module and configuration, read and checked again as a start checks
/// them; the error is one line.
async fn checked(
    module: &Path,
    config_path: &Path,
    allow: &[String],
    log: &LogSettings,
) -> Result<ConnectorConfig, String> {
    let mut config = load_config(config_path, allow).map_err(|e| e.to_string())?;
    supervisor::validate(module, &mut config, log)
        .await
        .map_err(|invalid| invalid.describe(module))?;
    Ok(config)
}

/// Runs the build command in a shell, its output going to the terminal;
/// whether it succeeded.
async fn build_with(build: &str) -> bool {
    say(&format!("building: {build}"));
    match tokio::process::Command::new("sh")
        .args(["-c", build])
        .status()
        .await
    {
        Ok(status) if status.success() => true,
        Ok(status) => {
            say(&format!("the build failed ({status}); nothing restarted"));
            false
        }
        Err(e) => {
            say(&format!("cannot run the build: {e}; nothing restarted"));
            false
        }
    }
}

/// Waits until no change came for [`SETTLE`]; a source change among them
/// wins (it needs a build).
async fn settle(first: Change, changes: &mut mpsc::UnboundedReceiver<Change>) -> Change {
    let mut change = first;
    while let Ok(Some(next)) = tokio::time::timeout(SETTLE, changes.recv()).await {
        change = change.max(next);
    }
    change
}

/// Watches the module's and the configuration's directories for those two
/// files, and each source path (recursively) for anything but reads.
fn watch(
    module: &Path,
    config: &Path,
    sources: &[PathBuf],
    changes: mpsc::UnboundedSender<Change>,
) -> Result<Vec<RecommendedWatcher>, String> {
    let deployed: Vec<PathBuf> = [module, config]
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
        .collect();
    let mut watchers = Vec::new();
    let files = deployed.clone();
    let sender = changes.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| files.contains(p))
        {
            let _ = sender.send(Change::Deployed);
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    for file in &deployed {
        let dir = file.parent().unwrap_or(Path::new("."));
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    watchers.push(watcher);
    if !sources.is_empty() {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = changes.send(Change::Source);
                }
            })
            .map_err(|e| format!("cannot watch files: {e}"))?;
        for source in sources {
            watcher
                .watch(source, RecursiveMode::Recursive)
                .map_err(|e| format!("cannot watch --watch {}: {e}", source.display()))?;
        }
        watchers.push(watcher);
    }
    Ok(watchers)
}

fn watched_list(module: &Path, config: &Path, sources: &[PathBuf]) -> String {
    [module, config]
        .into_iter()
        .chain(sources.iter().map(PathBuf::as_path))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
