//! Exit codes of `danube-host`, the same for every command (`--help` lists
//! them).

/// Drained and stopped on a signal, or finished.
pub const OK: u8 = 0;
/// Something unexpected inside the host.
pub const INTERNAL: u8 = 1;
/// Bad command line or configuration (host or connector).
pub const CONFIG: u8 = 2;
/// The module cannot be loaded: not a component, another world or version,
/// corrupt, missing imports.
pub const MODULE: u8 = 3;
/// The connector failed for good: a fatal error, a trap, retries spent.
pub const FATAL: u8 = 4;
