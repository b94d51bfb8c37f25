//! The host's own metrics, in one registry shared with the guests' metrics and
//! the process collector.

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Error classes of the connector contract, exported at 0 from the start so
/// that `rate()` and alerts see the series before the first error.
const ERROR_CLASSES: [&str; 4] = ["retryable", "invalid_data", "fatal", "config"];

/// Guest call durations, seconds: sub-millisecond polls to slow writes.
const CALL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Records per poll or per batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

pub struct HostMetrics {
    pub registry: Registry,
    pub received: IntCounterVec,
    pub sent: IntCounterVec,
    pub errors: IntCounterVec,
    pub call_duration: HistogramVec,
    pub batch_size: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub dead_lettered: IntCounterVec,
    pub restarts: IntCounterVec,
    pub retries: IntCounterVec,
    pub memory: IntGaugeVec,
    pub broker_skipped: IntCounterVec,
    pub stalled: IntGaugeVec,
    pub paused: IntGaugeVec,
}

/// A connector's counters, for the management API and `danube-host top`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    pub errors: u64,
    pub dead_lettered: u64,
    pub worker_restarts: u64,
    pub in_flight: u64,
}

/// The series of one connector that have no other label.
pub struct ConnectorSeries {
    pub batch_size: prometheus::Histogram,
    pub in_flight: prometheus::IntGauge,
    pub restarts: prometheus::IntCounter,
    pub memory: prometheus::IntGauge,
    pub stalled: prometheus::IntGauge,
    pub paused: prometheus::IntGauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("the host's metric names are distinct and valid");
    c
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric"),
    )
}

impl HostMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %e, "process metrics are not available");
        }
        HostMetrics {
            received: counter(
                &r,
                "connector_messages_received_total",
                "Source: records polled from the connector. Sink: messages consumed from Danube.",
                &["connector", "topic"],
            ),
            sent: counter(
                &r,
                "connector_messages_sent_total",
                "Source: records acknowledged by Danube. Sink: records the connector wrote.",
                &["connector", "topic"],
            ),
            errors: counter(
                &r,
                "connector_errors_total",
                "Errors by class (retryable, invalid_data, fatal, config, or a host-side class).",
                &["connector", "class"],
            ),
            call_duration: histogram(
                &r,
                "connector_processing_duration_seconds",
                "Duration of calls into the connector, by call.",
                CALL_BUCKETS,
                &["connector", "call"],
            ),
            batch_size: histogram(
                &r,
                "connector_batch_size",
                "Records per poll (source) or per process-batch (sink).",
                BATCH_BUCKETS,
                &["connector"],
            ),
            in_flight: gauge(
                &r,
                "connector_in_flight_records",
                "Records taken in and not yet acknowledged.",
                &["connector"],
            ),
            dead_lettered: counter(
                &r,
                "connector_dead_lettered_total",
                "Records sent to the dead-letter topic, by the topic they came from.",
                &["connector", "topic"],
            ),
            restarts: counter(
                &r,
                "connector_worker_restarts_total",
                "Restarts of the connector's worker process.",
                &["connector"],
            ),
            retries: counter(
                &r,
                "connector_retries_total",
                "Retried operations, by operation.",
                &["connector", "operation"],
            ),
            memory: gauge(
                &r,
                "connector_memory_bytes",
                "Linear memory of the connector's WebAssembly instance.",
                &["connector"],
            ),
            broker_skipped: counter(
                &r,
                "connector_broker_skipped_total",
                "Sink: offsets of a topic the broker skipped for the connector's subscription (never delivered), by topic.",
                &["connector", "topic"],
            ),
            stalled: gauge(
                &r,
                "connector_stalled_subscriptions",
                "Sink: topics (partitions) the broker reports behind that deliver nothing.",
                &["connector"],
            ),
            paused: gauge(
                &r,
                "connector_paused",
                "1 while the connector is paused through the management API.",
                &["connector"],
            ),
            registry: r,
        }
    }

    /// Creates (or finds) a connector's series, so that they are exported at
    /// 0 from the start.
    pub fn for_connector(&self, name: &str) -> ConnectorSeries {
        for class in ERROR_CLASSES {
            self.errors.with_label_values(&[name, class]);
        }
        ConnectorSeries {
            batch_size: self.batch_size.with_label_values(&[name]),
            in_flight: self.in_flight.with_label_values(&[name]),
            restarts: self.restarts.with_label_values(&[name]),
            memory: self.memory.with_label_values(&[name]),
            stalled: self.stalled.with_label_values(&[name]),
            paused: self.paused.with_label_values(&[name]),
        }
    }

    /// Removes every series of the connector `name`.
    pub fn forget(&self, name: &str) {
        remove_connector(&self.received, name);
        remove_connector(&self.sent, name);
        remove_connector(&self.errors, name);
        remove_connector(&self.call_duration, name);
        remove_connector(&self.batch_size, name);
        remove_connector(&self.in_flight, name);
        remove_connector(&self.dead_lettered, name);
        remove_connector(&self.restarts, name);
        remove_connector(&self.retries, name);
        remove_connector(&self.memory, name);
        remove_connector(&self.broker_skipped, name);
        remove_connector(&self.stalled, name);
        remove_connector(&self.paused, name);
    }

    /// Connector `name`'s counters, summed over their other labels.
    pub fn counters(&self, name: &str) -> Counters {
        let of = |vec: &IntCounterVec| -> u64 {
            let mut sum = 0;
            for family in vec.collect() {
                for m in family.get_metric() {
                    if m.get_label()
                        .iter()
                        .any(|l| l.name() == "connector" && l.value() == name)
                    {
                        sum += m.get_counter().get_value() as u64;
                    }
                }
            }
            sum
        };
        let gauge = |vec: &IntGaugeVec| {
            vec.get_metric_with_label_values(&[name])
                .map_or(0, |g| g.get())
        };
        Counters {
            received: of(&self.received),
            sent: of(&self.sent),
            errors: of(&self.errors),
            dead_lettered: of(&self.dead_lettered),
            worker_restarts: of(&self.restarts),
            in_flight: u64::try_from(gauge(&self.in_flight)).unwrap_or(0),
        }
    }

    /// The Prometheus text exposition of the registry.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Removes the series of `vec` whose `connector` label is `name`, whatever
/// its other labels.
fn remove_connector<T: MetricVecBuilder>(vec: &MetricVec<T>, name: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            if labels.get("connector") == Some(&name) {
                let _ = vec.remove(&labels);
            }
        }
    }
}
