//! Observability: Prometheus metrics at `/metrics`, connector health at
//! `/health` and readiness at `/ready`, served over HTTP by one endpoint per
//! process.
//!
//! One [`Observability`] exists per process; every connector it runs gets a
//! [`ConnectorMetrics`] handle (cheap to clone) through which the pipelines
//! record what happens. In directory mode, one endpoint therefore serves every
//! connector, told apart by the `connector` label and by their entry in
//! `/health`.
//!
//! # Metrics
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `connector_messages_received_total` | counter | `connector`, `topic` |
//! | `connector_messages_sent_total` | counter | `connector`, `topic` |
//! | `connector_errors_total` | counter | `connector`, `class` |
//! | `connector_processing_duration_seconds` | histogram | `connector`, `call` |
//! | `connector_batch_size` | histogram | `connector` |
//! | `connector_in_flight_records` | gauge | `connector` |
//! | `connector_dead_lettered_total` | counter | `connector`, `topic` |
//! | `connector_worker_restarts_total` | counter | `connector` |
//! | `connector_retries_total` | counter | `connector`, `operation` |
//! | `connector_memory_bytes` | gauge | `connector` |
//! | `connector_broker_skipped_total` | counter | `connector`, `topic` |
//! | `connector_stalled_subscriptions` | gauge | `connector` |
//! | `connector_paused` | gauge | `connector` |
//! | `connector_guest_<name>` | counter or gauge | `connector` + the guest's |
//! | `process_*` | counters, gauges | none: CPU, memory, file descriptors, threads of the process (Linux) |
//!
//! What "received" and "sent" count depends on the direction:
//!
//! * source: *received* = records polled from the guest, *sent* = records the
//!   broker acknowledged; `topic` is the Danube topic published to.
//! * sink: *received* = messages consumed from Danube, *sent* = records the
//!   guest reported written (then acknowledged to the broker); `topic` is the
//!   Danube topic consumed from.
//!
//! `class` is [`ConnectorError::class`](crate::contract::ConnectorError::class)
//! (`retryable`, `invalid_data`, `fatal`, `config`, all exported from the
//! start at 0) or a host-side class such as `trap` or `danube`. `call` is the
//! guest call: `open`, `poll`, `commit`, `process_batch`, `health`, `close`.
//! `topic` of `connector_dead_lettered_total` is the topic the record came
//! from. `connector_memory_bytes` is the guest's linear memory.
//!
//! Connector-defined metrics (the guest's `metrics` import) are exported as
//! `connector_guest_<name>` (counters get a `_total` suffix), with the guest's
//! labels plus `connector`; see [`guest`] for what is refused.
//!
//! # Health
//!
//! `/health` answers `{"status": ..., "connectors": {name: {"status", "detail",
//! "since"}}}` with the worst status over the connectors, and HTTP 503 when it
//! is `unhealthy`. `/ready` answers 200 `{"ready":true}` once every connector
//! said it is ready, 503 `{"ready":false}` before (or when none is known).

mod guest;
mod health;
mod metrics;
mod server;
pub mod tap;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::capability::metrics::GuestMetric;

pub use health::{ConnectorHealth, RecentError, Status};
pub use metrics::Counters;
pub use server::ServerHandle;

/// The process's metrics registry and health board. Clones share them.
#[derive(Clone)]
pub struct Observability {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: metrics::HostMetrics,
    guest: guest::GuestMetrics,
    health: health::Board,
    taps: Mutex<HashMap<String, tap::Tap>>,
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    pub fn new() -> Self {
        let metrics = metrics::HostMetrics::new();
        let guest = guest::GuestMetrics::new(metrics.registry.clone());
        Observability {
            inner: Arc::new(Inner {
                metrics,
                guest,
                health: health::Board::default(),
                taps: Mutex::default(),
            }),
        }
    }

    /// The handle through which one connector records its metrics and health.
    /// Registers the connector on `/health` (healthy, "starting") and
    /// `/ready` (not ready) on first call; later calls with the same name
    /// share its state.
    pub fn connector(&self, name: &str) -> ConnectorMetrics {
        self.inner.health.register(name);
        ConnectorMetrics {
            name: Arc::from(name),
            fixed: Arc::new(self.inner.metrics.for_connector(name)),
            tap: self.tap(name),
            inner: self.inner.clone(),
        }
    }

    /// The record tap of connector `name` (see [`tap`]).
    pub fn tap(&self, name: &str) -> tap::Tap {
        let mut taps = self
            .inner
            .taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        taps.entry(name.to_string()).or_default().clone()
    }

    /// Drops a connector that no longer runs from `/health`, `/ready` and
    /// `/metrics`, so that a directory whose connectors come and go does not
    /// export their series for ever. Started again under the same name, its
    /// counters start again from 0, as after a restart.
    pub fn forget(&self, name: &str) {
        self.inner.health.remove(name);
        self.inner.metrics.forget(name);
        self.inner.guest.forget(name);
        let mut taps = self
            .inner
            .taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        taps.remove(name);
    }

