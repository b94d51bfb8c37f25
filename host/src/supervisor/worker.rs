//! The supervisor's handle on one worker process.
//!
//! Calls are pipelined: each gets an id, is written to the socket at once and
//! resolved when its reply arrives, so the supervisor can keep several batches
//! in flight and hide the round trip. Blocking socket I/O runs on two threads
//! of the handle's own; the rest of the supervisor stays async.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use tokio::sync::{mpsc, oneshot, watch};

use crate::capability::ImportHost;
use crate::capability::state::StateStore;
use crate::contract::{Call, CallOutcome, ModuleInfo};
use crate::ipc::{
    FrameWriter, FromWorker, ToWorker, WorkerInit, decode, read_body, read_frame, write_frame,
};
use crate::observability::ConnectorMetrics;
use crate::worker::describe_denied_syscall;

/// Calls waiting for their reply; `None` once the worker's socket closed, so
/// that a call made after the worker died fails at once instead of waiting.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<CallOutcome>>>>>;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerGone {
    #[error("the worker process exited ({0})")]
    Exited(String),
}

impl WorkerGone {
    /// The worker's socket is closed: it exited, or was killed.
    fn socket_closed() -> WorkerGone {
        WorkerGone::Exited("its socket is closed".into())
    }
}

pub struct Worker {
    child: tokio::process::Child,
    outbox: mpsc::UnboundedSender<ToWorker>,
    pending: Pending,
    next_id: AtomicU64,
    info: ModuleInfo,
    /// How long a call may go unanswered before the worker counts as hung:
    /// the guest's own time limit plus a grace for the worker itself.
    watchdog: std::time::Duration,
    /// Where call durations and guest errors are counted (none for
    /// `inspect` and `validate`).
    metrics: Option<ConnectorMetrics>,
    /// Turns true when the worker's socket closes.
    gone: watch::Receiver<bool>,
}

impl Worker {
    /// Starts a worker for `init.module` and waits until the module is loaded.
    /// A module that cannot be loaded is an error carrying the worker's reason.
    pub async fn spawn(
        init: WorkerInit,
        state: StateStore,
        metrics: Option<ConnectorMetrics>,
    ) -> anyhow::Result<Worker> {
        // The worker is this very binary, run through /proc/self/exe: that
        // stays valid when the file on disk is replaced or deleted (an
        // upgrade in place), so a restarted worker is always the
        // supervisor's own version. `exe` names it in `ps` and in errors.
        let exe = std::env::current_exe().context("cannot find the danube-host binary")?;
        let watchdog = std::time::Duration::from_millis(init.limits.call_timeout_ms)
            + std::time::Duration::from_secs(5);
        let (ours, theirs) = UnixStream::pair().context("cannot create the worker socket")?;
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command
            .arg0(&exe)
            .arg("worker")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .env_clear()
            .kill_on_drop(true)
            // A process group of its own, so that what is sent to the host's
            // group (a terminal's Ctrl-C, `timeout`, `tini -g`) reaches the
            // supervisor alone, which drains through the worker and then
            // closes its socket.
            .process_group(0);
        // The signals meant for the host are ignored from before exec, so the
        // worker never has a moment in which one would kill it: a service
        // manager signals every process of the host, whatever its group.
        // SAFETY: the function only calls signal(2), which is
        // async-signal-safe, as the child of a fork must be.
        unsafe { command.pre_exec(crate::worker::ignore_host_signals) };
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the worker process {}", exe.display()))?;

        let mut reader = ours.try_clone()?;
        let mut writer = ours;
        let init: ToWorker = ToWorker::Init(Box::new(init));
        write_frame(&mut writer, &init)?;
        let info =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(ModuleInfo, UnixStream)> {
                match read_frame::<FromWorker>(&mut reader)? {
                    Some(FromWorker::Ready(info)) => Ok((info, reader)),
                    Some(FromWorker::LoadFailed(why)) => bail!("{why}"),
                    Some(FromWorker::SyscallDenied { number_le }) => {
                        bail!("{}", describe_denied_syscall(number_le))
                    }
                    Some(other) => bail!("unexpected first frame from the worker: {other:?}"),
                    None => bail!("the worker process exited while loading the module"),
                }
            })
            .await??;
        let (info, reader) = info;

        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<ToWorker>();
        std::thread::Builder::new()
            .name("worker-writer".into())
            .spawn(move || {
                let mut frames = FrameWriter::new(writer);
                while let Some(message) = outgoing.blocking_recv() {
                    if frames.send(&message).is_err() {
                        break;
                    }
                }
                // The reader thread holds the socket open too: half-close it so
                // the worker sees the end of its input and exits.
                let _ = frames.get_ref().shutdown(std::net::Shutdown::Write);
            })?;
        let replies = pending.clone();
        // Weak: the worker's socket is half-closed once every sender is gone,
        // which is how the worker learns to stop; the reader must not keep
        // it open.
        let answers = outbox.downgrade();
        let (gone_tx, gone) = watch::channel(false);
        std::thread::Builder::new()
            .name("worker-reader".into())
            .spawn({
                let imports = ImportHost {
                    state,
                    metrics: metrics.clone(),
                };
                // Its log lines name the connector too.
                let span = tracing::Span::current();
                move || {
                    span.in_scope(|| read_replies(reader, replies, imports, answers));
                    gone_tx.send_replace(true);
                }
            })?;

