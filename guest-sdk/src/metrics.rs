//! Connector-defined metrics, exported by the host beside its own with the
//! connector's label.
//!
//! Outside WebAssembly (native `cargo test` of a connector) these do nothing.

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Adds `value` to the counter `name` (created on first use).
pub fn counter_add(name: &str, value: u64, labels: &[(&str, &str)]) {
    let labels = owned(labels);
    #[cfg(target_arch = "wasm32")]
    crate::bindings::source::danube::connect::metrics::counter_add(name, value, &labels);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value, labels);
}

/// Sets the gauge `name` to `value`.
pub fn gauge_set(name: &str, value: f64, labels: &[(&str, &str)]) {
    let labels = owned(labels);
    #[cfg(target_arch = "wasm32")]
    crate::bindings::source::danube::connect::metrics::gauge_set(name, value, &labels);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value, labels);
}
