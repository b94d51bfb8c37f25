//! Logging through the host, which tags each line with the connector's name
//! and the current batch's trace id.
//!
//! Use the macros ([`info!`](crate::info), [`warn!`](crate::warn), ...) for
//! formatted lines; they skip formatting when the host would drop the line.
//! [`log_with`] adds structured fields.
//!
//! Outside WebAssembly (native `cargo test` of a connector) lines go to
//! standard error.

/// Log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the connector handled.
    Warn,
    /// Something failed.
    Error,
}

#[cfg(target_arch = "wasm32")]
fn to_wit(level: Level) -> crate::bindings::source::danube::connect::log::Level {
    use crate::bindings::source::danube::connect::log::Level as L;
    match level {
        Level::Trace => L::Trace,
        Level::Debug => L::Debug,
        Level::Info => L::Info,
        Level::Warn => L::Warn,
        Level::Error => L::Error,
    }
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::source::danube::connect::log::enabled(to_wit(level))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = level;
        true
    }
}

/// Writes one line with structured key-value fields.
pub fn log_with(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::bindings::source::danube::connect::log::log(to_wit(level), message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut line = format!("[{level:?}] {message}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v}"));
        }
        eprintln!("{line}");
    }
}

/// Writes one line.
pub fn log(level: Level, message: &str) {
    log_with(level, message, &[]);
}

/// Writes a line at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes a line at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes a line at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a line at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes a line at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a formatted line at `level`: `log!(Level::Info, "read {} rows", n)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::log::enabled(level) {
            $crate::log::log(level, &::std::format!($($arg)+));
        }
    }};
}

/// Logs a formatted line at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs a formatted line at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs a formatted line at info level: `info!("connected to {}", url)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs a formatted line at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs a formatted line at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}
