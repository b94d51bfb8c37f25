//! `danube-host test`: a module checked against the contract
//! (`docs/authoring.md`), the host playing its part directly, without a
//! broker: the calls come in the orders the host makes them, and each
//! answer is held to what the contract promises. Every check is a row that
//! passes, fails with the reason, or is skipped with the reason (a source
//! that produced nothing cannot show how it resumes).
//!
//! The module runs in real workers with the configuration's `[sandbox]`, so
//! a connector that needs an external system needs it reachable here too.
//! The module and its configuration are expected to pass `validate` first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::capability::state::StateStore;
use crate::config::ConnectorConfig;
use crate::connector_table::ConnectorTable;
use crate::contract::{
    Call, CallOutcome, ConnectorError, HttpRequest, ModuleInfo, Offset, Opened, SinkRecord,
    SourceRecord, World,
};
use crate::supervisor::{Guest, LogSettings, Worker, start_worker};

mod scenario;
pub use scenario::Scenario;

/// How long a source gets to produce the records the checks look at.
const RECORDS_WITHIN: Duration = Duration::from_secs(5);
/// How many records a source's checks look at.
const RECORDS: usize = 10;
/// The `max` and `timeout-ms` of the checks' polls.
const POLL_MAX: u32 = 3;
const POLL_TIMEOUT_MS: u32 = 200;
/// How much longer than its `timeout-ms` a poll may take (a worker's own
/// overhead, a busy machine).
const POLL_SLACK: Duration = Duration::from_secs(1);
/// The key added to the table to see that unknown keys are refused.
const UNKNOWN_KEY: &str = "conformance_unknown_key";

/// One check and how it came out.
pub struct Row {
    pub check: String,
    pub verdict: Verdict,
}

pub enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
}

impl Verdict {
    pub fn failed(&self) -> bool {
        matches!(self, Verdict::Fail(_))
    }
}

/// The module's description and its rows.
pub struct Report {
    pub info: ModuleInfo,
    pub rows: Vec<Row>,
}

/// Runs every check of the module's world, then the connector's own
/// scenarios. `Err` is a module that cannot be loaded at all.
pub async fn run(
    module: &Path,
    config: &ConnectorConfig,
    log: &LogSettings,
    scenarios: &[Scenario],
) -> anyhow::Result<Report> {
    let state_dir = tempfile::tempdir()?;
    let harness = Harness {
        module,
        config,
        log,
        state_file: state_dir.path().join("state.json"),
    };
    let first = harness.worker().await?;
    let info = first.info().clone();
    let mut rows = vec![Row {
        check: "describe answers without open".into(),
        verdict: Verdict::Pass(format!("{} {}", info.name, info.version)),
    }];
    rows.push(Row {
        check: "close without open".into(),
        verdict: match call(&first, Call::Close).await {
            CallOutcome::Done => Verdict::Pass(String::new()),
            other => Verdict::Fail(unexpected(&other)),
        },
    });
    first.stop().await;
    rows.push(harness.unknown_key_check(&info).await?);
    match info.world {
        World::Source => harness.source_checks(&mut rows).await?,
        World::Sink => harness.sink_checks(&mut rows).await?,
        World::Ingress => harness.ingress_checks(&mut rows).await?,
    }
    for scenario in scenarios {
        rows.push(harness.scenario(scenario).await?);
    }
    Ok(Report { info, rows })
}

struct Harness<'a> {
    module: &'a Path,
    config: &'a ConnectorConfig,
    log: &'a LogSettings,
    /// The state store every worker of the run shares, as a restarted
    /// connector's workers do.
    state_file: std::path::PathBuf,
}

