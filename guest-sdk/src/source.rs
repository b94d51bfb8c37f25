//! The trait a source connector implements.

use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{ConnectorError, ConnectorInfo, Offset, ProducerConfig, SourceRecord};

/// A source reads an external system and hands records to the host, which
/// publishes them to Danube.
///
/// Export the implementing type with [`export_source!`](crate::export_source).
/// The host calls `open` once, then `poll` and `commit` as records flow, and
/// finally `close`. One instance lives for the life of the component.
pub trait Source: Sized + 'static {
    /// The connector's configuration table, deserialized from the table the
    /// host hands over. Use `#[serde(default)]` for optional keys and
    /// `#[serde(deny_unknown_fields)]` so that typos are reported.
    ///
    /// Its [`JsonSchema`] (`#[derive(schemars::JsonSchema)]`, with a doc
    /// comment on each field) is exported to the host, which checks the
    /// table's keys and values with it before `open` (`danube-host
    /// validate` too), types environment overrides by it and lists the keys
    /// in `danube-host inspect`.
    type Config: DeserializeOwned + JsonSchema;

    /// Describes the connector for `danube-host inspect`; called without
    /// `open`. Empty fields are filled from the connector crate's
    /// `Cargo.toml` (name, version, description).
    fn describe() -> ConnectorInfo {
        ConnectorInfo::default()
    }

    /// Starts the connector and returns it with the topics it publishes to.
    /// Records may only name these topics.
    fn open(config: Self::Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError>;

    /// Returns up to `max` records, waiting up to `timeout` for the first one.
    /// An empty list means nothing arrived in time. Blocking on the
    /// connector's own sockets here is fine.
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError>;

    /// The broker has acknowledged every record up to and including these
    /// offsets (at most one per stream): acknowledge them upstream or store
    /// them with [`state`](crate::state). Does nothing by default.
    fn commit(&mut self, offsets: Vec<Offset>) -> Result<(), ConnectorError> {
        let _ = offsets;
        Ok(())
    }

    /// Whether the external system is reachable; an error marks the connector
    /// degraded. `Ok` by default.
    fn health(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Stops the connector; no call follows. Does nothing by default (the
    /// instance is dropped afterwards).
    fn close(&mut self) {}
}
