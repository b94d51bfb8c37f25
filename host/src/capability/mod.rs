//! What a guest may reach beyond its own memory and time, one module per
//! capability: how the operator's `[sandbox]` table becomes the limits a
//! worker applies, and what each refuses.
//!
//! * [`files`]: `[sandbox] dirs`, the directories granted to the guest,
//!   never one that holds the host's own files.
//! * [`network`]: `[sandbox] allow`, the TCP destinations it may connect to.
//! * [`topics`]: `[sandbox] topics`, `subscriptions` and `max_topics`, what
//!   it may publish to and consume, checked on `open`'s answer.
//!
//! The worker enforces files and network twice: through WASI (`worker/sandbox.rs`) and
//! through Landlock and seccomp (`worker/hardening.rs`).

pub mod files;
pub mod network;
pub mod topics;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConnectorConfig;
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
