//! The connector host: a supervisor that owns the Danube side of each
//! connector, and worker processes that each run one sandboxed component.
//! `cli` is its command line (`main.rs` only calls it); `docs/ARCHITECTURE.md` shows how the
//! modules fit together.

pub mod bench_boundary;
pub mod bindings;
pub mod capability;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod connector_table;
pub mod contract;
pub mod directory;
pub mod exit;
pub mod guest_text;
pub mod ipc;
pub mod logging;
pub mod observability;
pub mod operations;
pub mod scaffold;
pub mod schema;
pub mod supervisor;
pub mod worker;
