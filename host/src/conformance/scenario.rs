//! A connector's own scenarios for `danube-host test --scenario FILE`:
//! records and what must become of them, checked beside the contract.
//!
//! ```toml
//! # A sink: the records are handed to it in one process-batch, and each
//! # must come out as `expect` says.
//! [[records]]
//! payload_json = { device = "d1", value = 1.5 }  # or payload = "text"
//! key = "d1"                                     # optional
//! attributes = { origin = "scenario" }           # optional
//! topic = "/default/readings"                    # default: its first subscription
//! expect = "written"                             # or "invalid_data", "retryable"
//!
//! # A source: its first records, in order; each field given must match
//! # (attributes: each one given, among others).
//! [[records]]
//! topic = "/default/numbers"
//! payload_json = { seq = 0 }
//! attributes = { seq = "0" }
//! ```
//!
//! A source's scenario runs on a fresh state store, so the records are the
//! ones a first start polls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Harness, Row, Verdict, call, poll_records, sink_record, unexpected};
use crate::config::describe_toml_error;
use crate::contract::{Call, CallOutcome, ConnectorError, Opened, SinkRecord, SourceRecord};
use crate::guest_text::one_line;
use crate::supervisor::{Guest, Worker};

/// Records in one scenario, at most: a scenario is a handful of telling
/// cases, and a sink gets them in one batch.
const MAX_RECORDS: usize = 1000;
/// Bytes of a polled payload a failing row shows.
const SHOWN: usize = 120;

/// One scenario file.
#[derive(Debug)]
pub struct Scenario {
    /// The file, for its row.
    pub path: PathBuf,
    records: Vec<ScenarioRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    records: Vec<ScenarioRecord>,
}

/// A record of a scenario: fed to a sink, or expected from a source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRecord {
    topic: Option<String>,
    /// The payload as text.
    payload: Option<String>,
    /// The payload as JSON, written as TOML; compared as JSON for a source.
    payload_json: Option<toml::Value>,
    key: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Sinks only: what the sink must report for the record.
    expect: Option<Expect>,
}

/// What a sink must report for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Written,
    InvalidData,
    Retryable,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::Written => "written",
            Expect::InvalidData => "invalid_data",
            Expect::Retryable => "retryable",
        }
    }
}

impl Scenario {
    /// Reads a scenario file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let at = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {at}: {e}"))?;
        let file: ScenarioFile = toml::from_str(&text)
            .map_err(|e| format!("{at}: {}", describe_toml_error(&e, &text)))?;
        if file.records.is_empty() || file.records.len() > MAX_RECORDS {
            return Err(format!(
                "{at}: a scenario holds 1 to {MAX_RECORDS} [[records]], not {}",
                file.records.len()
            ));
        }
        for (index, record) in file.records.iter().enumerate() {
            if record.payload.is_some() && record.payload_json.is_some() {
                return Err(format!(
                    "{at}: record {}: give `payload` or `payload_json`, not both",
                    index + 1
                ));
            }
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            records: file.records,
        })
    }

    fn check(&self) -> String {
        let name = self.path.file_name().unwrap_or(self.path.as_os_str());
        format!("scenario {}", name.to_string_lossy())
    }
}

impl ScenarioRecord {
    /// The payload's bytes as the scenario gives them (JSON written
    /// compactly).
    fn payload_bytes(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_json) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(json)) => serde_json::to_vec(json).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// How `record` differs from what is expected, if it does.
    fn mismatch(&self, record: &SourceRecord) -> Option<String> {
        if let Some(topic) = &self.topic
            && *topic != record.topic
        {
            return Some(format!("topic {:?}, expected {topic:?}", record.topic));
        }
        if self.key.is_some() && self.key != record.key {
            return Some(format!("key {:?}, expected {:?}", record.key, self.key));
        }
        for (name, value) in &self.attributes {
            let found = record.attributes.iter().find(|(n, _)| n == name);
            if found.is_none_or(|(_, v)| v != value) {
                return Some(format!(
                    "attribute {name:?} is {:?}, expected {value:?}",
                    found.map(|(_, v)| v)
                ));
            }
        }
        // The payload is the guest's: bounded and escaped before it is shown.
        let text = || one_line(String::from_utf8_lossy(&record.payload).into_owned(), SHOWN);
        if let Some(expected) = &self.payload
            && expected.as_bytes() != record.payload
        {
            return Some(format!("payload {}, expected {expected}", text()));
        }
        if let Some(expected) = &self.payload_json {
            let expected = serde_json::to_value(expected).unwrap_or_default();
            let polled: Option<serde_json::Value> = serde_json::from_slice(&record.payload).ok();
            if polled.as_ref() != Some(&expected) {
                return Some(format!("payload {}, expected {expected}", text()));
            }
        }
        None
    }
}

