//! A small per-connector key-value store, persisted by the host across
//! restarts: for sources whose external system keeps no offsets (a sequence
//! number, a file position), not for bulk data.
//!
//! A value put during `commit` survives a crash after `commit` returns.
//!
//! Outside WebAssembly (native `cargo test` of a connector) the store is an
//! in-memory map per thread.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

use crate::ConnectorError;

/// The host refused a `put` (the value or the store grew past its limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}

impl std::error::Error for StateError {}

/// A refused `put` is fatal: the connector cannot keep its position.
impl From<StateError> for ConnectorError {
    fn from(e: StateError) -> Self {
        ConnectorError::fatal(e)
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static NATIVE: std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>> =
        Default::default();
}

/// The value last stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::source::danube::connect::state::get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        NATIVE.with(|m| m.borrow().get(key).cloned())
    }
}

/// Stores `value` under `key`.
pub fn put(key: &str, value: &[u8]) -> Result<(), StateError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::source::danube::connect::state::put(key, value).map_err(StateError)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        NATIVE.with(|m| m.borrow_mut().insert(key.to_string(), value.to_vec()));
        Ok(())
    }
}

/// Removes `key`.
pub fn delete(key: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::source::danube::connect::state::delete(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        NATIVE.with(|m| m.borrow_mut().remove(key));
    }
}

/// The value under `key` parsed as JSON. A stored value that does not parse
/// as `T` is a fatal error (the store holds something this connector did not
/// write).
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ConnectorError> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ConnectorError::fatal(format!(
                "state key `{key}` does not hold the expected value: {e}"
            ))
        }),
    }
}

/// Stores `value` as JSON under `key`.
pub fn put_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), ConnectorError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ConnectorError::fatal(format!("state key `{key}`: {e}")))?;
    Ok(put(key, &bytes)?)
}
