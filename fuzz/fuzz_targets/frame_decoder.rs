//! Any bytes on the worker socket, read as frames either way: the decoder
//! returns messages, the end, or an error, and never panics. The worker
//! reads a sink batch as views borrowed from the frame, so that decoding is
//! fuzzed too.
#![no_main]

use danube_host::ipc::{FromWorker, ToWorker, decode, read_body, read_frame};
use danube_host::worker::SinkRecordView;
use libfuzzer_sys::fuzz_target;

/// Reads frames until the end of the input or the first error.
fn drain<T: serde::de::DeserializeOwned>(mut input: &[u8]) {
    while let Ok(Some(_)) = read_frame::<T>(&mut input) {}
}

/// Reads frames as the worker does, until the end or the first error.
fn drain_as_worker(mut input: &[u8]) {
    let mut body = Vec::new();
    while let Ok(true) = read_body(&mut input, &mut body) {
        if decode::<ToWorker<SinkRecordView<'_>>>(&body).is_err() {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drain::<ToWorker>(data);
    drain_as_worker(data);
    drain::<FromWorker>(data);
});
