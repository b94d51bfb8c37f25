//! Connector-defined metrics: the guest's `counter-add` and `gauge-set`,
//! exported as `connector_guest_<name>` with the guest's labels plus
//! `connector`.
//!
//! The guest is untrusted, so its metrics are checked, never trusted:
//!
//! * names: characters other than ASCII letters, digits and `_` become `_`
//!   (`rows.written` → `connector_guest_rows_written`); counters get a
//!   `_total` suffix unless they have one. Refused: empty, longer than
//!   [`MAX_NAME`], or without a letter or digit.
//! * label names: sanitized the same way (a leading digit gets a `_` in
//!   front). Refused: empty, starting with `__` (reserved), `connector`
//!   (the host's), twice in one update, more than [`MAX_LABELS`].
//! * label values: any text up to [`MAX_VALUE`] bytes.
//! * one name is one metric: an update whose kind (counter or gauge) or label
//!   names differ from the first one seen under that name (`_total` aside),
//!   from any connector, is refused.
//! * at most [`MAX_SERIES`] series per connector; updates creating more are
//!   refused.
//!
//! A refused update is dropped with a warning, once per connector and name.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use crate::capability::metrics::GuestMetric;

pub const PREFIX: &str = "connector_guest_";
pub const MAX_NAME: usize = 100;
pub const MAX_LABELS: usize = 8;
pub const MAX_VALUE: usize = 256;
pub const MAX_SERIES: usize = 500;
/// Distinct refusals logged per process; later ones are dropped silently.
const MAX_WARNINGS: usize = 1000;

pub struct GuestMetrics {
    registry: Registry,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By exported name without a `_total` suffix, so that a counter `x`
    /// and a gauge `x` or `x_total` are one name (as in OpenMetrics).
    families: HashMap<String, Family>,
    /// Per connector, its series: (exported name, label values).
    series: HashMap<String, HashSet<(String, Vec<String>)>>,
    /// (connector, name as the guest wrote it) already warned about.
    warned: HashSet<(String, String)>,
}

struct Family {
    /// As exported.
    name: String,
    /// The guest's label names, sorted (`connector` comes first on export).
    labels: Vec<String>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Counter(IntCounterVec),
    Gauge(GaugeVec),
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Counter(_) => "counter",
            Kind::Gauge(_) => "gauge",
        }
    }
}

/// What one update does once accepted.
#[derive(Clone, Copy)]
enum Update {
    Add(u64),
    Set(f64),
}

impl Update {
    fn describe(self) -> &'static str {
        match self {
            Update::Add(_) => "counter",
            Update::Set(_) => "gauge",
        }
    }
}

impl GuestMetrics {
    pub fn new(registry: Registry) -> Self {
        GuestMetrics {
            registry,
            state: Mutex::new(State::default()),
        }
    }