impl Harness<'_> {
    async fn worker(&self) -> anyhow::Result<Worker> {
        let state = StateStore::open(&self.state_file)?;
        start_worker(self.module, Some(self.config), state, self.log, None).await
    }

    /// An unknown key must be a `config` error naming it: a typo in an
    /// operator's file must not go unnoticed.
    async fn unknown_key_check(&self, info: &ModuleInfo) -> anyhow::Result<Row> {
        let check = "open refuses an unknown key, naming it";
        let mut table = self.config.connector.clone();
        table.insert(UNKNOWN_KEY.into(), toml::Value::Integer(1));
        if ConnectorTable::of(info).is_ok_and(|t| t.check(None, &table).is_err()) {
            return Ok(Row {
                check: check.into(),
                verdict: Verdict::Skip(
                    "the host refuses it before open, by the keys the module's schema or example lists"
                        .into(),
                ),
            });
        }
        let worker = self.worker().await?;
        let config_json = serde_json::to_string(&table)?;
        let verdict = match call(&worker, Call::Open { config_json }).await {
            CallOutcome::Error(ConnectorError::Config(m)) if m.contains(UNKNOWN_KEY) => {
                Verdict::Pass(m)
            }
            CallOutcome::Error(ConnectorError::Config(m)) => Verdict::Fail(format!(
                "a config error that does not name `{UNKNOWN_KEY}`: {m}"
            )),
            CallOutcome::Opened(_) => Verdict::Fail(format!(
                "`{UNKNOWN_KEY}` was accepted: a mistyped key would go unnoticed (refuse unknown fields)"
            )),
            other => Verdict::Fail(unexpected(&other)),
        };
        let _ = call(&worker, Call::Close).await;
        worker.stop().await;
        Ok(Row {
            check: check.into(),
            verdict,
        })
    }

    async fn source_checks(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let worker = self.worker().await?;
        let Some(Opened::Source(producers)) = self.open(&worker, rows).await else {
            worker.stop().await;
            return Ok(());
        };
        let topics: Vec<String> = producers.into_iter().map(|p| p.topic).collect();

        let Polls {
            records,
            broken,
            slow,
        } = poll_records(&worker, RECORDS).await;
        rows.push(Row {
            check: "poll returns at most max".into(),
            verdict: match &broken {
                Some(why) => Verdict::Fail(why.clone()),
                None => Verdict::Pass(format!(
                    "{} records in polls of at most {POLL_MAX}",
                    records.len()
                )),
            },
        });
        rows.push(Row {
            check: "poll returns within timeout-ms".into(),
            verdict: slow.map_or(Verdict::Pass(String::new()), Verdict::Fail),
        });
        let mut record_rows = [
            "records name declared topics",
            "offsets grow within each stream",
            "a restarted instance resumes after its last commit",
        ]
        .map(|check| Row {
            check: check.into(),
            verdict: Verdict::Skip(match &broken {
                Some(_) => "poll broke the contract (above)".to_string(),
                None => format!(
                    "the source produced no record in {} s: give it input for this check",
                    RECORDS_WITHIN.as_secs()
                ),
            }),
        });
        // Commits the first half, for the restart below.
        let half = records.len() / 2;
        let committed = last_offsets(&records[..half]);
        let commit = match committed.is_empty() {
            true => None,
            false => {
                let offsets = committed
                    .iter()
                    .map(|(stream, position)| Offset {
                        stream: stream.clone(),
                        position: *position,
                    })
                    .collect();
                Some(call(&worker, Call::Commit { offsets }).await)
            }
        };
        self.finish(&worker, rows).await;
        worker.stop().await;
        if let Some(next) = records.get(half) {
            record_rows[0].verdict = match records.iter().find(|r| !topics.contains(&r.topic)) {
                Some(r) => Verdict::Fail(format!(
                    "a record for {}, not declared in open ({})",
                    r.topic,
                    topics.join(", ")
                )),
                None => Verdict::Pass(String::new()),
            };
            record_rows[1].verdict = offsets_grow(&records);
            record_rows[2].verdict = match commit {
                None => {
                    Verdict::Skip("its first records carry no offsets: nothing to commit".into())
                }
                Some(CallOutcome::Done) => self.resume_check(&committed, next).await?,
                Some(other) => Verdict::Fail(format!("commit: {}", unexpected(&other))),
            };
        }
        rows.extend(record_rows);
        Ok(())
    }

    /// A new instance on the same state: nothing committed comes again, and
    /// the first record after the commit is not skipped.
    async fn resume_check(
        &self,
        committed: &BTreeMap<String, u64>,
        next: &SourceRecord,
    ) -> anyhow::Result<Verdict> {
        let worker = self.worker().await?;
        let config_json = self.config.connector_json();
        let verdict = match call(&worker, Call::Open { config_json }).await {
            CallOutcome::Opened(_) => match poll_records(&worker, RECORDS).await {
                Polls {
                    broken: Some(why), ..
                } => Verdict::Fail(why),
                Polls { records, .. } => resumed(committed, next, &records),
            },
            other => Verdict::Fail(format!("open after the restart: {}", unexpected(&other))),
        };
        let _ = call(&worker, Call::Close).await;
        worker.stop().await;
        Ok(verdict)
    }

    async fn sink_checks(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let worker = self.worker().await?;
        let Some(Opened::Sink(consumers)) = self.open(&worker, rows).await else {
            worker.stop().await;
            return Ok(());
        };
        let topic = consumers[0].topic.clone();
        let records: Vec<SinkRecord> = (0..3u64)
            .map(|i| {
                let payload = serde_json::json!({ "conformance": i }).to_string();
                sink_record(topic.clone(), payload.into_bytes(), i)
            })
            .collect();
        let batch = records.len();
        let verdict = match call(&worker, Call::ProcessBatch { records }).await {
            CallOutcome::Processed(failures) => {
                match failures.iter().find(|f| {
                    f.index as usize >= batch
                        || !matches!(
                            f.error,
                            ConnectorError::Retryable(_) | ConnectorError::InvalidData(_)
                        )
                }) {
                    Some(f) => Verdict::Fail(format!(
                        "failure {} in a batch of {batch}: {}",
                        f.index, f.error
                    )),
                    None => Verdict::Pass(format!("{} of {batch} written", batch - failures.len())),
                }
            }
            CallOutcome::Error(ConnectorError::Retryable(why)) => Verdict::Skip(format!(
                "the batch was not written ({why}): is the external system reachable?"
            )),
            CallOutcome::Error(ConnectorError::InvalidData(why)) => {
                Verdict::Pass(format!("the test records are invalid data for it: {why}"))
            }
            other => Verdict::Fail(unexpected(&other)),
        };
        rows.push(Row {
            check: "process-batch reports failures within its batch".into(),
            verdict,
        });
        self.finish(&worker, rows).await;
        worker.stop().await;
        Ok(())
    }

    /// Opens with the configuration's table; the row says what came back.
    async fn open(&self, worker: &Worker, rows: &mut Vec<Row>) -> Option<Opened> {
        let config_json = self.config.connector_json();
        let (verdict, opened) = match call(worker, Call::Open { config_json }).await {
            CallOutcome::Opened(opened) => {
                let topics = match &opened {
                    Opened::Source(p) => p.len(),
                    Opened::Sink(c) => c.len(),
                    Opened::Ingress(setup) => setup.producers.len(),
                };
                match topics {
                    0 => (Verdict::Fail("it declared no topic".into()), None),
                    n => (Verdict::Pass(format!("{n} topic(s)")), Some(opened)),
                }
            }
            other => (Verdict::Fail(unexpected(&other)), None),
        };
        rows.push(Row {
            check: "open declares its topics".into(),
            verdict,
        });
        opened
    }

    /// An ingress connector serves at least one path, and a JSON request to
    /// its first path makes records for declared topics only (or is refused
    /// as invalid data, for the sender to fix).
    async fn ingress_checks(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let worker = self.worker().await?;
        let Some(Opened::Ingress(setup)) = self.open(&worker, rows).await else {
            worker.stop().await;
            return Ok(());
        };
        let topics: Vec<&str> = setup.producers.iter().map(|p| p.topic.as_str()).collect();
        let verdict = match setup.routes.first() {
            None => Verdict::Fail("it serves no path".into()),
            Some(route) => {
                let request = HttpRequest {
                    method: "POST".into(),
                    path: route.path.clone(),
                    query: String::new(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: br#"{"conformance": true}"#.to_vec(),
                    remote_address: "127.0.0.1:1".into(),
                };
                match call(
                    &worker,
                    Call::Handle {
                        request,
                        max: POLL_MAX,
                    },
                )
                .await
                {
                    CallOutcome::Handled(records) => {
                        match records.iter().find(|r| !topics.contains(&r.topic.as_str())) {
                            Some(r) => Verdict::Fail(format!(
                                "a record for {}, not declared in open ({})",
                                r.topic,
                                topics.join(", ")
                            )),
                            None => Verdict::Pass(format!(
                                "{} record(s) from a request to {}",
                                records.len(),
                                route.path
                            )),
                        }
                    }
                    CallOutcome::Error(ConnectorError::InvalidData(why)) => {
                        Verdict::Pass(format!("refused as invalid data: {why}"))
                    }
                    other => Verdict::Fail(unexpected(&other)),
                }
            }
        };
        rows.push(Row {
            check: "handle makes records for declared topics".into(),
            verdict,
        });
        self.finish(&worker, rows).await;
        worker.stop().await;
        Ok(())
    }

    /// `health`, then `close`, each a row.
    async fn finish(&self, worker: &Worker, rows: &mut Vec<Row>) {
        rows.push(Row {
            check: "health answers".into(),
            verdict: match call(worker, Call::Health).await {
                CallOutcome::Done => Verdict::Pass(String::new()),
                CallOutcome::Error(ConnectorError::Retryable(why)) => {
                    Verdict::Pass(format!("degraded: {why}"))
                }
                other => Verdict::Fail(unexpected(&other)),
            },
        });
        rows.push(Row {
            check: "close after open".into(),
            verdict: match call(worker, Call::Close).await {
                CallOutcome::Done => Verdict::Pass(String::new()),
                other => Verdict::Fail(unexpected(&other)),
            },
        });
    }
}

