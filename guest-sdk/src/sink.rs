//! The trait a sink connector implements.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, SinkRecord};

/// A sink receives batches consumed from Danube and writes them to an
/// external system.
///
/// Export the implementing type with [`export_sink!`](crate::export_sink).
pub trait Sink: Sized + 'static {
    /// The connector's configuration table (see [`Source::Config`](crate::Source::Config)).
    type Config: DeserializeOwned + JsonSchema;

    /// Describes the connector for `danube-host inspect`; called without
    /// `open`. Empty fields are filled from the connector crate's
    /// `Cargo.toml`.
    fn describe() -> ConnectorInfo {
        ConnectorInfo::default()
    }

    /// Starts the connector and returns it with the topics it consumes.
    fn open(config: Self::Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError>;

    /// Writes a batch. Return the records that could not be written in the
    /// [`BatchOutcome`] (`BatchOutcome::all_ok()` when all were written): the
    /// host acknowledges the rest, and sends records failed with
    /// [`ConnectorError::InvalidData`] to the dead-letter topic.
    ///
    /// An `Err` applies to the whole batch: a retryable error makes the host
    /// retry the batch with backoff, a fatal one stops the connector. Records
    /// may be redelivered: write idempotently where the system allows.
    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError>;

    /// The host found the connector idle: no batch for `[processing]
    /// idle_tick_ms` (1 s by default; the host hands it an empty batch).
    /// A connector that gathers records across batches writes what has
    /// waited long enough; an error is treated as a batch's. Does nothing
    /// by default.
    fn tick(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Whether the external system is reachable. `Ok` by default.
    fn health(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Stops the connector; no call follows. Does nothing by default.
    fn close(&mut self) {}
}
