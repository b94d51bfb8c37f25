//! The host's own mirror of the WIT contract's types: calls into the guest,
//! their outcomes, records, offsets, topics and errors.
//!
//! The supervisor never sees generated bindings; the worker converts between
//! these and the WIT types at its edge (`worker/guest.rs`), and
//! [`crate::ipc`] carries them between the processes.

use serde::{Deserialize, Serialize};

/// A guest function call. `R` is a sink batch's record: owned where the
/// supervisor builds it, a view into the frame's bytes in the worker
/// (`worker/batch.rs`), which lowers it into the guest without copying it
/// first. The two encode alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call<R = SinkRecord> {
    Open {
        config_json: String,
    },
    Poll {
        max: u32,
        timeout_ms: u32,
    },
    Commit {
        offsets: Vec<Offset>,
    },
    ProcessBatch {
        records: Vec<R>,
    },
    /// One request to an ingress connector, which may make at most `max`
    /// records of it.
    Handle {
        request: HttpRequest,
        max: u32,
    },
    Health,
    Close,
}

impl<R> Call<R> {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Open { .. } => "open",
            Call::Poll { .. } => "poll",
            Call::Commit { .. } => "commit",
            Call::ProcessBatch { .. } => "process_batch",
            Call::Handle { .. } => "handle",
            Call::Health => "health",
            Call::Close => "close",
        }
    }
}

/// Which contract a module implements.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum World {
    Source,
    Sink,
    Ingress,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Source => "source",
            World::Sink => "sink",
            World::Ingress => "ingress",
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
    /// The JSON Schema of the configuration table, as the module gave it
    /// (at most [`guest_text::CONFIG_SCHEMA`](crate::guest_text::CONFIG_SCHEMA)
    /// bytes, not yet read: [`crate::connector_table`] reads it).
    pub config_schema: Option<String>,
}

/// The result of one guest call.
#[derive(Debug, Serialize, Deserialize)]
pub enum CallOutcome {
    Opened(Opened),
    Polled(Vec<SourceRecord>),
    /// Per-record failures of a `process-batch`; empty when all were written.
    Processed(Vec<RecordFailure>),
    /// The records an ingress connector made from one request.
    Handled(Vec<SourceRecord>),
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
    Ingress(IngressSetup),
}

/// What an ingress connector serves and publishes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngressSetup {
    pub producers: Vec<ProducerConfig>,
    pub routes: Vec<IngressRoute>,
}

/// A path an ingress connector serves, with its own rate limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngressRoute {
    pub path: String,
    pub requests_per_second: Option<u32>,
    pub burst: Option<u32>,
}

/// An HTTP request handed to an ingress connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub remote_address: String,
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
