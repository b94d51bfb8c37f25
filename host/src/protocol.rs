//! The wire protocol between the supervisor and its worker processes.
//!
//! Both sides import this one file. A frame is a 4-byte little-endian length
//! followed by a postcard-encoded message. The first frame each way is a
//! handshake carrying [`PROTOCOL_VERSION`], so a supervisor never drives a worker
//! from another build (which can happen when the binary is replaced while a
//! supervisor runs).
//!
//! The record types here mirror the WIT types but belong to the host: the
//! supervisor never sees generated bindings, and the worker converts at its edge.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::capability::network::NetRule;

/// Bumped on any change to the messages below.
pub const PROTOCOL_VERSION: u32 = 3;

/// Frames larger than this are refused: a corrupt length never makes a process
/// allocate gigabytes.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Room reserved for a frame's body before its bytes arrive; larger bodies
/// grow as they are read.
const PREALLOCATE_BYTES: usize = 1024 * 1024;

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            body.len()
        )));
    }
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// Reads one frame. `Ok(None)` means the peer closed the stream between frames.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    // A close between frames is clean; a close inside the length is not.
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < len.len() {
        match input.read(&mut len[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame's length",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    // Memory follows the bytes that arrive, not the length announced: a
    // corrupt length on a short stream costs no large allocation.
    let mut body = Vec::with_capacity(len.min(PREALLOCATE_BYTES));
    input.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended inside a frame: {} of {len} bytes",
                body.len()
            ),
        ));
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Supervisor → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// First frame: what to load and how to confine it (boxed: it is sent
    /// once, calls all the time).
    Init(Box<WorkerInit>),
    /// A call into the guest; answered by [`FromWorker::Reply`] with the same id.
    Call { id: u64, trace_id: u64, call: Call },
    /// The answer to [`FromWorker::StatePut`]: the change is on disk, or why
    /// not. The guest's `state.put` returns only once it arrives.
    StateSaved(Result<(), String>),
}

/// Everything a worker needs to load its module; sent once after the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    pub protocol_version: u32,
    pub connector: String,
    pub module: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub limits: SandboxLimits,
    /// The connector's persisted state store.
    pub state: BTreeMap<String, Vec<u8>>,
    /// Log filter directive for the worker's own logs and the guest's.
    pub log_filter: String,
    pub log_json: bool,
    /// Something the worker does once it is locked down, before the guest
    /// runs, so that tests can observe the lockdown from outside.
    pub self_test: Option<SelfTest>,
}

/// An action a locked-down worker takes on itself, to show that the lockdown
/// holds (set by the supervisor from `DANUBE_HOST_WORKER_SELF_TEST`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum SelfTest {
    /// Reads a file with the worker's own rights and logs the outcome.
    Read(PathBuf),
    /// Makes a system call: `NAME[,ARG...]`, each argument a number or
    /// `ppid` (the supervisor's pid), missing ones zero.
    Syscall(String),
}

impl std::str::FromStr for SelfTest {
    type Err = String;

    /// `read:PATH` or `syscall:NAME[,ARG...]`.
    fn from_str(s: &str) -> Result<SelfTest, String> {
        match s.split_once(':') {
            Some(("read", path)) => Ok(SelfTest::Read(path.into())),
            Some(("syscall", name)) => Ok(SelfTest::Syscall(name.into())),
            _ => Err(format!("{s:?} is neither read:PATH nor syscall:NAME")),
        }
    }
}

/// The sandbox the guest runs in, resolved by the supervisor from `[sandbox]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxLimits {
    pub memory_bytes: u64,
    pub call_timeout_ms: u64,
    /// Host directories granted to the guest, visible at the same path.
    pub dirs: Vec<PathBuf>,
    /// TCP endpoints the guest may connect to, already resolved.
    pub allow: Vec<NetRule>,
    /// The names the guest may look up: `allow`'s host names, `lookup`.
    pub names: Vec<String>,
    /// Fuel (roughly, WebAssembly instructions) one call may burn; `None`
    /// leaves compute bounded by the call timeout alone.
    pub fuel: Option<u64>,
    /// Largest file the worker may write (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
}

/// A guest function call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    Open { config_json: String },
    Poll { max: u32, timeout_ms: u32 },
    Commit { offsets: Vec<Offset> },
    ProcessBatch { records: Vec<SinkRecord> },
    Health,
    Close,
}

impl Call {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Open { .. } => "open",
            Call::Poll { .. } => "poll",
            Call::Commit { .. } => "commit",
            Call::ProcessBatch { .. } => "process_batch",
            Call::Health => "health",
            Call::Close => "close",
        }
    }
}

