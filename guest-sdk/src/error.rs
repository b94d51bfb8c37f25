//! The error classes the host acts on.

use std::fmt;

/// What went wrong, in the classes the host acts on.
///
/// Build one with [`ConnectorError::retryable`], [`ConnectorError::invalid_data`],
/// [`ConnectorError::fatal`] or [`ConnectorError::config`]. A
/// [`serde_json::Error`] converts into [`ConnectorError::InvalidData`], so `?`
/// on a payload that does not parse sends that record to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorError {
    /// Temporary (network, rate limit, the external system is restarting): the
    /// host retries the same call with exponential backoff.
    Retryable(String),
    /// This data can never be processed: the host sends the record to the
    /// dead-letter topic and goes on.
    InvalidData(String),
    /// Unrecoverable: the host drains, closes the connector and exits non-zero.
    Fatal(String),
    /// The connector's configuration is wrong: reported at start, the host
    /// exits with its configuration-error code.
    Config(String),
}

impl ConnectorError {
    /// A temporary failure; the host retries with backoff.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }

    /// Data that can never be processed; it goes to the dead-letter topic.
    pub fn invalid_data(message: impl fmt::Display) -> Self {
        Self::InvalidData(message.to_string())
    }

    /// An unrecoverable failure; the host stops the connector.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self::Fatal(message.to_string())
    }

    /// A configuration error; the host reports it and exits.
    pub fn config(message: impl fmt::Display) -> Self {
        Self::Config(message.to_string())
    }

    /// The message, without the class.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(m) | Self::InvalidData(m) | Self::Fatal(m) | Self::Config(m) => m,
        }
    }

    /// The class as the WIT names it: `retryable`, `invalid-data`, `fatal` or
    /// `config`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Retryable(_) => "retryable",
            Self::InvalidData(_) => "invalid-data",
            Self::Fatal(_) => "fatal",
            Self::Config(_) => "config",
        }
    }

    /// Whether the host retries this error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class(), self.message())
    }
}

impl std::error::Error for ConnectorError {}

/// A payload or value that is not valid JSON (or not of the expected shape)
/// is invalid data.
impl From<serde_json::Error> for ConnectorError {
    fn from(e: serde_json::Error) -> Self {
        Self::InvalidData(e.to_string())
    }
}

/// A payload that is not UTF-8 text is invalid data.
impl From<std::str::Utf8Error> for ConnectorError {
    fn from(e: std::str::Utf8Error) -> Self {
        Self::InvalidData(format!("payload is not UTF-8: {e}"))
    }
}

/// One record of a batch that a sink could not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Index of the record in the batch passed to `process_batch`.
    pub index: u32,
    /// Why it failed; [`ConnectorError::InvalidData`] sends it to the
    /// dead-letter topic.
    pub error: ConnectorError,
}

/// The per-record result of one sink batch: which records failed and why.
/// Records not listed were written and are acknowledged by the host.
///
/// ```
/// use danube_connect_sdk::{BatchOutcome, ConnectorError};
///
/// let mut outcome = BatchOutcome::new();
/// outcome.fail(2, ConnectorError::invalid_data("missing field `id`"));
/// let written: Result<(), ConnectorError> = Err(ConnectorError::invalid_data("bad"));
/// outcome.record(3, written);
/// outcome.record(4, Ok(()));
/// assert_eq!(outcome.failures().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    failures: Vec<RecordFailure>,
}

impl BatchOutcome {
    /// An outcome in which every record was written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Same as [`BatchOutcome::new`]: every record was written.
    pub fn all_ok() -> Self {
        Self::default()
    }

    /// Marks the record at `index` as failed.
    pub fn fail(&mut self, index: usize, error: ConnectorError) {
        self.failures.push(RecordFailure {
            index: index as u32,
            error,
        });
    }

    /// Records the result of writing the record at `index`: an `Err` marks it
    /// failed, `Ok` does nothing.
    pub fn record<T>(&mut self, index: usize, result: Result<T, ConnectorError>) {
        if let Err(e) = result {
            self.fail(index, e);
        }
    }

    /// Builds an outcome from one result per record, in batch order.
    pub fn from_results<T>(results: impl IntoIterator<Item = Result<T, ConnectorError>>) -> Self {
        let mut outcome = Self::new();
        for (index, result) in results.into_iter().enumerate() {
            outcome.record(index, result);
        }
        outcome
    }

    /// Whether no record failed.
    pub fn is_all_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failed records.
    pub fn failures(&self) -> &[RecordFailure] {
        &self.failures
    }

    /// The failed records, by value.
    pub fn into_failures(self) -> Vec<RecordFailure> {
        self.failures
    }
}

impl From<Vec<RecordFailure>> for BatchOutcome {
    fn from(failures: Vec<RecordFailure>) -> Self {
        Self { failures }
    }
}
