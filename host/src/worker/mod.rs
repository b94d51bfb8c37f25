//! The worker process: one per connector, holding the wasmtime engine and
//! exactly one component instance.
//!
//! The supervisor starts it as `danube-host worker` with one end of a socket
//! pair as standard input. The worker reads [`ToWorker`] frames, runs each call
//! on the guest in order and answers with [`FromWorker`] frames. A trap poisons
//! the instance, so the worker reports it and exits; the supervisor decides
//! what comes next. The worker's own logs go to standard error, which it shares
//! with the supervisor.

mod batch;
mod engine;
mod guest;
mod hardening;
mod sandbox;
mod state;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::Context;
use wasmtime::StoreLimitsBuilder;
use wasmtime::component::ResourceTable;

use crate::capability::log::{GuestLog, LogBudget};
use crate::capability::state::GuestStore;
use crate::capability::{Imports, SandboxLimits, SupervisorLink};
use crate::contract::CallOutcome;
use crate::guest_text;
use crate::ipc::{
    FrameWriter, FromWorker, PROTOCOL_VERSION, ToWorker, WorkerInit, decode, read_body, read_frame,
    write_frame,
};
pub use batch::SinkRecordView;
pub use engine::default_cache_dir;
use guest::Guest;
pub use hardening::{describe_denied_syscall, ignore_host_signals};
use sandbox::GuestOutput;
use state::{GuestState, MemoryLimiter};

/// Exit codes of the worker, read by the supervisor.
pub mod exit {
    /// The supervisor closed the socket.
    pub const DONE: u8 = 0;
    /// The module could not be loaded (reported in a `LoadFailed` frame).
    pub const LOAD_FAILED: u8 = 10;
    /// The guest trapped (reported in a `Trapped` reply).
    pub const TRAPPED: u8 = 11;
    /// The socket broke or carried something unreadable.
    pub const PROTOCOL: u8 = 12;
    /// The seccomp filter denied a system call (reported in a
    /// `SyscallDenied` frame).
    pub const SYSCALL_DENIED: u8 = 13;
}

/// Runs the worker until the supervisor hangs up.
pub fn run() -> ExitCode {
    // Started through /proc/self/exe, it would be called `exe` in top, ps
    // and perf.
    // SAFETY: names the calling (main) thread; the string is NUL-terminated
    // and shorter than the kernel's 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"danube-worker".as_ptr()) };
    hardening::harden_process();
    let socket = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("danube-host worker: standard input is not the supervisor's socket: {e}");
            return ExitCode::from(exit::PROTOCOL);
        }
    };
    match serve(socket) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "worker failed");
            ExitCode::from(exit::PROTOCOL)
        }
    }
}

