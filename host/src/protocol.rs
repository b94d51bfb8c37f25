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

/// Bumped on any change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Frames larger than this are refused: a corrupt length never makes a process
/// allocate gigabytes.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

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
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Supervisor → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// First frame: what to load and how to confine it.
    Init(WorkerInit),
    /// A call into the guest; answered by [`FromWorker::Reply`] with the same id.
    Call { id: u64, trace_id: u64, call: Call },
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
}

/// One allowed TCP destination: an address range and a port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetRule {
    pub network: std::net::IpAddr,
    pub prefix_len: u8,
    pub port: u16,
}

impl NetRule {
    pub fn allows(&self, addr: std::net::SocketAddr) -> bool {
        use std::net::IpAddr;
        if addr.port() != self.port {
            return false;
        }
        match (self.network, addr.ip()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix_len: u8) -> bool {
    let full = (prefix_len / 8) as usize;
    let rest = prefix_len % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    rest == 0 || (net[full] ^ ip[full]) & (0xffu8 << (8 - rest)) == 0
}

/// A guest function call.
#[derive(Debug, Serialize, Deserialize)]
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
    /// The guest changed its state store; the supervisor persists it before it
    /// reads the next reply, so state put during a call is durable when the
    /// call's reply is handled.
    StatePut { key: String, value: Option<Vec<u8>> },
    /// A connector-defined metric update (the `metrics` import).
    Metric(GuestMetric),
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
    fn net_rules_match_prefix_and_port() {
        let rule = NetRule {
            network: "10.1.0.0".parse().unwrap(),
            prefix_len: 16,
            port: 5432,
        };
        assert!(rule.allows("10.1.200.3:5432".parse().unwrap()));
        assert!(!rule.allows("10.2.0.1:5432".parse().unwrap()));
        assert!(!rule.allows("10.1.0.1:5433".parse().unwrap()));
        let exact = NetRule {
            network: "127.0.0.1".parse().unwrap(),
            prefix_len: 32,
            port: 1883,
        };
        assert!(exact.allows("127.0.0.1:1883".parse().unwrap()));
        assert!(!exact.allows("127.0.0.2:1883".parse().unwrap()));
    }
}
