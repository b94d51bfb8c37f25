//! The `metrics` import: counters and gauges the connector defines, exported
//! by the supervisor beside its own (`observability/guest.rs` keeps them and
//! bounds how many).
//!
//! Names and labels are bounded in the worker before they reach the
//! supervisor, which refuses (and remembers refusing) names longer than it
//! exports anyway. Updates are sent without waiting: a lost one is a lost
//! sample.

use wasmtime::component::HasData;

use super::{ImportRequest, SupervisorLink};
use crate::bindings::metrics::Host;
use crate::guest_text::{self, one_line, one_line_pairs};

/// A connector-defined metric update.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
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

/// What `metrics` works on: the link to the supervisor.
pub struct MetricsView<'a> {
    pub link: &'a mut SupervisorLink,
}

pub struct HasLink;

impl HasData for HasLink {
    type Data<'a> = MetricsView<'a>;
}

impl Host for MetricsView<'_> {
    fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) {
        self.link
            .notify(ImportRequest::Metric(GuestMetric::Counter {
                name: one_line(name, guest_text::NAME),
                value,
                labels: one_line_pairs(labels),
            }));
    }

    fn gauge_set(&mut self, name: String, value: f64, labels: Vec<(String, String)>) {
        self.link.notify(ImportRequest::Metric(GuestMetric::Gauge {
            name: one_line(name, guest_text::NAME),
            value,
            labels: one_line_pairs(labels),
        }));
    }
}