fn serve(socket: UnixStream) -> anyhow::Result<u8> {
    let mut reader = socket.try_clone()?;
    let mut writer = socket.try_clone()?;
    let init = match read_frame::<ToWorker>(&mut reader)? {
        Some(ToWorker::Init(init)) => init,
        Some(_) => anyhow::bail!("the supervisor's first frame was not Init"),
        None => return Ok(exit::DONE),
    };
    crate::logging::init(&init.log_filter, init.log_json);
    let _span = tracing::info_span!("connector", connector = %init.connector).entered();
    if init.protocol_version != PROTOCOL_VERSION {
        let message = format!(
            "supervisor speaks protocol {} but this worker speaks {PROTOCOL_VERSION}; the danube-host binary was replaced while running, restart it",
            init.protocol_version
        );
        write_frame(&mut writer, &FromWorker::LoadFailed(message))?;
        return Ok(exit::LOAD_FAILED);
    }
    let limits = &init.limits;
    let mut guest = match load(&init, socket) {
        Ok(loaded) => loaded,
        Err(e) => {
            write_frame(&mut writer, &FromWorker::LoadFailed(format!("{e:#}")))?;
            return Ok(exit::LOAD_FAILED);
        }
    };
    let info = match guest.describe() {
        Ok(info) => info,
        Err(e) => {
            let why = trap_text(&e, limits, &mut guest);
            write_frame(
                &mut writer,
                &FromWorker::LoadFailed(format!("in describe: {why}")),
            )?;
            return Ok(exit::LOAD_FAILED);
        }
    };
    write_frame(&mut writer, &FromWorker::Ready(info))?;

    let mut replies = FrameWriter::new(writer);
    // The frame being served: a sink batch's records are views into it.
    let mut body = Vec::new();
    loop {
        // Calls that arrived while a state put waited for its answer first.
        let queued = guest.state_mut().imports.link.next_queued();
        let frame = match &queued {
            Some(queued) => queued,
            None if read_body(&mut reader, &mut body)? => &body,
            None => break,
        };
        let message: ToWorker<SinkRecordView<'_>> = decode(frame)?;
        let ToWorker::Call { id, trace_id, call } = message else {
            anyhow::bail!("unexpected {message:?} frame between calls");
        };
        guest.state_mut().imports.log.trace_id = trace_id;
        let kind = call.kind();
        let result = guest.call(call);
        let memory_bytes = guest.state_mut().limits.memory_bytes as u64;
        let (outcome, trapped) = match result {
            Ok(outcome) => (outcome, false),
            Err(e) => {
                let why = trap_text(&e, limits, &mut guest);
                tracing::error!(call = kind, error = %why, "guest trapped; the instance is discarded");
                (CallOutcome::Trapped(format!("in {kind}: {why}")), true)
            }
        };
        let reply = FromWorker::Reply {
            id,
            outcome,
            memory_bytes,
        };
        replies.send(&reply)?;
        if trapped {
            return Ok(exit::TRAPPED);
        }
    }
    Ok(exit::DONE)
}

/// Why the guest trapped, for the supervisor: it quotes the guest's own
/// panic message, which is guest text like any other.
fn trap_text(e: &wasmtime::Error, limits: &SandboxLimits, guest: &mut Guest) -> String {
    let why = guest::describe_trap(e, limits, &guest.state_mut().stderr.tail());
    guest_text::one_line(why, guest_text::MESSAGE)
}

/// Loads the module, locks the worker down, then instantiates the module:
/// the guest's first instruction runs confined.
fn load(init: &WorkerInit, socket: UnixStream) -> anyhow::Result<Guest> {
    let engine = engine::new_engine(init.limits.fuel.is_some())?;
    let component = engine::load_component(&engine, &init.module, init.cache_dir.as_deref())?;
    let world = guest::detect_world(&engine, &component)?;
    let log_budget = LogBudget::default();
    let stdout = GuestOutput::new(&init.connector, "stdout", log_budget.clone());
    let stderr = GuestOutput::new(&init.connector, "stderr", log_budget.clone());
    let state = GuestState {
        wasi: sandbox::wasi_context(&init.limits, stdout, stderr.clone())?,
        table: ResourceTable::new(),
        limits: MemoryLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(init.limits.memory_bytes).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            memory_bytes: 0,
        },
        call_ticks: init
            .limits
            .call_timeout_ms
            .div_ceil(engine::EPOCH_TICK.as_millis() as u64)
            .max(1),
        allowed_names: init.limits.names.clone(),
        fuel: init.limits.fuel,
        imports: Imports {
            log: GuestLog {
                connector: init.connector.clone(),
                trace_id: 0,
                budget: log_budget,
            },
            state: GuestStore::new(init.state.clone()),
            link: SupervisorLink::new(socket),
        },
        stderr,
    };
    hardening::lock_down(&init.limits, state.imports.link.socket().as_raw_fd())
        .context("cannot lock the worker down")?;
    engine::start_epoch_ticker(&engine)?;
    if let Some(test) = &init.self_test {
        hardening::self_test(test);
    }
    Guest::instantiate(&engine, &component, world, state).context("instantiating the module")
}
