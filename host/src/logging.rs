//! Log output for the supervisor and its workers: JSON lines by default,
//! human-readable text on request, filtered by `LOG_LEVEL`, `RUST_LOG` or
//! `[processing] log_level`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to standard error. Safe to call
/// more than once (later calls are ignored).
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        // The connector span rides on every line as "span": {"connector": ..}.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The filter in force: `LOG_LEVEL`, then `RUST_LOG`, then the configured level.
pub fn filter_from_env(configured: &str) -> String {
    std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| configured.to_string())
}