/// What a run of polls brought: up to the records wanted within
/// [`RECORDS_WITHIN`], the first answer that broke the contract, and the
/// first poll that ran past its `timeout-ms`.
struct Polls {
    records: Vec<SourceRecord>,
    broken: Option<String>,
    slow: Option<String>,
}

/// Polls as the host does, `POLL_MAX` records and `POLL_TIMEOUT_MS` at a
/// time; a `retryable` poll (its external system is not there yet) is asked
/// again after a pause, as the host would after a backoff.
async fn poll_records(worker: &Worker, wanted: usize) -> Polls {
    let mut polls = Polls {
        records: Vec::new(),
        broken: None,
        slow: None,
    };
    let began = Instant::now();
    while polls.records.len() < wanted && began.elapsed() < RECORDS_WITHIN {
        let asked = Instant::now();
        let call_poll = Call::Poll {
            max: POLL_MAX,
            timeout_ms: POLL_TIMEOUT_MS,
        };
        match call(worker, call_poll).await {
            CallOutcome::Polled(polled) => {
                let took = asked.elapsed();
                if took > Duration::from_millis(POLL_TIMEOUT_MS.into()) + POLL_SLACK {
                    polls.slow.get_or_insert(format!(
                        "a poll with timeout-ms {POLL_TIMEOUT_MS} took {} ms",
                        took.as_millis()
                    ));
                }
                polls.records.extend(polled);
            }
            CallOutcome::Error(ConnectorError::Retryable(_)) => {
                tokio::time::sleep(Duration::from_millis(POLL_TIMEOUT_MS.into())).await;
            }
            other => {
                polls.broken = Some(unexpected(&other));
                break;
            }
        }
    }
    polls
}

