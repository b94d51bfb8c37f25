//! Watching a sink's subscriptions for messages the broker does not deliver.
//!
//! Danube (v0.15) skips messages of a reliable subscription for good when its
//! dispatcher falls more than its live channel (256 messages) behind the
//! producers: the broker only logs `poll_next error ... channel lagged`, the
//! client reports nothing, and the subscription's cursor never moves past the
//! first hole again. A sink would go on looking healthy with records missing.
//! The host notices two ways, per topic (partition) of a subscription:
//!
//! * **gaps**: for the only consumer of a reliable subscription, offsets of a
//!   partition go up by one per message (redeliveries repeat lower ones); a
//!   jump means the broker skipped what lies between.
//! * **stalls**: the broker's exporter reports the subscription behind
//!   (`danube_subscription_lag_messages` > 0) while nothing arrived from that
//!   partition and nothing from it is in hand for `stall_timeout`.
//!
//! Whether a gap is a loss depends on what only the broker knows: whether
//! the topic is reliable (only reliable subscriptions have a lag series) and
//! whether other consumers share the subscription and took those offsets
//! (`danube_subscription_active_consumers`). With `[broker] metrics_url` the
//! host tells; without it a gap is reported as what it may be.
//!
//! The exporter's text is read by hand: two gauges by two labels, from a
//! format whose parsing crates bring regular expressions and date handling
//! for timestamps the broker does not write.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::contract::{ConsumerConfig, SubscriptionType};
use crate::observability::{ConnectorMetrics, Status};

/// What one partition (or plain topic) of a subscription delivered.
#[derive(Debug)]
struct Partition {
    /// The offset expected next: one past the highest received, or 0 for a
    /// topic watched from its creation; `None` before the first message of
    /// a topic that existed already (a new subscription starts at its end).
    next_offset: Option<u64>,
    /// Nothing arrived yet.
    fresh: bool,
    /// When a message last arrived (or the watch began).
    last_arrival: Instant,
    /// Received and not yet acknowledged.
    in_hand: usize,
    /// The stall reported and not yet mended by an arrival.
    stalled: bool,
}

/// Offsets of `topic` that never reached this consumer: `first..=last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub first: u64,
    pub last: u64,
    /// Published to a topic the consumer waited for, before it subscribed.
    pub before_subscribing: bool,
}

impl Gap {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// A partition the broker reports behind while it delivers nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    /// Messages the broker counts as not acknowledged.
    pub lag: u64,
    /// It was reported stalled before and nothing arrived since: subscribing
    /// again did not help.
    pub again: bool,
}

impl Partition {
    fn new(next_offset: Option<u64>, now: Instant) -> Partition {
        Partition {
            next_offset,
            fresh: true,
            last_arrival: now,
            in_hand: 0,
            stalled: false,
        }
    }
}

/// The delivery state of one consumer's partitions.
#[derive(Debug, Default)]
pub struct DeliveryWatch {
    partitions: HashMap<String, Partition>,
}

impl DeliveryWatch {
    /// Starts (or, after subscribing again, continues) watching `topics`;
    /// partitions no longer covered are forgotten. `created` says the
    /// consumer waited for the topic to exist: its offsets start at 0.
    pub fn cover(&mut self, topics: &[String], created: bool, now: Instant) {
        self.partitions.retain(|t, _| topics.contains(t));
        for topic in topics {
            self.partitions
                .entry(topic.clone())
                .or_insert_with(|| Partition::new(created.then_some(0), now));
        }
    }

    /// A message arrived: the offsets it skipped, if any.
    pub fn delivered(&mut self, topic: &str, offset: u64, now: Instant) -> Option<Gap> {
        let partition = self
            .partitions
            .entry(topic.to_string())
            .or_insert_with(|| Partition::new(None, now));
        partition.last_arrival = now;
        partition.in_hand += 1;
        partition.stalled = false;
        let before_subscribing = std::mem::take(&mut partition.fresh);
        let gap = match partition.next_offset {
            Some(next) if offset > next => Some(Gap {
                topic: topic.to_string(),
                first: next,
                last: offset - 1,
                before_subscribing,
            }),
            _ => None,
        };
        if partition.next_offset.is_none_or(|next| offset >= next) {
            partition.next_offset = Some(offset + 1);
        }
        gap
    }

