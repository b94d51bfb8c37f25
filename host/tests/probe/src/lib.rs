//! `probe-connector`: a **test fixture** for `danube-host`'s own tests, not a
//! connector for real use.
//!
//! It is a sink whose `[probe]` table chooses how it misbehaves in `open`, so
//! that the host's handling of guest faults can be observed from outside:
//!
//! | key               | what `open` does                                              |
//! |-------------------|---------------------------------------------------------------|
//! | `panic_in_open`   | panics with [`PANIC_MESSAGE`]                                  |
//! | `report_env`      | fails with `config("env NAME = VALUE; N variables visible")`, VALUE being `<unset>` when the variable is not set |
//! | `loop_in_open`    | loops forever (the host's `[sandbox] call_timeout_ms` must stop it) |
//! | `alloc_mb`        | allocates and touches that many MiB (the `[sandbox] memory_mb` cap must stop it when it is smaller) |
//! | `config_error`    | fails with `config(<the text>)`                               |
//! | `fatal_error`     | fails with `fatal(<the text>)`                                |
//!
//! The checks run in the order of the table. With none set, `open` succeeds
//! and consumes `topic` (default `/default/probe`); every batch is accepted
//! and dropped.

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord,
};
use serde::Deserialize;

/// The panic message of `panic_in_open`.
pub const PANIC_MESSAGE: &str = "probe panics in open as asked";

const CONFIG_EXAMPLE: &str = r#"[probe]
topic = "/default/probe"
panic_in_open = false
report_env = "HOME"
loop_in_open = false
alloc_mb = 0
config_error = "a configuration error to return"
fatal_error = "a fatal error to return"
"#;

/// The `[probe]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_topic")]
    topic: String,
    #[serde(default)]
    panic_in_open: bool,
    #[serde(default)]
    report_env: Option<String>,
    #[serde(default)]
    loop_in_open: bool,
    #[serde(default)]
    alloc_mb: usize,
    #[serde(default)]
    config_error: Option<String>,
    #[serde(default)]
    fatal_error: Option<String>,
}

fn default_topic() -> String {
    "/default/probe".into()
}

pub struct Probe;

impl Sink for Probe {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Test fixture: misbehaves in open as its [probe] table says.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        if config.panic_in_open {
            panic!("{PANIC_MESSAGE}");
        }
        if let Some(name) = &config.report_env {
            let value = std::env::var(name).unwrap_or_else(|_| "<unset>".into());
            let count = std::env::vars_os().count();
            return Err(ConnectorError::config(format!(
                "env {name} = {value}; {count} variables visible"
            )));
        }
        if config.loop_in_open {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if config.alloc_mb > 0 {
            let mut block = vec![0u8; config.alloc_mb << 20];
            // Touch every page so that the memory is really used.
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(&block);
        }
        if let Some(message) = config.config_error {
            return Err(ConnectorError::config(message));
        }
        if let Some(message) = config.fatal_error {
            return Err(ConnectorError::fatal(message));
        }
        Ok((Probe, vec![ConsumerConfig::new(config.topic, "probe")]))
    }

    fn process_batch(&mut self, _records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        Ok(BatchOutcome::all_ok())
    }
}

danube_connect_sdk::export_sink!(Probe);
