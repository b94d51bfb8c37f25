//! Any bytes on the worker socket, read as frames either way: the decoder
//! returns messages, the end, or an error, and never panics.
#![no_main]

use danube_host::ipc::{FromWorker, ToWorker, read_frame};
use libfuzzer_sys::fuzz_target;

/// Reads frames until the end of the input or the first error.
fn drain<T: serde::de::DeserializeOwned>(mut input: &[u8]) {
    while let Ok(Some(_)) = read_frame::<T>(&mut input) {}
}

fuzz_target!(|data: &[u8]| {
    drain::<ToWorker>(data);
    drain::<FromWorker>(data);
});