    /// A message of `topic` was acknowledged (or will be redelivered).
    pub fn settled(&mut self, topic: &str) {
        if let Some(partition) = self.partitions.get_mut(topic) {
            partition.in_hand = partition.in_hand.saturating_sub(1);
        }
    }

    /// The partitions the broker reports behind (`lag` of a topic, from its
    /// exporter) that delivered nothing for `timeout` and have nothing in
    /// hand. Each is marked, so that the next report says whether it lasted.
    pub fn stalls(
        &mut self,
        lag: impl Fn(&str) -> Option<u64>,
        timeout: Duration,
        now: Instant,
    ) -> Vec<Stall> {
        let mut stalls = Vec::new();
        for (topic, partition) in &mut self.partitions {
            let Some(behind) = lag(topic).filter(|&behind| behind > 0) else {
                continue;
            };
            if partition.in_hand == 0 && now.duration_since(partition.last_arrival) >= timeout {
                stalls.push(Stall {
                    topic: topic.clone(),
                    lag: behind,
                    again: partition.stalled,
                });
                partition.stalled = true;
                // The next verdict comes a full timeout later.
                partition.last_arrival = now;
            }
        }
        stalls.sort_by(|a, b| a.topic.cmp(&b.topic));
        stalls
    }
}

/// A consumer's [`DeliveryWatch`], with what it found and where it reports
/// it: `/health` conditions, the skipped-offsets counter and the stalled
/// gauge.
pub struct Watcher {
    pub deliveries: DeliveryWatch,
    subscription: String,
    /// Only this consumer may hold the subscription.
    exclusive: bool,
    /// The broker's exporter, when the operator gave it.
    metrics_url: Option<String>,
    stall_timeout: Duration,
    /// Bound on one read of the exporter.
    limit: Duration,
    metrics: ConnectorMetrics,
    /// Offsets skipped so far, by topic.
    skipped: HashMap<String, u64>,
    stalled: HashSet<String>,
    /// The last read of the exporter failed (logged once per outage).
    exporter_failing: bool,
}

impl Watcher {
    pub fn new(
        consumer: &ConsumerConfig,
        broker: &crate::config::BrokerConfig,
        limit: Duration,
        metrics: ConnectorMetrics,
    ) -> Watcher {
        Watcher {
            deliveries: DeliveryWatch::default(),
            subscription: consumer.subscription.clone(),
            exclusive: consumer.subscription_type == SubscriptionType::Exclusive,
            metrics_url: broker.metrics_url.clone(),
            stall_timeout: Duration::from_millis(broker.stall_timeout_ms),
            limit,
            metrics,
            skipped: HashMap::new(),
            stalled: HashSet::new(),
            exporter_failing: false,
        }
    }

    /// A message of `topic` arrived: a stall of it is over.
    pub fn arrived(&mut self, topic: &str) {
        if self.stalled.remove(topic) {
            self.metrics.add_stalled(-1);
            self.metrics.clear_condition(&format!("stalled {topic}"));
            tracing::info!(%topic, subscription = %self.subscription, "the stalled subscription delivers again");
        }
    }