impl Harness<'_> {
    /// Runs one scenario on a fresh worker and state: its row.
    pub(super) async fn scenario(&self, scenario: &Scenario) -> anyhow::Result<Row> {
        let state = tempfile::tempdir()?;
        let fresh = Harness {
            state_file: state.path().join("state.json"),
            ..*self
        };
        let worker = fresh.worker().await?;
        let config_json = self.config.connector_json();
        let verdict = match call(&worker, Call::Open { config_json }).await {
            CallOutcome::Opened(Opened::Sink(consumers)) => match consumers.first() {
                Some(first) => sink_scenario(&worker, scenario, &first.topic).await,
                None => Verdict::Fail("it declared no topic".into()),
            },
            CallOutcome::Opened(Opened::Source(_)) => source_scenario(&worker, scenario).await,
            CallOutcome::Opened(Opened::Ingress(_)) => Verdict::Skip(
                "scenarios are for sources and sinks; an ingress connector is tested with requests"
                    .into(),
            ),
            other => Verdict::Fail(format!("open: {}", unexpected(&other))),
        };
        let _ = call(&worker, Call::Close).await;
        worker.stop().await;
        Ok(Row {
            check: scenario.check(),
            verdict,
        })
    }
}

/// Hands the scenario's records to a sink in one batch; each must come out
/// as expected.
async fn sink_scenario(worker: &Worker, scenario: &Scenario, subscribed: &str) -> Verdict {
    let records = scenario
        .records
        .iter()
        .enumerate()
        .map(|(offset, r)| {
            let topic = r.topic.clone().unwrap_or_else(|| subscribed.to_string());
            SinkRecord {
                attributes: r.attributes.clone().into_iter().collect(),
                key: r.key.clone(),
                ..sink_record(topic, r.payload_bytes(), offset as u64)
            }
        })
        .collect();
    let failures = match call(worker, Call::ProcessBatch { records }).await {
        CallOutcome::Processed(failures) => failures,
        other => return Verdict::Fail(format!("process-batch: {}", unexpected(&other))),
    };
    for (index, record) in scenario.records.iter().enumerate() {
        let expected = record.expect.unwrap_or(Expect::Written);
        let failure = failures.iter().find(|f| f.index as usize == index);
        let got = match failure.map(|f| &f.error) {
            None => Expect::Written,
            Some(ConnectorError::InvalidData(_)) => Expect::InvalidData,
            Some(ConnectorError::Retryable(_)) => Expect::Retryable,
            Some(other) => {
                return Verdict::Fail(format!(
                    "record {}: a failure of class {}: {other}",
                    index + 1,
                    other.class()
                ));
            }
        };
        if got != expected {
            let why = failure.map_or(String::new(), |f| format!(" ({})", f.error));
            return Verdict::Fail(format!(
                "record {}: {}{why}, expected {}",
                index + 1,
                got.name(),
                expected.name()
            ));
        }
    }
    Verdict::Pass(format!("{} records as expected", scenario.records.len()))
}

/// Polls a source until it produced as many records as the scenario lists;
/// each must match its entry.
async fn source_scenario(worker: &Worker, scenario: &Scenario) -> Verdict {
    if scenario.records.iter().any(|r| r.expect.is_some()) {
        return Verdict::Fail("`expect` is for sinks; a source's records are matched".into());
    }
    let polls = poll_records(worker, scenario.records.len()).await;
    if let Some(why) = polls.broken {
        return Verdict::Fail(why);
    }
    for (index, expected) in scenario.records.iter().enumerate() {
        let Some(record) = polls.records.get(index) else {
            return Verdict::Fail(format!(
                "{} records polled, the scenario lists {}",
                polls.records.len(),
                scenario.records.len()
            ));
        };
        if let Some(why) = expected.mismatch(record) {
            return Verdict::Fail(format!("record {}: {why}", index + 1));
        }
    }
    Verdict::Pass(format!("{} records as expected", scenario.records.len()))
}
