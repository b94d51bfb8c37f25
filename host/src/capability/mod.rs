//! What a guest may reach and use beyond its own memory and time, one
//! module per capability.
//!
//! Granted by the operator's `[sandbox]` table, checked by the supervisor
//! and applied by the worker ([`SandboxLimits`]):
//! * [`files`]: `[sandbox] dirs`, the directories granted to the guest,
//!   never one that holds the host's own files.
//! * [`network`]: `[sandbox] allow`, the TCP destinations it may connect to.
//! * [`topics`]: `[sandbox] topics`, `subscriptions` and `max_topics`, what
//!   it may publish to and consume, checked on `open`'s answer.
//!
//! The worker enforces files and network twice: through WASI (`worker/sandbox.rs`) and
//! through Landlock and seccomp (`worker/hardening.rs`).
//!
//! Imported by the guest (the WIT `imports` world), each module holding its
//! `Host` implementation on a narrow context, its limits and, where the
//! supervisor takes part, its side of the exchange:
//! * [`log`]: the guest's log lines, bounded and paced.
//! * [`state`]: the persisted key-value store.
//! * [`metrics`]: the connector's own metrics.
//!
//! This file wires them: [`Imports`] is what they keep in the guest's store,
//! [`add_to_linker`] links each on its own context, [`ImportRequest`] and
//! [`ImportReply`] are what they exchange with the supervisor (through
//! [`SupervisorLink`]) and [`ImportHost`] is the supervisor's side. A new
//! import is its interface in `wit/connect.wit`, a module here, its lines in
//! this file, and its wrapper in the SDKs.

mod budget;
pub mod files;
pub mod log;
pub mod metrics;
pub mod network;
pub mod state;
#[cfg(test)]
mod tests;
pub mod topics;

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use wasmtime::component::{HasData, HasSelf, Linker};

use crate::bindings;
use crate::config::ConnectorConfig;
use crate::ipc::{FromWorker, ToWorker, decode, read_body, write_frame};
use crate::observability::ConnectorMetrics;
use crate::worker::SinkRecordView;
use network::NetRule;

/// The sandbox the guest runs in, resolved by the supervisor from `[sandbox]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxLimits {
    pub memory_bytes: u64,
    pub call_timeout_ms: u64,
    /// Host directories granted to the guest, visible at the same path.
    pub dirs: Vec<PathBuf>,
    /// TCP endpoints the guest may connect to, already resolved.
    pub allow: Vec<NetRule>,
    /// The names the guest may look up: `allow`'s host names, `lookup`.
    pub names: Vec<String>,
    /// Fuel (roughly, WebAssembly instructions) one call may burn; `None`
    /// leaves compute bounded by the call timeout alone.
    pub fuel: Option<u64>,
    /// Largest file the worker may write (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
}

/// Resolves `[sandbox]` into the limits a worker applies. `module` is the
/// file the worker loads and `cache_dir` its compiled-module cache: both are
/// kept out of every grant, with the configuration file and the state
/// directory.
pub fn worker_limits(
    config: &ConnectorConfig,
    module: &Path,
    cache_dir: Option<&Path>,
) -> anyhow::Result<SandboxLimits> {
    let sandbox = &config.host.sandbox;
    let protected = files::Protected::of_connector(config, module, cache_dir);
    Ok(SandboxLimits {
        memory_bytes: sandbox.memory_mb << 20,
        call_timeout_ms: sandbox.call_timeout_ms,
        dirs: files::grants(&sandbox.dirs, &protected)?,
        allow: network::rules(&sandbox.allow)?,
        names: network::names(&sandbox.allow, &sandbox.lookup),
        fuel: sandbox.fuel,
        max_file_bytes: sandbox.max_file_mb << 20,
    })
}

/// The limits of a worker started without a configuration (`inspect`, the
/// boundary benchmark): no files, no network, the default memory, and ten
/// seconds to describe itself.
pub fn default_limits() -> SandboxLimits {
    let sandbox = crate::config::SandboxConfig::default();
    SandboxLimits {
        memory_bytes: sandbox.memory_mb << 20,
        call_timeout_ms: 10_000,
        dirs: Vec::new(),
        allow: Vec::new(),
        names: Vec::new(),
        fuel: None,
        max_file_bytes: sandbox.max_file_mb << 20,
    }
}

