//! Publishing to Danube for the pipelines that produce (source, ingress):
//! each declared topic's producers, payloads checked against the topic's
//! schema, the dead-letter topic for what does not fit, and one report per
//! record once the broker acknowledged it (or the retries were spent).
//!
//! Records are spread over several producers per topic ("lanes"), because a
//! `danube-client` producer has one send in flight at a time. Records with the
//! same key always take the same lane, so per-key order holds.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::Stop;
use super::danube::{self, Danube, DanubeFailure, Publish};
use super::dead_letter::{DeadLetter, Rejected};
use super::retry::RetryPolicy;
use crate::config::ConnectorConfig;
use crate::contract::{ConnectorError, ProducerConfig, SourceRecord};
use crate::observability::tap::{Direction, TappedRecord};
use crate::schema::{Registry, SchemaError, SourceSchemas};

/// A record on its way to a lane.
struct Outgoing {
    id: u64,
    record: SourceRecord,
}

/// The report on one record: acknowledged, or failed for good.
pub struct Published {
    /// The id the pipeline sent it with.
    pub id: u64,
    pub topic: String,
    pub result: Result<(), DanubeFailure>,
    /// It went to the dead-letter topic instead of its own.
    pub dead_lettered: bool,
}

/// What became of a record handed to [`Publisher::send`].
pub enum Sent {
    /// On its way to its lane; its report follows.
    Published,
    /// It does not fit its topic's schema: nothing was sent, and the
    /// pipeline decides (a source dead-letters it, an ingress refuses the
    /// request).
    Refused { record: SourceRecord, why: String },
}

/// The producers of a connector's topics, which outlive its workers.
pub struct Publisher<D: Danube> {
    policy: RetryPolicy,
    lanes: Lanes,
    published: mpsc::UnboundedReceiver<Published>,
    published_tx: mpsc::UnboundedSender<Published>,
    /// The schemas of the topics, which payloads are checked against.
    schemas: SourceSchemas,
    dead_letter: Arc<DeadLetter<D>>,
    round_robin: usize,
    /// The id of the next record sent: ids grow in the order records are
    /// sent, as a source's offset tracking counts on.
    next_id: u64,
}

impl<D: Danube> Publisher<D> {
    /// Registers the topics' schemas and creates the producers of every
    /// topic in `producers`.
    pub async fn start(
        danube: &D,
        config: &ConnectorConfig,
        policy: &RetryPolicy,
        producers: &[ProducerConfig],
    ) -> Result<Publisher<D>, Stop> {
        let limit = Duration::from_millis(config.host.processing.publish_timeout_ms);
        let (published_tx, published) = mpsc::unbounded_channel::<Published>();
        let registry = Registry::new(danube, policy, limit);
        let schemas = SourceSchemas::prepare(&registry, config, producers)
            .await
            .map_err(|e| match e {
                SchemaError::Refused(why) => Stop::Config(why),
                unreachable => Stop::Fatal(unreachable.to_string()),
            })?;
        let lanes = start_lanes(
            danube,
            config,
            policy,
            producers,
            &schemas,
            limit,
            &published_tx,
        )
        .await?;
        let dead_letter = Arc::new(DeadLetter::new(danube, config, policy, limit));
        for p in producers {
            // Series exist from the start, at 0.
            policy.metrics.received(&p.topic, 0);
            policy.metrics.sent(&p.topic, 0);
        }
        Ok(Publisher {
            policy: policy.clone(),
            lanes,
            published,
            published_tx,
            schemas,
            dead_letter,
            round_robin: 0,
            next_id: 0,
        })
    }

    /// Counts and taps `record`, encodes it with its topic's schema and hands
    /// it to its lane; returns the id its report will carry (a refused
    /// record's too, for [`Publisher::dead_letter`]). A record for a topic
    /// the connector did not declare stops it.
    pub fn send(&mut self, mut record: SourceRecord) -> Result<(u64, Sent), Stop> {
        let lane = pick_lane(&self.lanes, &record, &mut self.round_robin)?;
        let id = self.next_id;
        self.next_id += 1;
        self.policy.metrics.received(&record.topic, 1);
        self.policy.metrics.tap(|| {
            TappedRecord::new(
                Direction::Produced,
                &record.topic,
                record.key.as_deref(),
                record.attributes.iter().map(|(k, v)| (k, v)),
                &record.payload,
            )
        });
        let encoded = match self.schemas.get(&record.topic) {
            Some(schema) => schema.codec.encode(&record.payload),
            None => Ok(None),
        };
        match encoded {
            Ok(encoded) => {
                if let Some(payload) = encoded {
                    record.payload = payload;
                }
                lane.send(Outgoing { id, record })
                    .map_err(|_| Stop::Fatal("a publishing lane stopped".into()))?;
                Ok((id, Sent::Published))
            }
            Err(why) => Ok((id, Sent::Refused { record, why })),
        }
    }

