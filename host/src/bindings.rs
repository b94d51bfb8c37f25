//! The bindings generated from `wit/`, in one place. The worker converts
//! between them and the host's own [`contract`](crate::contract) types at
//! its edge (`worker/guest.rs`); the imports are implemented in
//! [`capability`](crate::capability), one module per interface.

/// The interfaces every connector imports (the `imports` world), generated
/// once and shared by both worlds below.
pub mod imports {
    wasmtime::component::bindgen!({ path: "../wit", world: "imports" });
}

/// The `source` world: its imports are [`imports`]'.
pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "source",
        with: { "danube:connect": super::imports::danube::connect },
    });
}

/// The `sink` world: its imports are [`imports`]'.
pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink",
        with: { "danube:connect": super::imports::danube::connect },
    });
}

pub use imports::danube::connect::{log, metrics, state, types};
/// The worlds' exports, each looked up on its own: `configuration` is
/// optional (modules built before it existed do not export it).
pub use sink::exports::danube::connect::sink_connector;
pub use source::exports::danube::connect::{configuration, source_connector};
