//! Directory mode: every `NAME.wasm` beside a `NAME.toml` in one directory is
//! a connector, and the directory is followed as it changes.
//!
//! * A new pair is checked as `danube-host validate` checks it, then started.
//! * A pair that lost a file (either one) drains and stops.
//! * A pair whose content changed is checked first; only then does the running
//!   connector drain (a sink finishes and acknowledges its batches, a source
//!   commits what the broker acknowledged) and the new one start, from that
//!   last commit. A replacement that fails the check is rejected with an error
//!   naming the file, and the running connector keeps running.
//! * A module that ends before its binary does (a copy in progress) waits for
//!   the next change, as does half a pair. Writing `NAME.wasm.tmp` and renaming
//!   it into place avoids both.
//!
//! Changes are noticed by watching the directory, once they settled for
//! [`SETTLE`], and on SIGHUP, which also watches the path anew (e.g. after a
//! symlink to the directory was re-pointed). Workers load a private copy of
//! the module that was checked, so a later bad copy in the directory never
//! reaches a worker that restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ConnectorConfig;
use crate::exit;
use crate::observability::Observability;
use crate::operations::Operations;
use crate::supervisor::{self, ApiSettings, Fleet, Invalid, LogSettings};

/// How long the directory must be quiet before it is scanned.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs every connector of `dir` until SIGTERM or SIGINT, then drains them
/// all and exits 0. One endpoint at `endpoint` serves them all.
pub async fn run(
    dir: PathBuf,
    endpoint: SocketAddr,
    log: LogSettings,
    api: ApiSettings,
) -> ExitCode {
    let fail = |code: u8, message: String| {
        tracing::error!("{message}");
        eprintln!("danube-host: {message}");
        ExitCode::from(code)
    };
    if let Err(e) = std::fs::read_dir(&dir) {
        return fail(
            exit::CONFIG,
            format!(
                "--modules-dir {}: cannot read it: {e}; give a directory of NAME.wasm + NAME.toml pairs",
                dir.display()
            ),
        );
    }
    let snapshots = match Snapshots::create() {
        Ok(snapshots) => snapshots,
        Err(e) => return fail(exit::INTERNAL, format!("{e:#}")),
    };
    // Before anything is announced: SIGHUP would otherwise end the process.
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => return fail(exit::INTERNAL, format!("cannot handle SIGHUP: {e}")),
    };
    let observability = Observability::new();
    let operations = Operations::default();
    let server = match supervisor::serve(&observability, &operations, endpoint, &api).await {
        Ok(server) => server,
        Err(failure) => return fail(failure.code, failure.message),
    };
    let mut shutdown = supervisor::shutdown_on_signals();
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    let mut watcher = watch(&dir, changed_tx.clone());
    tracing::info!(dir = %dir.display(), "directory mode: running every NAME.wasm with its NAME.toml");

    let mut directory = Directory {
        fleet: Fleet::new(observability, operations, log.clone()),
        dir,
        log,
        members: BTreeMap::new(),
        halves: BTreeSet::new(),
        snapshots,
    };
    directory.rescan().await;
    let mut rescan_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: watching the directory anew and rescanning it");
                watcher = watch(&directory.dir, changed_tx.clone());
                rescan_at = None;
                directory.rescan().await;
            }
            Some(()) = changed.recv() => rescan_at = Some(Instant::now() + SETTLE),
            _ = tokio::time::sleep_until(rescan_at.unwrap_or_else(Instant::now)), if rescan_at.is_some() => {
                rescan_at = None;
                directory.rescan().await;
            }
            (name, ended) = directory.fleet.next_ended() => match ended {
                Ok(()) => tracing::info!("{name}: the connector finished"),
                Err(failure) => tracing::error!(
                    "{name}: the connector failed for good ({failure}); the others keep running; change its files to start it again"
                ),
            },
        }
    }
    drop(watcher);
    tracing::info!("draining every connector");
    directory.fleet.stop_all().await;
    server.stop().await;
    tracing::info!("stopped cleanly");
    ExitCode::from(exit::OK)
}

/// Watches `dir` itself (not its subdirectories); every change only asks for
/// a rescan, since the scan decides what changed. Reads are no change (the
/// scan's own reads would otherwise trigger the next scan).
fn watch(dir: &Path, changed: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let watched = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if !event.is_ok_and(|e| e.kind.is_access()) {
            let _ = changed.send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watched {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch the directory; changes are picked up on SIGHUP only");
            None
        }
    }
}

/// SHA-256 of a pair's two files: a pair is replaced when this changes.
type Fingerprint = [u8; 32];

/// A `NAME.wasm` and `NAME.toml` as read by one scan.
struct Pair {
    module: PathBuf,
    config: PathBuf,
    module_bytes: Vec<u8>,
    config_bytes: Vec<u8>,
    fingerprint: Fingerprint,
}

/// What one scan found under a name.
enum Found {
    Pair(Pair),
    /// One file of the pair; the other one (this extension) is missing.
    Half {
        missing: &'static str,
    },
}

