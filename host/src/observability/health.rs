//! Per-connector health and readiness, and the documents of `/health` and
//! `/ready`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A connector's health. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Running as it should.
    Healthy,
    /// Running, but retrying, restarting its worker, unable to reach the
    /// broker, or its `health()` fails.
    Degraded,
    /// Gave up: a fatal error, a trap, retries spent.
    Unhealthy,
}

/// One connector on `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorHealth {
    pub status: Status,
    pub detail: String,
    /// When `status` last changed, RFC 3339 UTC.
    pub since: String,
    #[serde(skip)]
    pub ready: bool,
    /// What the pipeline last said (`running`, `retrying ...`); `status` and
    /// `detail` add the conditions to it.
    #[serde(skip)]
    own: (Status, String),
    /// Lasting states raised and cleared by name (a topic waited for, a
    /// stalled subscription), which the pipeline's own updates do not
    /// overwrite: "subscribed to /a" must not hide "waiting for /b".
    #[serde(skip)]
    conditions: BTreeMap<String, (Status, String)>,
    /// The last times it turned worse than healthy, newest last.
    #[serde(skip)]
    recent: VecDeque<RecentError>,
}

/// A time a connector turned worse than healthy.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    pub at: String,
    pub status: Status,
    pub detail: String,
}

/// How many [`RecentError`]s a connector keeps.
const RECENT: usize = 10;

impl ConnectorHealth {
    fn new(status: Status, detail: String) -> ConnectorHealth {
        ConnectorHealth {
            status,
            detail: detail.clone(),
            since: now_rfc3339(),
            ready: false,
            own: (status, detail),
            conditions: BTreeMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Derives `status` (the worst of the pipeline's and the conditions')
    /// and `detail` (the conditions' details, worst first, after the
    /// pipeline's when it is not healthy) after a change.
    fn settle(&mut self, name: &str) {
        let mut parts: Vec<&(Status, String)> = self.conditions.values().collect();
        parts.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
        let status = parts
            .first()
            .map_or(self.own.0, |(s, _)| (*s).max(self.own.0));
        let mut details: Vec<&str> = Vec::new();
        if self.own.0 != Status::Healthy || parts.is_empty() {
            details.push(&self.own.1);
        }
        details.extend(parts.iter().map(|(_, d)| d.as_str()));
        let detail = details.join("; ");
        if self.status != status {
            tracing::info!(connector = name, from = ?self.status, to = ?status, detail = %detail, "health changed");
            self.status = status;
            self.since = now_rfc3339();
        }
        if status != Status::Healthy && detail != self.detail {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(RecentError {
                at: now_rfc3339(),
                status,
                detail: detail.clone(),
            });
        }
        self.detail = detail;
    }
}

/// The `/health` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst status over the connectors (`healthy` when there is none).
    pub status: Status,
    pub connectors: BTreeMap<String, ConnectorHealth>,
}

#[derive(Default)]
pub struct Board {
    connectors: Mutex<BTreeMap<String, ConnectorHealth>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ConnectorHealth>> {
        self.connectors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connector (healthy, "starting", not ready) unless known.
    pub fn register(&self, name: &str) {
        self.lock()
            .entry(name.to_string())
            .or_insert_with(|| ConnectorHealth::new(Status::Healthy, "starting".into()));
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The pipeline's own state of the connector.
    pub fn set(&self, name: &str, status: Status, detail: String) {
        let mut connectors = self.lock();
        let entry = connectors
            .entry(name.to_string())
            .or_insert_with(|| ConnectorHealth::new(status, String::new()));
        entry.own = (status, detail);
        entry.settle(name);
    }

    /// Raises (`Some`) or clears (`None`) the condition `key` of a connector.
    pub fn set_condition(&self, name: &str, key: &str, state: Option<(Status, String)>) {
        let mut connectors = self.lock();
        let Some(entry) = connectors.get_mut(name) else {
            return;
        };
        let changed = match state {
            Some(state) => entry.conditions.insert(key.to_string(), state.clone()) != Some(state),
            None => entry.conditions.remove(key).is_some(),
        };
        if changed {
            entry.settle(name);
        }
    }

    pub fn set_ready(&self, name: &str, ready: bool) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.ready = ready;
        }
    }

    /// One connector's entry.
    pub fn connector(&self, name: &str) -> Option<ConnectorHealth> {
        self.lock().get(name).cloned()
    }

    pub fn recent(&self, name: &str) -> Vec<RecentError> {
        self.lock()
            .get(name)
            .map(|c| c.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn report(&self) -> Report {
        let connectors = self.lock().clone();
        let status = connectors
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Healthy);
        Report { status, connectors }
    }

    /// Every connector is ready, and there is at least one.
    pub fn ready(&self) -> bool {
        let connectors = self.lock();
        !connectors.is_empty() && connectors.values().all(|c| c.ready)
    }
}

#[cfg(test)]
impl Board {
    pub fn set_since_for_test(&self, name: &str, since: &str) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.since = since.into();
        }
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// `2024-05-01T12:00:00Z` for seconds since the Unix epoch.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}