    /// Binds `addr` and serves `/metrics`, `/health` and `/ready` until the
    /// returned handle is stopped or dropped. Port 0 picks a free port; the
    /// handle tells which.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        api: Option<axum::Router>,
    ) -> anyhow::Result<ServerHandle> {
        server::serve(self.clone(), addr, api).await
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render()
    }

    /// Connector `name`'s entry on `/health`.
    pub fn connector_health(&self, name: &str) -> Option<ConnectorHealth> {
        self.inner.health.connector(name)
    }

    /// The last times connector `name` turned worse than healthy.
    pub fn recent_errors(&self, name: &str) -> Vec<RecentError> {
        self.inner.health.recent(name)
    }

    /// Connector `name`'s counters.
    pub fn counters(&self, name: &str) -> Counters {
        self.inner.metrics.counters(name)
    }

    /// The `/health` document and whether it is unhealthy.
    fn health(&self) -> health::Report {
        self.inner.health.report()
    }

    fn ready(&self) -> bool {
        self.inner.health.ready()
    }
}

/// One connector's view: metrics carry its `connector` label, health and
/// readiness are its entry on `/health` and `/ready`. Clones share it.
#[derive(Clone)]
pub struct ConnectorMetrics {
    name: Arc<str>,
    fixed: Arc<metrics::ConnectorSeries>,
    tap: tap::Tap,
    inner: Arc<Inner>,
}

impl ConnectorMetrics {
    /// Hands the connector's tap a record, made by `record` only while
    /// somebody listens.
    pub fn tap(&self, record: impl FnOnce() -> tap::TappedRecord) {
        if self.tap.listened() {
            self.tap.send(record());
        }
    }

    /// Source: records polled from the guest for `topic`. Sink: messages
    /// consumed from `topic`. `n = 0` only makes the series appear.
    pub fn received(&self, topic: &str, n: u64) {
        self.inner
            .metrics
            .received
            .with_label_values(&[&self.name, topic])
            .inc_by(n);
    }

    /// Source: records on `topic` acknowledged by the broker. Sink: records
    /// from `topic` the guest reported written.
    pub fn sent(&self, topic: &str, n: u64) {
        self.inner
            .metrics
            .sent
            .with_label_values(&[&self.name, topic])
            .inc_by(n);
    }

    /// One error of `class` (see [`ConnectorError::class`](crate::contract::ConnectorError::class)).
    pub fn error(&self, class: &str) {
        self.inner
            .metrics
            .errors
            .with_label_values(&[&self.name, class])
            .inc();
    }

    /// Records from `topic` sent to the dead-letter topic.
    pub fn dead_lettered(&self, topic: &str, n: u64) {
        self.inner
            .metrics
            .dead_lettered
            .with_label_values(&[&self.name, topic])
            .inc_by(n);
    }

    /// One retry of `operation` (e.g. `poll`, `process_batch`, `publish`, `ack`).
    pub fn retry(&self, operation: &str) {
        self.inner
            .metrics
            .retries
            .with_label_values(&[&self.name, operation])
            .inc();
    }

    pub fn worker_restarted(&self) {
        self.fixed.restarts.inc();
    }

    /// How long one guest call of `kind` took (`open`, `poll`, `commit`,
    /// `process_batch`, `health`, `close`).
    pub fn observe_call(&self, kind: &str, took: Duration) {
        self.inner
            .metrics
            .call_duration
            .with_label_values(&[&self.name, kind])
            .observe(took.as_secs_f64());
    }

    /// Records in one poll (source) or one `process-batch` (sink).
    pub fn batch_size(&self, n: usize) {
        self.fixed.batch_size.observe(n as f64);
    }

    /// Source: published, not yet acknowledged. Sink: consumed, not yet
    /// acknowledged.
    pub fn set_in_flight(&self, n: usize) {
        self.fixed
            .in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sink: offsets of `topic` the broker skipped for the subscription.
    pub fn broker_skipped(&self, topic: &str, n: u64) {
        self.inner
            .metrics
            .broker_skipped
            .with_label_values(&[&self.name, topic])
            .inc_by(n);
    }

    /// Sink: one more (`+1`) or one fewer (`-1`) stalled partition.
    pub fn add_stalled(&self, change: i64) {
        self.fixed.stalled.add(change);
    }

    /// The guest's linear memory.
    pub fn set_guest_memory(&self, bytes: u64) {
        self.fixed
            .memory
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A connector-defined metric update from the guest. Refused ones are
    /// logged (once per name) and dropped.
    pub fn guest_metric(&self, metric: GuestMetric) {
        self.inner.guest.record(&self.name, metric);
    }

    /// The connector's state on `/health`. `since` changes only when the
    /// status does.
    pub fn set_health(&self, status: Status, detail: impl Into<String>) {
        self.inner.health.set(&self.name, status, detail.into());
    }

    /// Raises a lasting condition on `/health` under `key` (a topic waited
    /// for, a stalled subscription) until [`clear_condition`](Self::clear_condition):
    /// the connector's status is the worst of its conditions and of
    /// [`set_health`](Self::set_health)'s, and its detail lists them all.
    pub fn raise_condition(&self, key: &str, status: Status, detail: impl Into<String>) {
        self.inner
            .health
            .set_condition(&self.name, key, Some((status, detail.into())));
    }

    pub fn clear_condition(&self, key: &str) {
        self.inner.health.set_condition(&self.name, key, None);
    }

    /// Paused through the management API (or resumed): on `/metrics` and,
    /// as a condition, on `/health`.
    pub fn set_paused(&self, paused: bool) {
        self.fixed.paused.set(i64::from(paused));
        match paused {
            true => self.raise_condition(
                "paused",
                Status::Healthy,
                "paused through the management API",
            ),
            false => self.clear_condition("paused"),
        }
    }

    /// Whether the connector opened and its producers or consumers exist.
    pub fn set_ready(&self, ready: bool) {
        self.inner.health.set_ready(&self.name, ready);
    }
}

#[cfg(test)]
mod tests;
