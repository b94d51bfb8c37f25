//! The messages supervisor and worker exchange.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::capability::{ImportReply, ImportRequest, SandboxLimits};
use crate::contract::{Call, CallOutcome, ModuleInfo, SinkRecord};

/// Bumped on any change to the messages below.
pub const PROTOCOL_VERSION: u32 = 4;

/// Supervisor → worker. `R` is a sink batch's record, as in [`Call`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker<R = SinkRecord> {
    /// First frame: what to load and how to confine it (boxed: it is sent
    /// once, calls all the time).
    Init(Box<WorkerInit>),
    /// A call into the guest; answered by [`FromWorker::Reply`] with the same id.
    Call {
        id: u64,
        trace_id: u64,
        call: Call<R>,
    },
    /// The answer to a [`FromWorker::Import`] request that waits for one;
    /// the guest's import call returns only once it arrives.
    ImportReply(ImportReply),
}

/// Everything a worker needs to load its module; sent once after the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    pub protocol_version: u32,
    pub connector: String,
    pub module: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub limits: SandboxLimits,
    /// The connector's persisted state store.
    pub state: BTreeMap<String, Vec<u8>>,
    /// Log filter directive for the worker's own logs and the guest's.
    pub log_filter: String,
    pub log_json: bool,
    /// Something the worker does once it is locked down, before the guest
    /// runs, so that tests can observe the lockdown from outside.
    pub self_test: Option<SelfTest>,
}

/// An action a locked-down worker takes on itself, to show that the lockdown
/// holds (set by the supervisor from `DANUBE_HOST_WORKER_SELF_TEST`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum SelfTest {
    /// Reads a file with the worker's own rights and logs the outcome.
    Read(PathBuf),
    /// Makes a system call: `NAME[,ARG...]`, each argument a number or
    /// `ppid` (the supervisor's pid), missing ones zero.
    Syscall(String),
}

impl std::str::FromStr for SelfTest {
    type Err = String;

    /// `read:PATH` or `syscall:NAME[,ARG...]`.
    fn from_str(s: &str) -> Result<SelfTest, String> {
        match s.split_once(':') {
            Some(("read", path)) => Ok(SelfTest::Read(path.into())),
            Some(("syscall", name)) => Ok(SelfTest::Syscall(name.into())),
            _ => Err(format!("{s:?} is neither read:PATH nor syscall:NAME")),
        }
    }
}

/// Worker → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The module is loaded and instantiated.
    Ready(ModuleInfo),
    /// The module could not be loaded; the worker exits after sending this.
    LoadFailed(String),
    Reply {
        id: u64,
        outcome: CallOutcome,
        /// The guest's linear memory after the call.
        memory_bytes: u64,
    },
    /// What a host import asks of the supervisor, in the order the guest
    /// made its calls (`capability::ImportHost` acts on it).
    Import(ImportRequest),
    /// The worker made a system call its seccomp filter denies and is
    /// stopping. Written from a signal handler, so its encoding must not
    /// depend on the value: the number is fixed-width little-endian bytes.
    SyscallDenied { number_le: [u8; 4] },
}
