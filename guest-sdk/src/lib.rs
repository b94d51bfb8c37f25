//! Write [Danube](https://github.com/danube-messaging/danube) connectors in
//! Rust as WebAssembly components run by `danube-host`.
//!
//! A connector is a struct implementing [`Source`] (reads an external system,
//! hands records to the host, which publishes them) or [`Sink`] (receives
//! batches consumed from Danube and writes them out), plus one export macro.
//! The host owns the Danube clients, retries, dead-lettering, metrics and the
//! lifecycle; the connector owns only the external system.
//!
//! Build with `cargo build --release --target wasm32-wasip2`: the `.wasm`
//! file in `target/wasm32-wasip2/release/` is the component. No other tool is
//! needed.
//!
//! # A complete source
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "counter-source"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! danube-connect-sdk = { path = "../guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! schemars = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use std::time::Duration;
//!
//! use danube_connect_sdk::{
//!     ConnectorError, ConnectorInfo, Offset, ProducerConfig, Source, SourceRecord, info, state,
//! };
//!
//! /// The `[counter]` table of the host's config file. Its JSON Schema
//! /// (field types, these doc comments) goes to the host, which checks the
//! /// table with it and lists the keys in `danube-host inspect`.
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// The topic the counter is published to.
//!     topic: String,
//!     /// How much the counter grows per record.
//!     #[serde(default = "default_step")]
//!     step: u64,
//! }
//!
//! fn default_step() -> u64 {
//!     1
//! }
//!
//! struct Counter {
//!     topic: String,
//!     step: u64,
//!     next: u64,
//! }
//!
//! impl Source for Counter {
//!     type Config = Config;
//!
//!     fn describe() -> ConnectorInfo {
//!         ConnectorInfo::new(
//!             "Publishes a growing counter.",
//!             "[counter]\ntopic = \"/default/counter\"\nstep = 1\n",
//!         )
//!     }
//!
//!     fn open(config: Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError> {
//!         // Resume after the last value the broker acknowledged.
//!         let next = state::get_json::<u64>("committed")?.map_or(0, |c| c + 1);
//!         info!("counter starts at {next}");
//!         let producers = vec![ProducerConfig::new(&config.topic)];
//!         Ok((Counter { topic: config.topic, step: config.step, next }, producers))
//!     }
//!
//!     fn poll(&mut self, max: usize, _timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError> {
//!         let mut records = Vec::with_capacity(max);
//!         for _ in 0..max {
//!             let value = self.next * self.step;
//!             records.push(
//!                 SourceRecord::from_json(&self.topic, &serde_json::json!({ "value": value }))?
//!                     .with_offset("counter", self.next),
//!             );
//!             self.next += 1;
//!         }
//!         Ok(records)
//!     }
//!
//!     fn commit(&mut self, offsets: Vec<Offset>) -> Result<(), ConnectorError> {
//!         for offset in offsets {
//!             state::put_json("committed", &offset.position)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! danube_connect_sdk::export_source!(Counter);
//! # fn main() {}
//! ```
//!
//! A sink is the same shape with [`Sink`], [`SinkRecord`] accessors such as
//! [`SinkRecord::payload_json`], a [`BatchOutcome`] that lists the records
//! that failed, and [`export_sink!`].
//!
//! # Errors
//!
//! [`ConnectorError`] carries the class the host acts on: `retryable` (retry
//! with backoff), `invalid_data` (dead-letter this record), `fatal` (stop) and
//! `config` (report at start). A config table that does not deserialize into
//! `Config` becomes a `config` error naming the key.
//!
//! # Host services
//!
//! * [`log`]: `info!`, `warn!`, `error!`, `debug!`, `trace!` and [`log::log_with`]
//!   for structured fields.
//! * [`state`]: a small key-value store the host persists across restarts.
//! * [`metrics`]: counters and gauges exported beside the host's own.
//!
//! Outside WebAssembly these fall back to standard error, an in-memory map
//! and nothing, so a connector's logic can be unit-tested natively with
//! `cargo test`.

extern crate self as danube_connect_sdk;

mod bindings;
mod config;
mod error;
mod export;
mod ingress;
pub mod log;
pub mod metrics;
mod record;
mod sink;
mod source;
pub mod state;

pub use config::parse_config;
pub use error::{BatchOutcome, ConnectorError, RecordFailure};
pub use ingress::{HttpRequest, Ingress, IngressRoute, IngressSetup};
pub use record::{
    ConnectorInfo, ConsumerConfig, Offset, ProducerConfig, SchemaRef, SinkRecord, SourceRecord,
    SubscriptionType,
};
pub use schemars::{self, JsonSchema};
pub use sink::Sink;
pub use source::Source;

/// The WIT package version this SDK builds components for.
pub const WIT_PACKAGE: &str = "danube:connect@0.1.0";

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::described as described_bindings;
    pub use crate::bindings::described::exports::danube::connect::configuration::Guest as Configuration;
    pub use crate::bindings::ingress as ingress_bindings;
    pub use crate::bindings::ingress::danube::connect::types as ingress_types;
    pub use crate::bindings::ingress::exports::danube::connect::ingress_connector::Guest as IngressGuest;
    pub use crate::bindings::sink as sink_bindings;
    pub use crate::bindings::sink::danube::connect::types as sink_types;
    pub use crate::bindings::sink::exports::danube::connect::sink_connector::Guest as SinkGuest;
    pub use crate::bindings::source as source_bindings;
    pub use crate::bindings::source::danube::connect::types as source_types;
    pub use crate::bindings::source::exports::danube::connect::source_connector::Guest as SourceGuest;
    pub use crate::export::{
        config_schema, ingress_close, ingress_describe, ingress_handle, ingress_health,
        ingress_open, sink_close, sink_describe, sink_health, sink_open, sink_process_batch,
        source_close, source_commit, source_describe, source_health, source_open, source_poll,
    };
    pub use wit_bindgen;
}