/// The pairs and halves of pairs in `dir`. Hidden files and other extensions
/// (e.g. `NAME.wasm.tmp` being written) are ignored.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<String, Found>> {
    let mut files: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(extension)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if stem.starts_with('.') || !path.is_file() {
            continue;
        }
        let (module, config) = files.entry(stem.to_string()).or_default();
        match extension {
            "wasm" => *module = true,
            "toml" => *config = true,
            _ => {}
        }
    }
    let mut found = BTreeMap::new();
    for (name, present) in files {
        let entry = match present {
            (true, true) => match read_pair(dir, &name) {
                Ok(pair) => Found::Pair(pair),
                // Gone between listing and reading: the next event tells more.
                Err(e) => {
                    tracing::debug!(error = %e, "{name}: cannot read the pair yet");
                    continue;
                }
            },
            (true, false) => Found::Half { missing: "toml" },
            (false, true) => Found::Half { missing: "wasm" },
            (false, false) => continue,
        };
        found.insert(name, entry);
    }
    Ok(found)
}

fn read_pair(dir: &Path, name: &str) -> std::io::Result<Pair> {
    let module = dir.join(format!("{name}.wasm"));
    let config = dir.join(format!("{name}.toml"));
    let module_bytes = std::fs::read(&module)?;
    let config_bytes = std::fs::read(&config)?;
    let fingerprint = Sha256::new()
        .chain_update((module_bytes.len() as u64).to_le_bytes())
        .chain_update(&module_bytes)
        .chain_update(&config_bytes)
        .finalize()
        .into();
    Ok(Pair {
        module,
        config,
        module_bytes,
        config_bytes,
        fingerprint,
    })
}

/// Whether `bytes` end before the WebAssembly binary they begin does, as a
/// copy in progress does. Other defects are left to validation to report.
fn incomplete(bytes: &[u8]) -> bool {
    use wasmparser::{Chunk, Parser, Payload};
    let mut parser = Parser::new(0);
    let mut parents = Vec::new();
    let mut offset = 0;
    loop {
        match parser.parse(&bytes[offset..], false) {
            // More data could continue it: it is complete only if it may end here.
            Ok(Chunk::NeedMoreData(_)) => return parser.parse(&bytes[offset..], true).is_err(),
            Ok(Chunk::Parsed { consumed, payload }) => {
                offset += consumed;
                match payload {
                    Payload::ModuleSection { parser: nested, .. }
                    | Payload::ComponentSection { parser: nested, .. } => {
                        parents.push(std::mem::replace(&mut parser, nested));
                    }
                    Payload::End(_) => match parents.pop() {
                        Some(parent) => parser = parent,
                        None => return false,
                    },
                    _ => {}
                }
            }
            Err(_) => return false,
        }
    }
}

/// Copies of the checked modules, which the workers load; removed at exit.
/// The directory is created fresh under a random name, readable by this user
/// alone: a directory another local user could predict, create first or
/// write to would let them swap the module a restarted worker loads.
struct Snapshots {
    dir: tempfile::TempDir,
}

impl Snapshots {
    fn create() -> anyhow::Result<Snapshots> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("danube-host-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create a directory for module copies in {}: {e}",
                    std::env::temp_dir().display()
                )
            })?;
        Ok(Snapshots { dir })
    }

    fn keep(&self, name: &str, pair: &Pair) -> std::io::Result<PathBuf> {
        let id: String = pair.fingerprint[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = self.dir.path().join(format!("{name}-{id}.wasm"));
        std::fs::write(&path, &pair.module_bytes)?;
        Ok(path)
    }
}

/// One name of the directory.
#[derive(Default)]
struct Member {
    /// The content last looked at (started, rejected or waited on): files
    /// that did not change are not looked at again.
    seen: Option<Fingerprint>,
    /// The connector started from this name, running or failed.
    started: Option<Started>,
}

struct Started {
    fingerprint: Fingerprint,
    connector_name: String,
    snapshot: PathBuf,
}

/// Why a pair is not started.
enum Refusal {
    /// The module is still being written: wait for the next change.
    Incomplete,
    /// It fails the check; the reason names the file.
    Rejected(String),
}

struct Directory {
    dir: PathBuf,
    log: LogSettings,
    fleet: Fleet,
    members: BTreeMap<String, Member>,
    /// Names with one file of two, already reported as waiting.
    halves: BTreeSet<String>,
    snapshots: Snapshots,
}

