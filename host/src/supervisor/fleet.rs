//! The connectors one host process runs, each supervised on a thread of its
//! own, all sharing one metrics and health endpoint.
//!
//! Running a single connector from the command line is the fleet of one;
//! directory mode adds, replaces and removes members while the others run.
//!
//! Each member runs on a single-threaded runtime on its own thread: its
//! pipeline, its lanes and its broker connection's tasks hand every record
//! to each other several times, and on a shared multi-threaded runtime each
//! hand-over could wake a parked thread to steal the task (a futex wake and
//! a context switch: measured 1.1-1.5 per published record and 50-53 µs of
//! supervisor CPU per record on the real broker, against 0.4 and 36-40 µs
//! on one thread).
//! A thread per connector keeps those hand-overs on one thread, still uses
//! every core when there are several connectors, and keeps a busy connector
//! from delaying another's timers. The endpoint and the signals stay on the
//! process's shared runtime.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use futures::Future;
use tokio::sync::{oneshot, watch};
use tokio::task::{Id, JoinSet};
use tracing::Instrument;

use super::{Failure, LogSettings, supervise};
use crate::config::ConnectorConfig;
use crate::observability::Observability;
use crate::operations::Operations;

/// How a member ended: `Ok` once drained on request (or finished), else why
/// it failed for good.
pub type Ended = Result<(), Failure>;

pub struct Fleet {
    observability: Observability,
    operations: Operations,
    log: LogSettings,
    /// The drain request of each running member, by key.
    stops: HashMap<String, watch::Sender<bool>>,
    tasks: JoinSet<Ended>,
    keys: HashMap<Id, String>,
    /// Members that ended while another one was being stopped, not yet
    /// reported by [`Fleet::next_ended`].
    ended: VecDeque<(String, Ended)>,
}

impl Fleet {
    pub fn new(observability: Observability, operations: Operations, log: LogSettings) -> Fleet {
        Fleet {
            observability,
            operations,
            log,
            stops: HashMap::new(),
            tasks: JoinSet::new(),
            keys: HashMap::new(),
            ended: VecDeque::new(),
        }
    }

    pub fn observability(&self) -> &Observability {
        &self.observability
    }

    pub fn operations(&self) -> &Operations {
        &self.operations
    }

    /// Starts supervising `config`'s connector as member `key`.
    pub fn start(&mut self, key: &str, module: PathBuf, config: ConnectorConfig) {
        let (stop_tx, stop) = watch::channel(false);
        let name = config.host.connector_name.clone();
        let metrics = self.observability.connector(&name);
        // Every line logged for this connector, by the host and its tasks, names it.
        let span = tracing::info_span!("connector", connector = %name);
        let control = self.operations.register(&module, &config);
        let controls = (control, self.operations.clone());
        let task =
            supervise(module, config, self.log.clone(), metrics, stop, controls).instrument(span);
        let id = self.tasks.spawn(on_own_thread(&name, task)).id();
        self.keys.insert(id, key.to_string());
        self.stops.insert(key.to_string(), stop_tx);
    }

    /// Asks member `key` to drain (a sink finishes and acknowledges its
    /// batches, a source commits what the broker acknowledged) and waits
    /// until it stopped. `None` when no such member runs.
    pub async fn stop(&mut self, key: &str) -> Option<Ended> {
        if let Some(at) = self.ended.iter().position(|(k, _)| k == key) {
            self.stops.remove(key);
            return self.ended.remove(at).map(|(_, ended)| ended);
        }
        let stop = self.stops.remove(key)?;
        let _ = stop.send(true);
        while let Some((ended_key, ended)) = self.join_next().await {
            if ended_key == key {
                return Some(ended);
            }
            self.ended.push_back((ended_key, ended));
        }
        None
    }

    /// Asks every member to drain, all at once, and waits for them all.
    pub async fn stop_all(&mut self) -> Vec<(String, Ended)> {
        for (_, stop) in self.stops.drain() {
            let _ = stop.send(true);
        }
        let mut all: Vec<_> = self.ended.drain(..).collect();
        while let Some(ended) = self.join_next().await {
            all.push(ended);
        }
        all
    }

    /// The next member that stopped by itself. Never resolves while none does.
    pub async fn next_ended(&mut self) -> (String, Ended) {
        let (key, ended) = match self.ended.pop_front() {
            Some(ended) => ended,
            None => match self.join_next().await {
                Some(ended) => ended,
                None => std::future::pending().await,
            },
        };
        self.stops.remove(&key);
        (key, ended)
    }

    async fn join_next(&mut self) -> Option<(String, Ended)> {
        let (id, ended) = match self.tasks.join_next_with_id().await? {
            Ok((id, ended)) => (id, ended),
            Err(e) => (
                e.id(),
                Err(Failure::new(
                    crate::exit::INTERNAL,
                    format!("the connector's supervisor task failed: {e}"),
                )),
            ),
        };
        let key = self.keys.remove(&id).unwrap_or_default();
        Some((key, ended))
    }
}

/// Runs `task` on a new thread with a single-threaded runtime of its own
/// (see the module's doc); resolves to its result.
fn on_own_thread(
    name: &str,
    task: impl Future<Output = Ended> + Send + 'static,
) -> impl Future<Output = Ended> + Send + 'static {
    let (done_tx, done) = oneshot::channel();
    let started = std::thread::Builder::new()
        // Linux shows 15 bytes of a thread's name.
        .name(format!("c:{name}").chars().take(15).collect())
        .spawn(move || {
            let ended = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(task),
                Err(e) => Err(Failure::new(
                    crate::exit::INTERNAL,
                    format!("cannot start the connector's runtime: {e}"),
                )),
            };
            let _ = done_tx.send(ended);
        });
    async move {
        if let Err(e) = started {
            return Err(Failure::new(
                crate::exit::INTERNAL,
                format!("cannot start the connector's thread: {e}"),
            ));
        }
        done.await.unwrap_or_else(|_| {
            Err(Failure::new(
                crate::exit::INTERNAL,
                "the connector's supervisor thread panicked",
            ))
        })
    }
}
