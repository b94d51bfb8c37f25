//! The bindings generated from `wit/`, in one place. The worker converts
//! between them and the host's own [`contract`](crate::contract) types at
//! its edge (`worker/guest.rs`); the imports are implemented in
//! [`capability`](crate::capability), one module per interface.

/// The interfaces every connector imports (the `imports` world), generated
/// once and shared by the worlds below.
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

/// The `ingress` world: its imports are [`imports`]'.
pub mod ingress {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ingress",
        with: { "danube:connect": super::imports::danube::connect },
    });
}

pub use imports::danube::connect::{log, metrics, state, types};
/// The `described` world: the optional `configuration` export.
pub mod described {
    wasmtime::component::bindgen!({ path: "../wit", world: "described" });
}

/// The exports, each looked up on its own, as `configuration` may be missing.
pub use described::exports::danube::connect::configuration;
pub use ingress::exports::danube::connect::ingress_connector;
pub use sink::exports::danube::connect::sink_connector;
pub use source::exports::danube::connect::source_connector;
