//! `probe-connector`: a **test fixture** for `danube-host`'s own tests, not a
//! connector for real use.
//!
//! It is a sink whose `[probe]` table chooses how it misbehaves, in `open` or
//! later in `process-batch`, so that the host's handling of guest faults can
//! be observed from outside.
//!
//! In `open`, checked in this order:
//!
//! | key               | what `open` does                                              |
//! |-------------------|---------------------------------------------------------------|
//! | `panic_in_open`   | panics with [`PANIC_MESSAGE`]                                  |
//! | `report_env`      | fails with `config("env NAME = VALUE; N variables visible")`, VALUE being `<unset>` when the variable is not set |
//! | `connect_to`      | tries a TCP connection to `ADDRESS:PORT` and fails with `config("connect ADDRESS:PORT: OUTCOME")`, OUTCOME being `ok` or the error |
//! | `read_path`       | tries to read that file and fails with `config("read PATH: OUTCOME")`, OUTCOME being `ok (N bytes)` or the error |
//! | `loop_in_open`    | loops forever (the host's `[sandbox] call_timeout_ms` must stop it) |
//! | `alloc_mb`        | allocates and touches that many MiB (the `[sandbox] memory_mb` cap must stop it when it is smaller) |
//! | `metric_names`    | reports that many counters, each named by a distinct string of `metric_name_mb` MiB (default 1), then goes on |
//! | `log_flood`       | logs that many lines at once, waits 1.2 s and logs `log flood done`, then goes on |
//! | `health_detail_mb`| makes `health` fail with a detail of that many MiB (`x` repeated) |
//! | `state_puts`      | puts that many values into its state store as fast as it can and fails with `config("state puts: N ok, M refused in T ms: FIRST ERROR")` |
//! | `config_error`    | fails with `config(<the text>)`                               |
//! | `fatal_error`     | fails with `fatal(<the text>)`                                |
//!
//! With none of those set, `open` succeeds and consumes `topic` (default
//! `/default/probe`) on the shared subscription `subscription` (default
//! `probe`). Then, per batch:
//!
//! | key                | what `process-batch` does                                    |
//! |--------------------|--------------------------------------------------------------|
//! | `loop_in_batch`    | loops forever on every batch (the call timeout or `[sandbox] fuel` must stop it) |
//! | `fail_retryably`   | fails that many calls (a number, or `"forever"`) with a retryable error before writing anything, as a sink whose external system is down would |
//! | `leak_mb_per_batch`| allocates, touches and keeps that many MiB per batch before writing it, so memory grows until `[sandbox] memory_mb` stops it |
//! | `trap_in_batch_on` | writes the batch's records in order, and panics with [`BATCH_PANIC_MESSAGE`] on the first record whose JSON payload has this field set to `true` |
//! | `write_to`         | appends each accepted record's payload as one line to this file (in a directory granted with `[sandbox] dirs`); without it, records are accepted and dropped |
//! | `state_per_batch`  | puts the batch's count into its state store before writing it, and fails the batch as fatal when the put fails |
//!
//! And `unhealthy = "why"` makes `health` fail with that message.

use std::io::Write;

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord,
};
use serde::Deserialize;

/// The panic message of `panic_in_open`.
pub const PANIC_MESSAGE: &str = "probe panics in open as asked";

/// The panic message of `trap_in_batch_on`.
pub const BATCH_PANIC_MESSAGE: &str = "probe panics in process-batch on a poisoned record";

const CONFIG_EXAMPLE: &str = r#"[probe]
topic = "/default/probe"
subscription = "probe"
panic_in_open = false
report_env = "HOME"
connect_to = "127.0.0.1:1883"
read_path = "/etc/hostname"
loop_in_open = false
alloc_mb = 0
metric_names = 0
metric_name_mb = 1
log_flood = 0
health_detail_mb = 0
state_puts = 0
config_error = "a configuration error to return"
fatal_error = "a fatal error to return"
loop_in_batch = false
fail_retryably = 3
leak_mb_per_batch = 0
trap_in_batch_on = "poison"
write_to = "/granted/dir/probe.jsonl"
state_per_batch = false
unhealthy = "the reason health() fails"
"#;

/// The `[probe]` table.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_topic")]
    topic: String,
    #[serde(default = "default_subscription")]
    subscription: String,
    #[serde(default)]
    panic_in_open: bool,
    #[serde(default)]
    report_env: Option<String>,
    #[serde(default)]
    connect_to: Option<String>,
    #[serde(default)]
    read_path: Option<String>,
    #[serde(default)]
    loop_in_open: bool,
    #[serde(default)]
    alloc_mb: usize,
    #[serde(default)]
    metric_names: usize,
    #[serde(default = "one")]
    metric_name_mb: usize,
    #[serde(default)]
    log_flood: usize,
    #[serde(default)]
    health_detail_mb: usize,
    #[serde(default)]
    state_puts: usize,
    #[serde(default)]
    config_error: Option<String>,
    #[serde(default)]
    fatal_error: Option<String>,
    #[serde(default)]
    loop_in_batch: bool,
    #[serde(default)]
    fail_retryably: Option<Failures>,
    #[serde(default)]
    leak_mb_per_batch: usize,
    #[serde(default)]
    trap_in_batch_on: Option<String>,
    #[serde(default)]
    write_to: Option<String>,
    #[serde(default)]
    state_per_batch: bool,
    #[serde(default)]
    unhealthy: Option<String>,
}

/// How many `process-batch` calls fail retryably: a count, or `"forever"`.
#[derive(Deserialize, Clone, Copy, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Failures {
    Times(u64),
    Always(Forever),
}

