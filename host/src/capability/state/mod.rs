//! The `state` import: a small key-value store per connector, kept by the
//! worker for reads and persisted by the supervisor ([`store`]) before a
//! `put` returns, as the WIT promises.

mod store;

use std::collections::BTreeMap;

use wasmtime::component::HasData;

use super::budget::Budget;
use super::{ImportReply, ImportRequest, SupervisorLink};
use crate::bindings::state::Host;
use crate::guest_text;
pub use store::StateStore;

/// Largest value one `state.put` may store, and the whole store's limit: the
/// store is for offsets and small checkpoints, not data.
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_STORE_BYTES: usize = 1024 * 1024;
/// Each put rewrites and syncs the whole store: at most this many a second,
/// and this many bytes rewritten a second, so that a guest cannot keep the
/// disk busy. A put beyond them waits for the next second.
const WRITES_PER_SECOND: u32 = 1000;
const BYTES_PER_SECOND: usize = 16 * 1024 * 1024;

/// The worker's copy of the store, which answers `get`.
pub struct GuestStore {
    entries: BTreeMap<String, Vec<u8>>,
    /// How much more the guest may rewrite its store this second.
    writes: Budget,
}

impl GuestStore {
    /// The store as the supervisor loaded it.
    pub fn new(entries: BTreeMap<String, Vec<u8>>) -> GuestStore {
        GuestStore {
            entries,
            writes: Budget::new(WRITES_PER_SECOND, BYTES_PER_SECOND),
        }
    }
}

/// What `state` works on: the worker's copy and the link over which changes
/// reach the supervisor.
pub struct StoreView<'a> {
    pub store: &'a mut GuestStore,
    pub link: &'a mut SupervisorLink,
}

pub struct HasStore;

impl HasData for HasStore {
    type Data<'a> = StoreView<'a>;
}

impl Host for StoreView<'_> {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.store.entries.get(&key).cloned()
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
        let others: usize = self
            .store
            .entries
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
        self.store.writes.wait_for(store_bytes);
        self.persist(&key, Some(value.clone()))?;
        self.store.entries.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.store.entries.remove(&key).is_some() {
            // A delete that did not reach the disk leaves a stale key behind,
            // which the store's owner overwrites or ignores; the WIT gives
            // `delete` no way to fail.
            if let Err(e) = self.persist(&key, None) {
                tracing::warn!(key = %guest_text::one_line(key, guest_text::NAME), error = %e, "a state delete was not persisted");
            }
        }
    }
}

impl StoreView<'_> {
    /// Sends the change to the supervisor and waits until it is on disk:
    /// `put` returns only then, or fails.
    fn persist(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), String> {
        let request = ImportRequest::StatePut {
            key: key.to_string(),
            value,
        };
        match self.link.request(request) {
            Ok(ImportReply::StateSaved(outcome)) => {
                outcome.map_err(|e| format!("the host could not persist the state: {e}"))
            }
            Err(e) => Err(format!("the state was not persisted: {e}")),
        }
    }
}

/// The supervisor's side of a put: the change on disk, or why not.
pub(super) fn save(store: &mut StateStore, key: String, value: Option<Vec<u8>>) -> ImportReply {
    ImportReply::StateSaved(store.apply(key, value).map_err(|e| {
        let why = format!("{e:#}");
        tracing::error!(error = %why, "cannot persist the connector's state");
        why
    }))
}