/// Worker → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The module is loaded and instantiated.
    Ready(ModuleInfo),
    /// The module could not be loaded; the worker exits after sending this.
    LoadFailed(String),
    Reply {
        id: u64,
        outcome: CallOutcome,
        /// The guest's linear memory after the call.
        memory_bytes: u64,
    },
    /// The guest changed its state store; the supervisor persists it and
    /// answers [`ToWorker::StateSaved`], which the worker waits for.
    StatePut { key: String, value: Option<Vec<u8>> },
    /// A connector-defined metric update (the `metrics` import).
    Metric(GuestMetric),
    /// The worker made a system call its seccomp filter denies and is
    /// stopping. Written from a signal handler, so its encoding must not
    /// depend on the value: the number is fixed-width little-endian bytes.
    SyscallDenied { number_le: [u8; 4] },
}

/// A connector-defined metric update.
#[derive(Debug, Serialize, Deserialize)]
pub enum GuestMetric {
    Counter {
        name: String,
        value: u64,
        labels: Vec<(String, String)>,
    },
    Gauge {
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    },
}

/// Which contract a module implements.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum World {
    Source,
    Sink,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Source => "source",
            World::Sink => "sink",
        })
    }
}

/// What a loaded module is and says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub world: World,
    pub wit_version: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub config_example: String,
}