/// A record as the harness hands it to a sink, at `offset` of `topic`,
/// first delivered, from producer `conformance`.
fn sink_record(topic: String, payload: Vec<u8>, offset: u64) -> SinkRecord {
    SinkRecord {
        topic,
        payload,
        attributes: Vec::new(),
        key: None,
        publish_time: 0,
        producer: "conformance".into(),
        offset,
        redelivery_count: 0,
        schema: None,
    }
}

/// One call; a worker that went away reads as a trap.
async fn call(worker: &Worker, call: Call) -> CallOutcome {
    match worker.call(crate::supervisor::new_trace_id(), call).await {
        Ok(outcome) => outcome,
        Err(gone) => CallOutcome::Trapped(gone.to_string()),
    }
}

fn unexpected(outcome: &CallOutcome) -> String {
    match outcome {
        CallOutcome::Error(e) => format!("it returned {e}"),
        CallOutcome::Trapped(why) => format!("it trapped: {why}"),
        other => format!("an unexpected answer: {other:?}"),
    }
}

/// What the records polled after a restart show: nothing committed came
/// again, and `next`, the first record after the commit, was not skipped.
fn resumed(
    committed: &BTreeMap<String, u64>,
    next: &SourceRecord,
    again: &[SourceRecord],
) -> Verdict {
    let repeated = again.iter().find(|r| {
        r.offset
            .as_ref()
            .is_some_and(|o| committed.get(&o.stream).is_some_and(|c| o.position <= *c))
    });
    match repeated {
        Some(r) => {
            let o = r.offset.as_ref().expect("found by its offset");
            Verdict::Fail(format!(
                "position {} of stream {:?} was committed and is polled again",
                o.position, o.stream
            ))
        }
        None if again.iter().any(|r| r.payload == next.payload) => {
            Verdict::Pass(format!("{} records after the restart", again.len()))
        }
        None if again.is_empty() => {
            Verdict::Skip("no record after the restart: nothing shows that none was skipped".into())
        }
        None => Verdict::Fail(
            "the first record after the commit did not come again: records were skipped".into(),
        ),
    }
}

/// Per stream, the last offset of `records`.
fn last_offsets(records: &[SourceRecord]) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for offset in records.iter().filter_map(|r| r.offset.as_ref()) {
        last.insert(offset.stream.clone(), offset.position);
    }
    last
}

fn offsets_grow(records: &[SourceRecord]) -> Verdict {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for offset in records.iter().filter_map(|r| r.offset.as_ref()) {
        if let Some(previous) = last.insert(&offset.stream, offset.position)
            && offset.position <= previous
        {
            return Verdict::Fail(format!(
                "stream {:?}: position {} after {previous}",
                offset.stream, offset.position
            ));
        }
    }
    match last.is_empty() {
        true => Verdict::Skip("its records carry no offsets".into()),
        false => Verdict::Pass(format!("{} stream(s)", last.len())),
    }
}