impl Directory {
    /// Brings what runs in line with what the directory holds.
    async fn rescan(&mut self) {
        let found = match scan(&self.dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the directory; what runs keeps running");
                return;
            }
        };
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|name| !matches!(found.get(*name), Some(Found::Pair(_))))
            .cloned()
            .collect();
        for name in gone {
            if let Some(Member {
                started: Some(started),
                ..
            }) = self.members.remove(&name)
            {
                tracing::info!("{name}: a file of the pair is gone; draining and stopping it");
                self.retire(&name, started).await;
            }
        }
        let mut halves = BTreeSet::new();
        for (name, found) in found {
            match found {
                Found::Half { missing } => {
                    if !self.halves.contains(&name) {
                        tracing::info!("{name}: waiting for {name}.{missing}");
                    }
                    halves.insert(name);
                }
                Found::Pair(pair) => self.consider(&name, pair).await,
            }
        }
        self.halves = halves;
    }

    /// Starts a new or changed pair, replacing what ran under its name, unless
    /// it is incomplete or fails the check.
    async fn consider(&mut self, name: &str, pair: Pair) {
        let member = self.members.entry(name.to_string()).or_default();
        if member.seen == Some(pair.fingerprint) {
            return;
        }
        member.seen = Some(pair.fingerprint);
        if let Some(started) = &member.started
            && started.fingerprint == pair.fingerprint
        {
            tracing::info!("{name}: back to the version that runs; nothing to do");
            return;
        }
        let replacing = member.started.is_some();
        let (config, snapshot) = match self.admit(name, &pair).await {
            Ok(admitted) => admitted,
            Err(Refusal::Incomplete) => {
                tracing::info!(module = %pair.module.display(), "{name}: the module ends early (still being copied?); waiting for the next change");
                return;
            }
            Err(Refusal::Rejected(why)) => {
                let outcome = if replacing {
                    "the running version keeps running"
                } else {
                    "it is not started"
                };
                tracing::error!("{name}: rejected: {why}; {outcome}");
                return;
            }
        };
        let member = self.members.entry(name.to_string()).or_default();
        if let Some(old) = member.started.take() {
            tracing::info!(
                "{name}: changed; draining the running version before starting the new one"
            );
            self.retire(name, old).await;
        }
        tracing::info!(connector = %config.host.connector_name, module = %pair.module.display(), config = %pair.config.display(), "{name}: starting");
        let started = Started {
            fingerprint: pair.fingerprint,
            connector_name: config.host.connector_name.clone(),
            snapshot: snapshot.clone(),
        };
        self.fleet.start(name, snapshot, config);
        self.members.entry(name.to_string()).or_default().started = Some(started);
    }

    /// Parses and checks a pair as `danube-host validate` does; returns its
    /// configuration and the copy of its module to run.
    async fn admit(&self, name: &str, pair: &Pair) -> Result<(ConnectorConfig, PathBuf), Refusal> {
        if incomplete(&pair.module_bytes) {
            return Err(Refusal::Incomplete);
        }
        let text = std::str::from_utf8(&pair.config_bytes)
            .map_err(|_| Refusal::Rejected(format!("{}: not UTF-8 text", pair.config.display())))?;
        let mut config = ConnectorConfig::parse(text, &pair.config, &|k| std::env::var(k).ok())
            .map_err(|e| Refusal::Rejected(e.to_string()))?;
        let connector_name = &config.host.connector_name;
        if let Some(other) = self.members.iter().find_map(|(other, member)| {
            let started = member.started.as_ref()?;
            (other != name && &started.connector_name == connector_name).then_some(other)
        }) {
            return Err(Refusal::Rejected(format!(
                "{}: connector_name {connector_name:?} is already used by {other}.toml; each connector needs its own (it names its state, subscriptions and metrics)",
                pair.config.display()
            )));
        }
        let snapshot = self.snapshots.keep(name, pair).map_err(|e| {
            Refusal::Rejected(format!(
                "{}: cannot keep a copy of it: {e}",
                pair.module.display()
            ))
        })?;
        match supervisor::validate(&snapshot, &mut config, &self.log).await {
            Ok(_) => Ok((config, snapshot)),
            Err(invalid) => {
                let _ = std::fs::remove_file(&snapshot);
                Err(Refusal::Rejected(match invalid {
                    Invalid::Module(e) => {
                        format!("{}: cannot load: {e:#}", pair.module.display())
                    }
                    Invalid::Config(message) => message,
                }))
            }
        }
    }

    /// Drains and stops what runs under `name`, and forgets it.
    async fn retire(&mut self, name: &str, started: Started) {
        self.fleet.stop(name).await;
        self.fleet.observability().forget(&started.connector_name);
        self.fleet.operations().forget(&started.connector_name);
        let _ = std::fs::remove_file(&started.snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::incomplete;

    #[test]
    fn a_module_cut_short_is_incomplete_and_a_broken_one_is_not() {
        let component = b"\0asm\x0d\0\x01\0";
        assert!(
            !incomplete(component),
            "a header-only component is complete"
        );
        assert!(incomplete(&component[..5]), "half a header");
        assert!(incomplete(b""), "an empty file");
        // A custom section announcing 16 bytes, of which 3 arrived.
        let mut cut = component.to_vec();
        cut.extend_from_slice(b"\0\x10\x03abc");
        assert!(incomplete(&cut));
        assert!(!incomplete(b"this is not WebAssembly\n"));
    }
}