    /// Reports offsets that never arrived. On an exclusive subscription the
    /// broker's figures show a reliable topic (a lag series) with this one
    /// consumer, it is a loss the broker caused: unhealthy, for good. On a
    /// subscription consumers share, the offsets may also have gone to a
    /// consumer that has left since (the broker counts only who is there
    /// now): degraded, and should the broker hold them unacknowledged, the
    /// stall check reports it. Offsets of a topic without reliable dispatch,
    /// or of a subscription with other consumers now, are not this
    /// consumer's to miss.
    pub async fn gap(&mut self, gap: Gap) {
        // Missed at start-up whatever the broker's figures say (they may not
        // list a subscription this young yet).
        let figures = match gap.before_subscribing {
            true => None,
            false => self
                .figures()
                .await
                .map(|f| f.get(&gap.topic).copied().unwrap_or_default()),
        };
        let known = match figures {
            Some(SubscriptionFigures { lag: None, .. }) => {
                tracing::debug!(topic = %gap.topic, first = gap.first, last = gap.last, "offsets skipped on a topic without reliable dispatch");
                return;
            }
            Some(SubscriptionFigures {
                consumers: Some(n), ..
            }) if n > 1 => return,
            Some(_) => true,
            None => false,
        };
        let first_report = !self.skipped.contains_key(&gap.topic);
        let total = self.skipped.entry(gap.topic.clone()).or_default();
        *total += gap.len();
        self.metrics.broker_skipped(&gap.topic, gap.len());
        let (topic, subscription, (first, last)) =
            (&gap.topic, &self.subscription, (gap.first, gap.last));
        let (status, detail) = if gap.before_subscribing {
            // The topic was created while the consumer waited for it: a race
            // of start-up, not a fault of the broker.
            (
                Status::Degraded,
                format!(
                    "offsets {first}..={last} of {topic} were published before subscription {subscription} existed and will not be delivered to it (a new subscription starts at the latest message): create topics before their producers start, so that sinks can subscribe first"
                ),
            )
        } else if known && self.exclusive {
            (
                Status::Unhealthy,
                format!(
                    "the broker skipped offsets {first}..={last} of {topic} ({total} so far) for subscription {subscription}: they will not be delivered to it (Danube drops messages of a reliable subscription that falls more than 256 behind its producers; see the README's troubleshooting)"
                ),
            )
        } else if known {
            (
                Status::Degraded,
                format!(
                    "offsets {first}..={last} of {topic} ({total} so far) did not reach subscription {subscription}: the broker skipped them, or a consumer that has left the subscription took them; should the broker hold them unacknowledged, a stall is reported"
                ),
            )
        } else {
            (
                Status::Degraded,
                format!(
                    "offsets {first}..={last} of {topic} ({total} so far) did not reach this consumer of subscription {subscription}: the broker skipped them (lost if the topic is reliable) or another consumer of the subscription took them; give the host [broker] metrics_url to tell"
                ),
            )
        };
        // The first gap of a topic is logged; the count goes on on /health.
        if first_report {
            tracing::error!(%topic, %subscription, first, last, "{detail}");
        } else {
            tracing::debug!(%topic, %subscription, first, last, "{detail}");
        }
        self.metrics
            .raise_condition(&format!("skipped {topic}"), status, detail);
    }

    /// Reads the broker's figures and reports partitions that stall. True
    /// when one stalled for the first time: subscribing again is worth a try.
    pub async fn check(&mut self) -> bool {
        if self.metrics_url.is_none() {
            return false;
        }
        let Some(figures) = self.figures().await else {
            return false;
        };
        let stalls = self.deliveries.stalls(
            |topic| figures.get(topic).and_then(|f| f.lag),
            self.stall_timeout,
            Instant::now(),
        );
        let mut renew = false;
        for Stall { topic, lag, again } in stalls {
            let (subscription, secs) = (&self.subscription, self.stall_timeout.as_secs());
            let (status, detail) = if again {
                (
                    Status::Unhealthy,
                    format!(
                        "subscription {subscription} on {topic} is stalled: the broker reports {lag} messages not acknowledged and delivered none for {secs} s, also after subscribing again (see the README's troubleshooting)"
                    ),
                )
            } else {
                renew = true;
                (
                    Status::Degraded,
                    format!(
                        "subscription {subscription} on {topic} is stalled: the broker reports {lag} messages not acknowledged and delivered none for {secs} s; subscribing again"
                    ),
                )
            };
            tracing::warn!(%topic, %subscription, lag, "{detail}");
            if self.stalled.insert(topic.clone()) {
                self.metrics.add_stalled(1);
            }
            self.metrics
                .raise_condition(&format!("stalled {topic}"), status, detail);
        }
        renew
    }