#[derive(Deserialize, Clone, Copy, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Forever {
    Forever,
}

impl Failures {
    fn covers(self, call: u64) -> bool {
        match self {
            Failures::Times(n) => call < n,
            Failures::Always(Forever::Forever) => true,
        }
    }
}

fn default_topic() -> String {
    "/default/probe".into()
}

fn one() -> usize {
    1
}

fn default_subscription() -> String {
    "probe".into()
}

pub struct Probe {
    unhealthy: Option<String>,
    loop_in_batch: bool,
    fail_retryably: Option<Failures>,
    leak_mb_per_batch: usize,
    /// Memory kept by `leak_mb_per_batch`.
    leaked: Vec<Vec<u8>>,
    /// `process-batch` calls so far.
    calls: u64,
    trap_in_batch_on: Option<String>,
    write_to: Option<std::fs::File>,
    state_per_batch: bool,
}

/// Tries a TCP connection, with a bound so that a dropped packet never hangs
/// `open`; says how it went.
fn try_connect(target: &str) -> String {
    use std::net::ToSocketAddrs;
    let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return "no address".into(),
        Err(e) => return format!("cannot resolve: {e}"),
    };
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

fn try_read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("ok ({} bytes)", bytes.len()),
        Err(e) => e.to_string(),
    }
}

/// Allocates `mb` MiB and touches every page, so that the memory is really
/// used.
fn allocate(mb: usize) -> Vec<u8> {
    let mut block = vec![0u8; mb << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    block
}

/// Whether the record's JSON payload has `field` set to `true`.
fn poisoned(record: &SinkRecord, field: &str) -> bool {
    record
        .payload_json::<serde_json::Value>()
        .is_ok_and(|v| v.get(field) == Some(&serde_json::Value::Bool(true)))
}

impl Sink for Probe {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Test fixture: misbehaves in open or per batch as its [probe] table says.",
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
        if let Some(target) = &config.connect_to {
            let outcome = try_connect(target);
            return Err(ConnectorError::config(format!(
                "connect {target}: {outcome}"
            )));
        }
        if let Some(path) = &config.read_path {
            let outcome = try_read(path);
            return Err(ConnectorError::config(format!("read {path}: {outcome}")));
        }
        if config.loop_in_open {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if config.alloc_mb > 0 {
            std::hint::black_box(allocate(config.alloc_mb));
        }
        if config.metric_names > 0 {
            let mut name = "m".repeat(config.metric_name_mb << 20);
            for i in 0..config.metric_names {
                name.replace_range(..20, &format!("{i:020}"));
                danube_connect_sdk::metrics::counter_add(&name, 1, &[]);
            }
        }
        if config.log_flood > 0 {
            for i in 0..config.log_flood {
                danube_connect_sdk::log::info(&format!("log flood line {i}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1200));
            danube_connect_sdk::log::info("log flood done");
        }
        let unhealthy = match config.health_detail_mb {
            0 => config.unhealthy,
            mb => Some("x".repeat(mb << 20)),
        };
        if config.state_puts > 0 {
            let (mut ok, mut refused, mut first) = (0, 0, None);
            let started = std::time::Instant::now();
            for i in 0..config.state_puts {
                match danube_connect_sdk::state::put("offset", i.to_string().as_bytes()) {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        refused += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            return Err(ConnectorError::config(format!(
                "state puts: {ok} ok, {refused} refused in {} ms: {}",
                started.elapsed().as_millis(),
                first
                    .map(|e: danube_connect_sdk::state::StateError| e.to_string())
                    .unwrap_or_default()
            )));
        }
        if let Some(message) = config.config_error {
            return Err(ConnectorError::config(message));
        }
        if let Some(message) = config.fatal_error {
            return Err(ConnectorError::fatal(message));
        }
        let write_to = match &config.write_to {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ConnectorError::config(format!("write_to {path}: {e}")))?,
            ),
            None => None,
        };
        Ok((
            Probe {
                unhealthy,
                loop_in_batch: config.loop_in_batch,
                fail_retryably: config.fail_retryably,
                leak_mb_per_batch: config.leak_mb_per_batch,
                leaked: Vec::new(),
                calls: 0,
                trap_in_batch_on: config.trap_in_batch_on,
                write_to,
                state_per_batch: config.state_per_batch,
            },
            vec![ConsumerConfig::new(config.topic, config.subscription)],
        ))
    }

    fn health(&mut self) -> Result<(), String> {
        match &self.unhealthy {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        if self.loop_in_batch {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        let call = self.calls;
        self.calls += 1;
        if self.fail_retryably.is_some_and(|f| f.covers(call)) {
            return Err(ConnectorError::retryable(format!(
                "probe fails retryably as asked (call {call})"
            )));
        }
        if self.state_per_batch {
            danube_connect_sdk::state::put("batches", call.to_string().as_bytes())?;
        }
        if self.leak_mb_per_batch > 0 {
            self.leaked.push(allocate(self.leak_mb_per_batch));
        }
        for record in &records {
            if let Some(field) = &self.trap_in_batch_on
                && poisoned(record, field)
            {
                panic!("{BATCH_PANIC_MESSAGE}");
            }
            if let Some(file) = &mut self.write_to {
                let mut line = record.payload().to_vec();
                line.push(b'\n');
                file.write_all(&line)
                    .map_err(|e| ConnectorError::retryable(format!("writing: {e}")))?;
            }
        }
        Ok(BatchOutcome::all_ok())
    }
}

danube_connect_sdk::export_sink!(Probe);