/// What the imports keep in a guest's store, one field per import that
/// keeps anything, and the link to the supervisor that some of them use.
pub struct Imports {
    pub log: log::GuestLog,
    pub state: state::GuestStore,
    pub link: SupervisorLink,
}

/// A store whose data holds the [`Imports`]: how each import finds its
/// context (the projection wasmtime's `add_to_linker` takes is a plain `fn`).
pub trait HasImports: 'static {
    fn imports(&mut self) -> &mut Imports;
}

/// Links every import, each `Host` on its own narrow context.
pub fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::types::add_to_linker::<T, NoContext>(linker, |_| NoContext)?;
    bindings::log::add_to_linker::<T, HasSelf<log::GuestLog>>(linker, |t| &mut t.imports().log)?;
    bindings::state::add_to_linker::<T, state::HasStore>(linker, |t| {
        let imports = t.imports();
        state::StoreView {
            store: &mut imports.state,
            link: &mut imports.link,
        }
    })?;
    bindings::metrics::add_to_linker::<T, metrics::HasLink>(linker, |t| metrics::MetricsView {
        link: &mut t.imports().link,
    })?;
    Ok(())
}

/// `types` declares records only; its `Host` has nothing to hold.
pub struct NoContext;

impl HasData for NoContext {
    type Data<'a> = NoContext;
}

impl bindings::types::Host for NoContext {}

/// What an import asks of the supervisor (worker → supervisor).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ImportRequest {
    /// `state.put` or `delete`: answered by [`ImportReply::StateSaved`].
    StatePut { key: String, value: Option<Vec<u8>> },
    /// A connector-defined metric update; not answered.
    Metric(metrics::GuestMetric),
}

/// The supervisor's answer to a request that waits for one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ImportReply {
    /// The state change is on disk, or why not.
    StateSaved(Result<(), String>),
}

/// The worker's end of the socket, as the imports use it. Calls that arrive
/// while an import waits for its answer (the supervisor pipelines them) are
/// kept, in order, as the frames they came in, for the call loop (which
/// hands a sink batch to the guest as views into its frame).
pub struct SupervisorLink {
    socket: UnixStream,
    queued: VecDeque<Vec<u8>>,
}

impl SupervisorLink {
    pub fn new(socket: UnixStream) -> SupervisorLink {
        SupervisorLink {
            socket,
            queued: VecDeque::new(),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// The frame of a call that arrived while an import waited, to run next.
    pub fn next_queued(&mut self) -> Option<Vec<u8>> {
        self.queued.pop_front()
    }

    /// Sends a request that needs no answer. A lost one is a lost update;
    /// the supervisor notices a broken socket on its own.
    fn notify(&mut self, request: ImportRequest) {
        let _ = write_frame(&mut self.socket, &FromWorker::Import(request));
    }

    /// Sends a request and waits for its answer.
    fn request(&mut self, request: ImportRequest) -> Result<ImportReply, String> {
        let unreachable = |e: std::io::Error| format!("cannot reach the supervisor: {e}");
        write_frame(&mut self.socket, &FromWorker::Import(request)).map_err(unreachable)?;
        loop {
            let mut frame = Vec::new();
            if !read_body(&mut self.socket, &mut frame).map_err(unreachable)? {
                return Err("the supervisor closed the socket before answering".into());
            }
            match decode::<ToWorker<SinkRecordView<'_>>>(&frame).map_err(unreachable)? {
                ToWorker::ImportReply(reply) => return Ok(reply),
                _ => self.queued.push_back(frame),
            }
        }
    }
}

/// The supervisor's side of the imports: what it acts on for one worker.
pub struct ImportHost {
    pub state: state::StateStore,
    /// `None` for `inspect`, `validate` and the boundary benchmark.
    pub metrics: Option<ConnectorMetrics>,
}

impl ImportHost {
    /// Acts on a request, in the order the worker sent it, and returns the
    /// answer the worker waits for, if it waits.
    pub fn handle(&mut self, request: ImportRequest) -> Option<ImportReply> {
        match request {
            ImportRequest::StatePut { key, value } => {
                Some(state::save(&mut self.state, key, value))
            }
            ImportRequest::Metric(metric) => {
                if let Some(metrics) = &self.metrics {
                    metrics.guest_metric(metric);
                }
                None
            }
        }
    }
}