    /// The subscription's figures by topic, or `None` without an exporter or
    /// when it cannot be read (logged once per outage).
    async fn figures(&mut self) -> Option<HashMap<String, SubscriptionFigures>> {
        let url = self.metrics_url.clone()?;
        match read_exporter(&url, self.limit).await {
            Ok(text) => {
                if std::mem::take(&mut self.exporter_failing) {
                    tracing::info!(%url, "the broker's metrics can be read again");
                }
                Some(subscription_figures(&text, &self.subscription))
            }
            Err(e) => {
                if !std::mem::replace(&mut self.exporter_failing, true) {
                    tracing::warn!(%url, error = %e, "cannot read the broker's metrics ([broker] metrics_url): stalled subscriptions go unnoticed meanwhile");
                }
                None
            }
        }
    }
}

/// Largest exporter page read: thousands of topics fit.
const MAX_EXPORTER_BYTES: u64 = 64 << 20;

/// Reads the broker's Prometheus text at `url`, bounded in time and size.
async fn read_exporter(url: &str, limit: Duration) -> Result<String, String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_EXPORTER_BYTES)
            .read_to_string()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One subscription's figures on one topic, as the broker exports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionFigures {
    /// `danube_subscription_lag_messages`: present only for reliable
    /// subscriptions.
    pub lag: Option<u64>,
    /// `danube_subscription_active_consumers`.
    pub consumers: Option<u64>,
}

/// Reads a subscription's figures per topic from the broker's Prometheus
/// text: the samples of `danube_subscription_lag_messages` and
/// `danube_subscription_active_consumers` whose `subscription` label is
/// `subscription`, by their `topic` label.
pub fn subscription_figures(
    text: &str,
    subscription: &str,
) -> HashMap<String, SubscriptionFigures> {
    let mut figures: HashMap<String, SubscriptionFigures> = HashMap::new();
    for line in text.lines() {
        let Some(Sample {
            name,
            labels,
            value,
        }) = sample(line)
        else {
            continue;
        };
        let field = match name {
            "danube_subscription_lag_messages" => |f: &mut SubscriptionFigures, v| f.lag = Some(v),
            "danube_subscription_active_consumers" => {
                |f: &mut SubscriptionFigures, v| f.consumers = Some(v)
            }
            _ => continue,
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        if label("subscription") != Some(subscription) {
            continue;
        }
        let (Some(topic), Some(value)) = (label("topic"), value.parse::<f64>().ok()) else {
            continue;
        };
        field(
            figures.entry(topic.to_string()).or_default(),
            value.max(0.0) as u64,
        );
    }
    figures
}

/// One line of the exposition: `name{k="v",...} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: &'a str,
}