/// The result of one guest call.
#[derive(Debug, Serialize, Deserialize)]
pub enum CallOutcome {
    Opened(Opened),
    Polled(Vec<SourceRecord>),
    /// Per-record failures of a `process-batch`; empty when all were written.
    Processed(Vec<RecordFailure>),
    Done,
    /// The guest returned an error.
    Error(ConnectorError),
    /// The guest trapped, ran out of time or memory. The instance is gone:
    /// the worker exits after sending this.
    Trapped(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Opened {
    Source(Vec<ProducerConfig>),
    Sink(Vec<ConsumerConfig>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Offset {
    pub stream: String,
    pub position: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRecord {
    pub topic: String,
    /// As one byte string, not a sequence of numbers: serde would otherwise
    /// visit every byte on its own, the boundary's largest cost.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub key: Option<String>,
    pub offset: Option<Offset>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaRef {
    pub subject: String,
    pub version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkRecord {
    pub topic: String,
    /// As one byte string, not a sequence of numbers: serde would otherwise
    /// visit every byte on its own, the boundary's largest cost.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub key: Option<String>,
    pub publish_time: u64,
    pub producer: String,
    pub offset: u64,
    pub redelivery_count: u32,
    pub schema: Option<SchemaRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerConfig {
    pub topic: String,
    pub partitions: u32,
    pub reliable: bool,
    pub schema_subject: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SubscriptionType {
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerConfig {
    pub topic: String,
    pub subscription: String,
    pub subscription_type: SubscriptionType,
    pub expected_schema_subject: Option<String>,
    pub decode_avro: bool,
}

/// The error classes of the contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error("fatal: {0}")]
    Fatal(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl ConnectorError {
    /// The class as a metric label.
    pub fn class(&self) -> &'static str {
        match self {
            ConnectorError::Retryable(_) => "retryable",
            ConnectorError::InvalidData(_) => "invalid_data",
            ConnectorError::Fatal(_) => "fatal",
            ConnectorError::Config(_) => "config",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordFailure {
    pub index: u32,
    pub error: ConnectorError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_eof_is_clean() {
        let mut buf = Vec::new();
        let call = ToWorker::Call {
            id: 7,
            trace_id: 9,
            call: Call::Poll {
                max: 10,
                timeout_ms: 5,
            },
        };
        write_frame(&mut buf, &call).unwrap();
        let mut input = buf.as_slice();
        let back: ToWorker = read_frame(&mut input).unwrap().unwrap();
        assert!(matches!(
            back,
            ToWorker::Call {
                id: 7,
                trace_id: 9,
                call: Call::Poll { max: 10, .. }
            }
        ));
        assert!(read_frame::<ToWorker>(&mut input).unwrap().is_none());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        let err = read_frame::<ToWorker>(&mut bytes.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_length_past_the_end_of_the_stream_is_an_error() {
        let mut bytes = (MAX_FRAME_BYTES as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let err = read_frame::<ToWorker>(&mut bytes.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("3 of 268435456 bytes"), "{err}");
    }

    mod properties {
        //! Property tests of the frame codec: whatever bytes arrive, reading
        //! returns a frame, a clean end or an error, never a panic; and every
        //! message written reads back the same.

        use super::*;
        use proptest::prelude::*;
        use proptest::strategy::LazyJust;

        /// Writes `messages` as frames and reads them back: each the same (as
        /// its debug form shows it), then a clean end.
        fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(
            messages: &[T],
        ) -> Result<(), TestCaseError> {
            let mut bytes = Vec::new();
            for m in messages {
                write_frame(&mut bytes, m).unwrap();
            }
            let mut input = bytes.as_slice();
            for m in messages {
                let back: T = read_frame(&mut input).unwrap().unwrap();
                prop_assert_eq!(format!("{back:?}"), format!("{m:?}"));
            }
            prop_assert!(read_frame::<T>(&mut input).unwrap().is_none());
            Ok(())
        }

        /// Reads frames until the end or an error, as the worker and the
        /// supervisor do; returns how many were read.
        fn drain<T: DeserializeOwned>(bytes: &[u8]) -> usize {
            let mut input = bytes;
            let mut frames = 0;
            while let Ok(Some(_)) = read_frame::<T>(&mut input) {
                frames += 1;
            }
            frames
        }

        /// `body` behind a length prefix that matches it, so that decoding
        /// gets past the length check and into the message itself.
        fn framed(body: &[u8]) -> Vec<u8> {
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(body);
            bytes
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![".{0,40}", "\\PC{0,8}"]
        }

        fn offset() -> impl Strategy<Value = Offset> {
            (text(), any::<u64>()).prop_map(|(stream, position)| Offset { stream, position })
        }

        fn attributes() -> impl Strategy<Value = Vec<(String, String)>> {
            prop::collection::vec((text(), text()), 0..4)
        }

        fn error() -> impl Strategy<Value = ConnectorError> {
            prop_oneof![
                text().prop_map(ConnectorError::Retryable),
                text().prop_map(ConnectorError::InvalidData),
                text().prop_map(ConnectorError::Fatal),
                text().prop_map(ConnectorError::Config),
            ]
        }

        fn sink_record() -> impl Strategy<Value = SinkRecord> {
            (
                text(),
                prop::collection::vec(any::<u8>(), 0..64),
                attributes(),
                prop::option::of(text()),
                any::<u64>(),
                text(),
                any::<u64>(),
                any::<u32>(),
                prop::option::of((text(), any::<u32>())),
            )
                .prop_map(
                    |(
                        topic,
                        payload,
                        attributes,
                        key,
                        publish_time,
                        producer,
                        offset,
                        redelivery_count,
                        schema,
                    )| {
                        SinkRecord {
                            topic,
                            payload,
                            attributes,
                            key,
                            publish_time,
                            producer,
                            offset,
                            redelivery_count,
                            schema: schema.map(|(subject, version)| SchemaRef { subject, version }),
                        }
                    },
                )
        }

        fn source_record() -> impl Strategy<Value = SourceRecord> {
            (
                text(),
                prop::collection::vec(any::<u8>(), 0..64),
                attributes(),
                prop::option::of(text()),
                prop::option::of(offset()),
            )
                .prop_map(|(topic, payload, attributes, key, offset)| SourceRecord {
                    topic,
                    payload,
                    attributes,
                    key,
                    offset,
                })
        }

        fn call() -> impl Strategy<Value = Call> {
            prop_oneof![
                text().prop_map(|config_json| Call::Open { config_json }),
                (any::<u32>(), any::<u32>())
                    .prop_map(|(max, timeout_ms)| Call::Poll { max, timeout_ms }),
                prop::collection::vec(offset(), 0..4).prop_map(|offsets| Call::Commit { offsets }),
                prop::collection::vec(sink_record(), 0..4)
                    .prop_map(|records| Call::ProcessBatch { records }),
                LazyJust::new(|| Call::Health),
                LazyJust::new(|| Call::Close),
            ]
        }

        fn to_worker() -> impl Strategy<Value = ToWorker> {
            prop_oneof![
                (any::<u64>(), any::<u64>(), call())
                    .prop_map(|(id, trace_id, call)| ToWorker::Call { id, trace_id, call }),
                prop::option::of(text()).prop_map(|e| ToWorker::StateSaved(e.map_or(Ok(()), Err))),
                (
                    any::<u32>(),
                    text(),
                    prop::collection::vec(text(), 0..3),
                    any::<u64>(),
                    any::<u64>(),
                    prop::collection::btree_map(
                        text(),
                        prop::collection::vec(any::<u8>(), 0..16),
                        0..4
                    ),
                    any::<bool>(),
                    prop::collection::vec((any::<[u8; 4]>(), 0u8..=32, any::<u16>()), 0..3),
                    prop::option::of(any::<u64>()),
                    any::<u64>(),
                    prop::option::of(prop_oneof![
                        text().prop_map(|p| SelfTest::Read(PathBuf::from(p))),
                        text().prop_map(SelfTest::Syscall),
                    ]),
                )
                    .prop_map(
                        |(
                            protocol_version,
                            connector,
                            dirs,
                            memory_bytes,
                            call_timeout_ms,
                            state,
                            log_json,
                            allow,
                            fuel,
                            max_file_bytes,
                            self_test,
                        )| {
                            ToWorker::Init(Box::new(WorkerInit {
                                protocol_version,
                                module: PathBuf::from(&connector),
                                cache_dir: dirs.first().map(PathBuf::from),
                                limits: SandboxLimits {
                                    memory_bytes,
                                    call_timeout_ms,
                                    dirs: dirs.iter().map(PathBuf::from).collect(),
                                    names: dirs.clone(),
                                    allow: allow
                                        .into_iter()
                                        .map(|(ip, prefix_len, port)| NetRule {
                                            network: ipnet::Ipv4Net::new(ip.into(), prefix_len)
                                                .unwrap()
                                                .into(),
                                            port,
                                        })
                                        .collect(),
                                    fuel,
                                    max_file_bytes,
                                },
                                connector,
                                state,
                                log_filter: "info".into(),
                                log_json,
                                self_test,
                            }))
                        },
                    ),
            ]
        }

        fn outcome() -> impl Strategy<Value = CallOutcome> {
            prop_oneof![
                prop::collection::vec(source_record(), 0..4).prop_map(CallOutcome::Polled),
                prop::collection::vec((any::<u32>(), error()), 0..4).prop_map(|f| {
                    CallOutcome::Processed(
                        f.into_iter()
                            .map(|(index, error)| RecordFailure { index, error })
                            .collect(),
                    )
                }),
                LazyJust::new(|| CallOutcome::Done),
                error().prop_map(CallOutcome::Error),
                text().prop_map(CallOutcome::Trapped),
                prop::collection::vec((text(), text(), any::<bool>()), 0..3).prop_map(|c| {
                    CallOutcome::Opened(Opened::Source(
                        c.into_iter()
                            .map(|(topic, subject, reliable)| ProducerConfig {
                                topic,
                                partitions: 3,
                                reliable,
                                schema_subject: Some(subject),
                            })
                            .collect(),
                    ))
                }),
            ]
        }

        fn from_worker() -> impl Strategy<Value = FromWorker> {
            prop_oneof![
                (any::<u64>(), outcome(), any::<u64>()).prop_map(|(id, outcome, memory_bytes)| {
                    FromWorker::Reply {
                        id,
                        outcome,
                        memory_bytes,
                    }
                }),
                text().prop_map(FromWorker::LoadFailed),
                any::<[u8; 4]>().prop_map(|number_le| FromWorker::SyscallDenied { number_le }),
                (
                    text(),
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..32))
                )
                    .prop_map(|(key, value)| FromWorker::StatePut { key, value }),
                (text(), any::<u64>(), attributes()).prop_map(|(name, value, labels)| {
                    FromWorker::Metric(GuestMetric::Counter {
                        name,
                        value,
                        labels,
                    })
                }),
                (text(), any::<f64>(), attributes()).prop_map(|(name, value, labels)| {
                    FromWorker::Metric(GuestMetric::Gauge {
                        name,
                        value,
                        labels,
                    })
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn reading_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                drain::<ToWorker>(&bytes);
                drain::<FromWorker>(&bytes);
            }

            #[test]
            fn decoding_an_arbitrary_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
                let bytes = framed(&body);
                drain::<ToWorker>(&bytes);
                drain::<FromWorker>(&bytes);
            }

            #[test]
            fn a_corrupted_frame_never_panics(
                message in from_worker(),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            ) {
                let mut bytes = Vec::new();
                write_frame(&mut bytes, &message).unwrap();
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                drain::<FromWorker>(&bytes);
            }

            #[test]
            fn a_frame_cut_short_is_an_error_or_the_end(message in to_worker(), cut in any::<prop::sample::Index>()) {
                let mut bytes = Vec::new();
                write_frame(&mut bytes, &message).unwrap();
                let cut = cut.index(bytes.len());
                let result = read_frame::<ToWorker>(&mut &bytes[..cut]);
                prop_assert!(!matches!(result, Ok(Some(_))), "a partial frame decoded");
            }

            #[test]
            fn supervisor_frames_round_trip(messages in prop::collection::vec(to_worker(), 1..4)) {
                round_trip(&messages)?;
            }

            #[test]
            fn worker_frames_round_trip(messages in prop::collection::vec(from_worker(), 1..4)) {
                round_trip(&messages)?;
            }
        }
    }
}
