//! The host side of the contract's imports: `log`, `state` and `metrics`.

use super::guest::source::danube::connect::{log, metrics, state};
use super::state::GuestState;
use crate::protocol::{FromWorker, write_frame};

/// Largest value one `state.put` may store, and the whole store's limit: the
/// store is for offsets and small checkpoints, not data.
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_STORE_BYTES: usize = 1024 * 1024;

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let connector = self.connector.as_str();
        let trace_id = self.trace_id;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "guest", $level, connector, trace_id = %format_args!("{trace_id:016x}"), fields, "{message}")
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

impl state::Host for GuestState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.get(&key).cloned()
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
        let others: usize = self
            .kv
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if others + key.len() + value.len() > MAX_STORE_BYTES {
            return Err(format!(
                "the state store would exceed {MAX_STORE_BYTES} bytes"
            ));
        }
        self.report(&key, Some(value.clone()))?;
        self.kv.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.kv.remove(&key).is_some() {
            // A lost delete only leaves a stale key behind; the supervisor
            // notices a broken socket on its own.
            let _ = self.report(&key, None);
        }
    }
}

impl GuestState {
    fn report(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), String> {
        write_frame(
            &mut self.supervisor,
            &FromWorker::StatePut {
                key: key.to_string(),
                value,
            },
        )
        .map_err(|e| format!("cannot reach the supervisor to persist state: {e}"))
    }
}

impl metrics::Host for GuestState {
    fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) {
        let _ = write_frame(
            &mut self.supervisor,
            &FromWorker::Metric(crate::protocol::GuestMetric::Counter {
                name,
                value,
                labels,
            }),
        );
    }

    fn gauge_set(&mut self, name: String, value: f64, labels: Vec<(String, String)>) {
        let _ = write_frame(
            &mut self.supervisor,
            &FromWorker::Metric(crate::protocol::GuestMetric::Gauge {
                name,
                value,
                labels,
            }),
        );
    }
}

impl super::guest::source::danube::connect::types::Host for GuestState {}