        Ok(Worker {
            child,
            outbox,
            pending,
            next_id: AtomicU64::new(1),
            info,
            watchdog,
            metrics,
            gone,
        })
    }

    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// The worker process's id while it runs (for the boundary benchmark's
    /// CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn send_call(&self, trace_id: u64, call: Call) -> Result<CallOutcome, WorkerGone> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kind = call.kind();
        let (tx, rx) = oneshot::channel();
        match self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(pending) => pending.insert(id, tx),
            None => return Err(WorkerGone::socket_closed()),
        };
        if self
            .outbox
            .send(ToWorker::Call { id, trace_id, call })
            .is_err()
        {
            return Err(WorkerGone::socket_closed());
        }
        match tokio::time::timeout(self.watchdog, rx).await {
            Ok(reply) => reply.map_err(|_| WorkerGone::Exited("it closed its socket".into())),
            Err(_) => {
                if let Some(pid) = self.child.id() {
                    // SAFETY: kill(2) on our own child, which has not been
                    // reaped (the handle still owns it).
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                Err(WorkerGone::Exited(format!(
                    "it did not answer a {kind} call within {} ms and was killed",
                    self.watchdog.as_millis()
                )))
            }
        }
    }
}

/// A connector's guest as the pipelines see it: calls with their outcomes,
/// and the moment it is gone. [`Worker`] is the guest in a worker process;
/// the pipelines' unit tests script one in memory.
pub trait Guest: Sync {
    /// Sends a call and waits for its outcome.
    fn call(
        &self,
        trace_id: u64,
        call: Call,
    ) -> impl Future<Output = Result<CallOutcome, WorkerGone>> + Send;

    /// Resolves once the guest is gone, whether a call noticed or not.
    fn exited(&self) -> impl Future<Output = WorkerGone> + Send;

    /// Ends the guest (a worker: closes its socket and waits for the
    /// process to exit).
    fn stop(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;
}

impl Guest for Worker {
    /// Also counts the call's duration and any error it returns.
    async fn call(&self, trace_id: u64, call: Call) -> Result<CallOutcome, WorkerGone> {
        let started = std::time::Instant::now();
        let kind = call.kind();
        let result = self.send_call(trace_id, call).await;
        if let Some(metrics) = &self.metrics {
            metrics.observe_call(kind, started.elapsed());
            match &result {
                Ok(CallOutcome::Error(e)) => metrics.error(e.class()),
                Ok(CallOutcome::Processed(failures)) => {
                    failures.iter().for_each(|f| metrics.error(f.error.class()))
                }
                Ok(CallOutcome::Trapped(_)) | Err(_) => metrics.error("trap"),
                Ok(_) => {}
            }
        }
        result
    }

    /// Resolves once the worker's socket has closed (the process exited or
    /// was killed): an idle connector, with no call to fail, notices at once
    /// rather than at its next call.
    async fn exited(&self) -> WorkerGone {
        let _ = self.gone.clone().wait_for(|gone| *gone).await;
        WorkerGone::socket_closed()
    }

    async fn stop(mut self) {
        drop(self.outbox);
        let _ = self.child.wait().await;
    }
}

/// Resolves replies and acts on the imports' requests, in the order the
/// worker sent them: a state change made during a call is on disk before
/// that call's reply is handed out.
fn read_replies(
    mut reader: UnixStream,
    pending: Pending,
    mut imports: ImportHost,
    answers: mpsc::WeakUnboundedSender<ToWorker>,
) {
    // Kept across frames: a source's polled batches are the largest.
    let mut body = Vec::new();
    loop {
        let frame = match read_body(&mut reader, &mut body) {
            Ok(true) => decode::<FromWorker>(&body).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        match frame {
            Ok(Some(FromWorker::Reply {
                id,
                outcome,
                memory_bytes,
            })) => {
                if let Some(metrics) = &imports.metrics {
                    metrics.set_guest_memory(memory_bytes);
                }
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                    .and_then(|p| p.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            Ok(Some(FromWorker::Import(request))) => {
                // A worker being stopped waits for nothing: its socket closes.
                if let Some(reply) = imports.handle(request)
                    && let Some(outbox) = answers.upgrade()
                {
                    let _ = outbox.send(ToWorker::ImportReply(reply));
                }
            }
            Ok(Some(FromWorker::SyscallDenied { number_le })) => {
                // The worker is exiting: the call it was running (and those
                // queued behind it) end as if the guest had trapped.
                let why = describe_denied_syscall(number_le);
                tracing::error!("{why}");
                let waiters = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
                for (_, waiter) in waiters.into_iter().flatten() {
                    let _ = waiter.send(CallOutcome::Trapped(why.clone()));
                }
            }
            Ok(Some(other)) => {
                tracing::error!(frame = ?other, "unexpected frame from the worker");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "the worker socket failed");
                break;
            }
        }
    }
    // Dropping the senders wakes every waiting call with `WorkerGone`.
    pending.lock().unwrap_or_else(|p| p.into_inner()).take();
}