    /// Sends `record` to the dead-letter topic as invalid data (`why`); its
    /// report follows under `id`.
    pub fn dead_letter(&self, id: u64, record: SourceRecord, why: String) {
        let dead_letter = self.dead_letter.clone();
        let published = self.published_tx.clone();
        tokio::spawn(
            async move {
                let error = ConnectorError::InvalidData(why);
                let result = dead_letter
                    .send(Rejected::produced(&record), &error)
                    .await
                    .map_err(|e| DanubeFailure {
                        message: format!(
                            "the dead-letter topic {}: {}",
                            dead_letter.topic, e.message
                        ),
                        ..e
                    });
                let _ = published.send(Published {
                    id,
                    topic: record.topic,
                    result,
                    dead_lettered: true,
                });
            }
            .in_current_span(),
        );
    }

    /// The next report.
    pub async fn next(&mut self) -> Option<Published> {
        self.published.recv().await
    }

    /// A report that is already there.
    pub fn try_next(&mut self) -> Option<Published> {
        self.published.try_recv().ok()
    }

    /// Counts an acknowledged record as sent, or dead-lettered.
    pub fn count(&self, done: &Published) {
        match done.dead_lettered {
            true => self.policy.metrics.dead_lettered(&done.topic, 1),
            false => self.policy.metrics.sent(&done.topic, 1),
        }
    }
}

/// The lanes of each topic.
type Lanes = HashMap<String, Vec<mpsc::UnboundedSender<Outgoing>>>;

async fn start_lanes(
    danube: &impl Danube,
    config: &ConnectorConfig,
    policy: &RetryPolicy,
    producers: &[ProducerConfig],
    schemas: &SourceSchemas,
    limit: Duration,
    published: &mpsc::UnboundedSender<Published>,
) -> Result<Lanes, Stop> {
    let host = &config.host;
    let per_topic = host.processing.producers_per_topic as usize;
    // Unique per process: a broker may still hold the names of a previous run.
    let run_tag: u32 = rand::random();
    let mut lanes = Lanes::new();
    for producer_config in producers {
        let mut senders = Vec::with_capacity(per_topic);
        for index in 0..per_topic {
            let name = format!(
                "{}-{}-{index}-{run_tag:08x}",
                host.connector_name,
                sanitize(&producer_config.topic)
            );
            let schema = schemas.get(&producer_config.topic).map(|s| &s.reference);
            let producer = danube::create_producer(
                danube,
                host.broker.admin_url.as_deref(),
                &name,
                producer_config,
                schema,
                policy,
                limit,
            )
            .await
            .map_err(|e| Stop::Fatal(e.message))?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(
                lane(
                    producer,
                    producer_config.topic.clone(),
                    rx,
                    published.clone(),
                    policy.clone(),
                    limit,
                )
                .in_current_span(),
            );
            senders.push(tx);
        }
        lanes.insert(producer_config.topic.clone(), senders);
    }
    Ok(lanes)
}

/// Publishes one lane's records in order, one at a time.
async fn lane(
    producer: impl Publish,
    topic: String,
    mut records: mpsc::UnboundedReceiver<Outgoing>,
    published: mpsc::UnboundedSender<Published>,
    policy: RetryPolicy,
    limit: Duration,
) {
    while let Some(Outgoing { id, record }) = records.recv().await {
        let result = danube::publish(
            &producer,
            &record.payload,
            &record.attributes,
            record.key.as_deref(),
            &policy,
            limit,
        )
        .await;
        // A record that could not be published is reported, and the lane
        // goes on: a source stops on the report, an ingress answers its
        // sender and serves the next request.
        if published
            .send(Published {
                id,
                topic: topic.clone(),
                result,
                dead_lettered: false,
            })
            .is_err()
        {
            return;
        }
    }
}

fn pick_lane<'a>(
    lanes: &'a Lanes,
    record: &SourceRecord,
    round_robin: &mut usize,
) -> Result<&'a mpsc::UnboundedSender<Outgoing>, Stop> {
    let Some(senders) = lanes.get(&record.topic) else {
        return Err(Stop::Fatal(format!(
            "the connector produced a record for topic {:?}, which it did not declare in open (declared: {})",
            record.topic,
            lanes.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let index = match &record.key {
        Some(key) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            h.finish() as usize % senders.len()
        }
        None => {
            *round_robin = round_robin.wrapping_add(1);
            *round_robin % senders.len()
        }
    };
    Ok(&senders[index])
}

fn sanitize(topic: &str) -> String {
    topic
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