/// Splits a sample line; `None` for comments and lines of another shape.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim(), value));
            rest = &after_key[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn offsets_that_skip_ahead_are_gaps_and_redeliveries_are_not() {
        let now = Instant::now();
        let mut watch = DeliveryWatch::default();
        watch.cover(&topics(&["/d/t-part-0", "/d/t-part-1"]), false, now);
        assert_eq!(watch.delivered("/d/t-part-0", 0, now), None);
        assert_eq!(watch.delivered("/d/t-part-0", 1, now), None);
        // Another partition has offsets of its own.
        assert_eq!(watch.delivered("/d/t-part-1", 7, now), None);
        let gap = watch.delivered("/d/t-part-0", 5, now).unwrap();
        assert_eq!((gap.first, gap.last, gap.len()), (2, 4, 3));
        assert!(!gap.before_subscribing);
        // Redelivered messages come with offsets already seen.
        assert_eq!(watch.delivered("/d/t-part-0", 3, now), None);
        assert_eq!(watch.delivered("/d/t-part-0", 6, now), None);
        assert_eq!(
            watch.delivered("/d/t-part-1", 9, now),
            Some(Gap {
                topic: "/d/t-part-1".into(),
                first: 8,
                last: 8,
                before_subscribing: false,
            })
        );
    }

    #[test]
    fn a_topic_waited_for_is_expected_from_offset_0() {
        let now = Instant::now();
        let mut watch = DeliveryWatch::default();
        watch.cover(&topics(&["/d/a", "/d/b"]), true, now);
        assert_eq!(watch.delivered("/d/a", 0, now), None);
        let gap = watch.delivered("/d/b", 40, now).unwrap();
        assert_eq!((gap.first, gap.last, gap.before_subscribing), (0, 39, true));
        // Later gaps are the broker's.
        assert!(!watch.delivered("/d/b", 42, now).unwrap().before_subscribing);
    }

    #[test]
    fn a_partition_behind_with_nothing_arriving_or_in_hand_stalls() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut watch = DeliveryWatch::default();
        watch.cover(&topics(&["/d/a", "/d/b"]), false, start);
        let lag = |t: &str| match t {
            "/d/a" => Some(40),
            "/d/b" => Some(0),
            _ => None,
        };
        // Not yet: the timeout has not passed.
        assert!(
            watch
                .stalls(lag, timeout, start + Duration::from_secs(29))
                .is_empty()
        );
        // A message in hand is the sink's own slowness, not a stall.
        watch.delivered("/d/a", 0, start + Duration::from_secs(1));
        assert!(
            watch
                .stalls(lag, timeout, start + Duration::from_secs(40))
                .is_empty()
        );
        watch.settled("/d/a");
        let at = start + Duration::from_secs(31);
        assert_eq!(
            watch.stalls(lag, timeout, at),
            vec![Stall {
                topic: "/d/a".into(),
                lag: 40,
                again: false
            }]
        );
        // Reported again a full timeout later, as lasting.
        assert!(
            watch
                .stalls(lag, timeout, at + Duration::from_secs(29))
                .is_empty()
        );
        let again = watch.stalls(lag, timeout, at + Duration::from_secs(30));
        assert!(again[0].again);
        // An arrival mends it; a partition without a lag figure never stalls.
        watch.delivered("/d/a", 1, at + Duration::from_secs(31));
        watch.settled("/d/a");
        let later = at + Duration::from_secs(70);
        assert!(!watch.stalls(lag, timeout, later)[0].again);
        assert!(watch.stalls(|_| None, timeout, later + timeout).is_empty());
    }

    #[test]
    fn covering_new_partitions_keeps_what_the_old_ones_delivered() {
        let now = Instant::now();
        let mut watch = DeliveryWatch::default();
        watch.cover(&topics(&["/d/t-part-0"]), false, now);
        watch.delivered("/d/t-part-0", 4, now);
        watch.cover(&topics(&["/d/t-part-0", "/d/t-part-1"]), false, now);
        assert!(watch.delivered("/d/t-part-0", 9, now).is_some());
        assert!(watch.delivered("/d/t-part-1", 9, now).is_none());
    }

    /// Lines as the Danube v0.15.1 broker's exporter writes them (captured
    /// from a standalone broker), plus escapes the format allows.
    const EXPORTED: &str = r#"# HELP danube_subscription_lag_messages Number of messages the subscription is behind the topic WAL head
# TYPE danube_subscription_lag_messages gauge
danube_subscription_lag_messages{broker="4416026780568140805",topic="/default/t1",subscription="subA"} 0
danube_subscription_lag_messages{broker="4416026780568140805",topic="/default/t-part-1",subscription="s"} 2977
danube_subscription_lag_messages{broker="4416026780568140805"} 0
# TYPE danube_subscription_active_consumers gauge
danube_subscription_active_consumers{broker="4416026780568140805",topic="/default/t-part-1",subscription="s"} 2
danube_subscription_active_consumers{broker="1",topic="/default/odd \"name\"",subscription="s"} 1 1700000000000
danube_topic_messages_in_total{broker="4416026780568140805",topic="/default/t-part-1"} 3000
"#;

    #[test]
    fn the_exporters_figures_are_read_per_topic_for_one_subscription() {
        let figures = subscription_figures(EXPORTED, "s");
        assert_eq!(
            figures["/default/t-part-1"],
            SubscriptionFigures {
                lag: Some(2977),
                consumers: Some(2)
            }
        );
        assert_eq!(
            figures["/default/odd \"name\""],
            SubscriptionFigures {
                lag: None,
                consumers: Some(1)
            }
        );
        assert_eq!(figures.len(), 2);
        assert_eq!(
            subscription_figures(EXPORTED, "subA")["/default/t1"].lag,
            Some(0)
        );
        assert!(subscription_figures("garbage{\nx{a=\"b} 1\n", "s").is_empty());
    }
}
