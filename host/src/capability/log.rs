//! The guest's log: the `log` import and the lines it writes to stdout and
//! stderr (`worker/sandbox.rs`), which go to the host's log tagged with the
//! connector.
//!
//! Both are untrusted and share one budget: each line is bounded
//! ([`guest_text::LOG_MESSAGE`]) and escaped, and at most [`LINES_PER_SECOND`]
//! lines and [`BYTES_PER_SECOND`] bytes a second are written. What goes over
//! is dropped and counted, and the count is logged once the next second
//! begins, so a guest that logs in a loop cannot fill the disk, the log
//! pipeline or the worker's memory.

use std::sync::{Arc, Mutex};

use super::budget::Budget;
use crate::bindings::log;
use crate::guest_text::{self, one_line};

/// Lines a guest may log per second, across the `log` import, stdout and
/// stderr.
pub const LINES_PER_SECOND: u32 = 1000;
/// Bytes a guest may log per second.
pub const BYTES_PER_SECOND: usize = 1024 * 1024;

/// The budget one guest's lines draw from, shared by its log import and its
/// output streams.
#[derive(Clone)]
pub struct LogBudget {
    inner: Arc<Mutex<Budget>>,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget {
            inner: Arc::new(Mutex::new(Budget::new(LINES_PER_SECOND, BYTES_PER_SECOND))),
        }
    }
}

impl LogBudget {
    /// Whether a line of `len` bytes may be written now. Reports what the
    /// last second dropped when a new one begins.
    fn admit(&self, connector: &str, len: usize) -> bool {
        let (admitted, refused) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(len);
        if let Some(refused) = refused {
            tracing::warn!(
                connector,
                dropped_lines = refused.calls,
                dropped_bytes = refused.bytes,
                "the connector logged more than {LINES_PER_SECOND} lines or {BYTES_PER_SECOND} bytes in a second; the excess was dropped"
            );
        }
        admitted
    }

    /// Writes one line of the guest's stdout or stderr, if the budget allows.
    pub fn output_line(&self, connector: &str, stream: &'static str, line: &[u8]) {
        let line = one_line(
            String::from_utf8_lossy(line).into_owned(),
            guest_text::LOG_MESSAGE,
        );
        if self.admit(connector, line.len()) {
            tracing::info!(target: "guest", connector, stream, "{line}");
        }
    }
}

/// What `log` works on.
pub struct GuestLog {
    /// The connector's name, on every line.
    pub connector: String,
    /// Trace id of the call in progress, carried into the guest's lines.
    pub trace_id: u64,
    /// Shared with the guest's stdout and stderr.
    pub budget: LogBudget,
}

impl log::Host for GuestLog {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let message = one_line(message, guest_text::LOG_MESSAGE);
        let fields = guest_text::one_line_pairs(fields)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let connector = self.connector.as_str();
        if !self.budget.admit(connector, message.len() + fields.len()) {
            return;
        }
        let trace_id = self.trace_id;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "guest", $level, connector, trace_id = %format_args!("{trace_id:016x}"), fields = %fields, "{message}")
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
    }

    fn enabled(&mut self, level: log::Level) -> bool {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        level <= tracing::level_filters::LevelFilter::current()
    }
}