    /// Applies one update from `connector`'s guest, or logs why not.
    pub fn record(&self, connector: &str, metric: GuestMetric) {
        let (raw_name, labels, update) = match metric {
            GuestMetric::Counter {
                name,
                value,
                labels,
            } => (name, labels, Update::Add(value)),
            GuestMetric::Gauge {
                name,
                value,
                labels,
            } => (name, labels, Update::Set(value)),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(why) = self.apply(&mut state, connector, &raw_name, labels, update) {
            let first = state.warned.len() < MAX_WARNINGS
                && state.warned.insert((connector.to_string(), raw_name));
            drop(state);
            if first {
                tracing::warn!(connector, error = %why, "connector metric refused (logged once per name)");
            }
        }
    }

    /// Removes every series of the connector `name`.
    pub fn forget(&self, name: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (series_name, values) in state.series.remove(name).unwrap_or_default() {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let _ = match state
                .families
                .get(family_key(&series_name))
                .map(|f| &f.kind)
            {
                Some(Kind::Counter(c)) => c.remove_label_values(&values),
                Some(Kind::Gauge(g)) => g.remove_label_values(&values),
                None => Ok(()),
            };
        }
        state.warned.retain(|(connector, _)| connector != name);
    }

    fn apply(
        &self,
        state: &mut State,
        connector: &str,
        raw_name: &str,
        labels: Vec<(String, String)>,
        update: Update,
    ) -> Result<(), String> {
        let name = exported_name(raw_name, matches!(update, Update::Add(_)))?;
        let labels = checked_labels(labels)?;
        let names: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
        let mut values = Vec::with_capacity(labels.len() + 1);
        values.push(connector.to_string());
        values.extend(labels.into_iter().map(|(_, v)| v));

        if let Some(family) = state.families.get(family_key(&name)) {
            if family.kind.describe() != update.describe() || family.name != name {
                return Err(format!(
                    "{name} ({}) conflicts with the {} {}",
                    update.describe(),
                    family.kind.describe(),
                    family.name
                ));
            }
            if family.labels != names {
                return Err(format!(
                    "{name} already has the labels [{}], not [{}]",
                    family.labels.join(", "),
                    names.join(", ")
                ));
            }
        }
        let series = state.series.entry(connector.to_string()).or_default();
        let key = (name.clone(), values);
        if !series.contains(&key) && series.len() >= MAX_SERIES {
            return Err(format!(
                "{name}: the connector already has {MAX_SERIES} series"
            ));
        }
        let kind = match state.families.get(family_key(&name)) {
            Some(family) => family.kind.clone(),
            None => {
                let kind = self.create(&name, &names, update)?;
                state.families.insert(
                    family_key(&name).to_string(),
                    Family {
                        name: name.clone(),
                        labels: names,
                        kind: kind.clone(),
                    },
                );
                kind
            }
        };
        let values: Vec<&str> = key.1.iter().map(String::as_str).collect();
        match (kind, update) {
            (Kind::Counter(c), Update::Add(v)) => c
                .get_metric_with_label_values(&values)
                .map_err(|e| format!("{name}: {e}"))?
                .inc_by(v),
            (Kind::Gauge(g), Update::Set(v)) => g
                .get_metric_with_label_values(&values)
                .map_err(|e| format!("{name}: {e}"))?
                .set(v),
            _ => unreachable!("kinds were compared above"),
        }
        state
            .series
            .entry(connector.to_string())
            .or_default()
            .insert(key);
        Ok(())
    }

    fn create(&self, name: &str, labels: &[String], update: Update) -> Result<Kind, String> {
        let mut all: Vec<&str> = vec!["connector"];
        all.extend(labels.iter().map(String::as_str));
        let opts = Opts::new(name, "Defined by the connector.");
        let kind = match update {
            Update::Add(_) => IntCounterVec::new(opts, &all).map(Kind::Counter),
            Update::Set(_) => GaugeVec::new(opts, &all).map(Kind::Gauge),
        }
        .map_err(|e| format!("{name}: {e}"))?;
        let collector: Box<dyn prometheus::core::Collector> = match &kind {
            Kind::Counter(c) => Box::new(c.clone()),
            Kind::Gauge(g) => Box::new(g.clone()),
        };
        self.registry
            .register(collector)
            .map_err(|e| format!("{name} conflicts with another metric: {e}"))?;
        Ok(kind)
    }
}

fn family_key(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Replaces every character Prometheus does not allow in a name by `_`.
fn sanitize(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `connector_guest_<sanitized>`, plus `_total` for a counter.
pub fn exported_name(raw: &str, counter: bool) -> Result<String, String> {
    let name = sanitize(raw);
    if name.is_empty() {
        return Err("a metric needs a name".into());
    }
    if raw.len() > MAX_NAME {
        return Err(format!(
            "metric name {raw:?} is longer than {MAX_NAME} bytes"
        ));
    }
    if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("metric name {raw:?} has no letter or digit"));
    }
    let mut name = format!("{PREFIX}{name}");
    if counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    Ok(name)
}

/// The guest's labels, sanitized and sorted by name.
fn checked_labels(labels: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels, at most {MAX_LABELS} are allowed",
            labels.len()
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(labels.len());
    for (raw, value) in labels {
        let mut name = sanitize(&raw);
        if name.is_empty() {
            return Err("a label needs a name".into());
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if name.starts_with("__") {
            return Err(format!(
                "label {raw:?}: names starting with __ are reserved"
            ));
        }
        if name == "connector" {
            return Err("label \"connector\" is set by the host".into());
        }
        if value.len() > MAX_VALUE {
            return Err(format!(
                "label {raw:?}: value longer than {MAX_VALUE} bytes"
            ));
        }
        if out.iter().any(|(k, _)| *k == name) {
            return Err(format!("label {name:?} given twice"));
        }
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
