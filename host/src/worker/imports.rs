//! The host side of the contract's imports `state` and `metrics` (`log` is
//! in [`super::log`]).

use super::guest::source::danube::connect::{metrics, state};
use super::state::GuestState;
use crate::guest_text::{self, one_line, one_line_pairs};
use crate::ipc::{FromWorker, GuestMetric, ToWorker, read_frame, write_frame};

/// Largest value one `state.put` may store, and the whole store's limit: the
/// store is for offsets and small checkpoints, not data.
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_STORE_BYTES: usize = 1024 * 1024;
/// Each put rewrites and syncs the whole store: at most this many a second,
/// and this many bytes rewritten a second, so that a guest cannot keep the
/// disk busy. A put beyond them waits for the next second.
pub const STATE_WRITES_PER_SECOND: u32 = 1000;
pub const STATE_BYTES_PER_SECOND: usize = 16 * 1024 * 1024;

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
        let store_bytes = others + key.len() + value.len();
        if store_bytes > MAX_STORE_BYTES {
            return Err(format!(
                "the state store would exceed {MAX_STORE_BYTES} bytes"
            ));
        }
        self.state_writes.wait_for(store_bytes);
        self.persist(&key, Some(value.clone()))?;
        self.kv.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.kv.remove(&key).is_some() {
            // A delete that did not reach the disk leaves a stale key behind,
            // which the store's owner overwrites or ignores; the WIT gives
            // `delete` no way to fail.
            if let Err(e) = self.persist(&key, None) {
                tracing::warn!(key = %guest_text::one_line(key, guest_text::NAME), error = %e, "a state delete was not persisted");
            }
        }
    }
}

impl GuestState {
    /// Sends the change to the supervisor and waits until it is on disk, as
    /// the WIT promises: `put` returns only then, or fails. Calls that arrive
    /// meanwhile (the supervisor pipelines them) are queued for the call
    /// loop.
    fn persist(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), String> {
        let unreachable =
            |e: std::io::Error| format!("cannot reach the supervisor to persist state: {e}");
        write_frame(
            &mut self.supervisor,
            &FromWorker::StatePut {
                key: key.to_string(),
                value,
            },
        )
        .map_err(unreachable)?;
        loop {
            match read_frame::<ToWorker>(&mut self.supervisor).map_err(unreachable)? {
                Some(ToWorker::StateSaved(outcome)) => {
                    return outcome
                        .map_err(|e| format!("the host could not persist the state: {e}"));
                }
                Some(call) => self.queued.push_back(call),
                None => {
                    return Err(
                        "the supervisor closed the socket before the state was persisted".into(),
                    );
                }
            }
        }
    }
}

/// Names and labels are bounded before they reach the supervisor, which
/// refuses (and remembers refusing) names longer than it exports anyway.
impl metrics::Host for GuestState {
    fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) {
        self.send_metric(GuestMetric::Counter {
            name: one_line(name, guest_text::NAME),
            value,
            labels: one_line_pairs(labels),
        });
    }

    fn gauge_set(&mut self, name: String, value: f64, labels: Vec<(String, String)>) {
        self.send_metric(GuestMetric::Gauge {
            name: one_line(name, guest_text::NAME),
            value,
            labels: one_line_pairs(labels),
        });
    }
}

impl GuestState {
    fn send_metric(&mut self, metric: GuestMetric) {
        // A lost update is a lost sample; the supervisor notices a broken
        // socket on its own.
        let _ = write_frame(&mut self.supervisor, &FromWorker::Metric(metric));
    }
}

impl super::guest::source::danube::connect::types::Host for GuestState {}
