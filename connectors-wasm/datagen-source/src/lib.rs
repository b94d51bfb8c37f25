//! `datagen-source`: a source connector that generates JSON records.
//!
//! It is the smallest complete source: typed config, pacing inside `poll`,
//! offsets, and resumption from the host's state store. See README.md.

use std::thread;
use std::time::{Duration, Instant};

use danube_connect_sdk::{
    ConnectorError, ConnectorInfo, Offset, ProducerConfig, Source, SourceRecord, info, metrics,
    state,
};
use serde::{Deserialize, Serialize};

/// State-store key holding the last sequence number the broker acknowledged.
const COMMITTED_KEY: &str = "committed_seq";
/// Name of the offset stream this source reports.
const STREAM: &str = "datagen";
/// How far pacing may fall behind before it stops catching up in a burst.
const MAX_LAG: Duration = Duration::from_secs(1);

const CONFIG_EXAMPLE: &str = r#"[datagen]
# Topics to publish to; records go round-robin by sequence number.
topics = ["/default/datagen"]
# 0: plain topics; N > 0: N partitions (`-part-0`...; records spread by key).
partitions = 0
# Reliable dispatch (stored and acknowledged by the broker).
reliable = true
# Records per second; 0 = as fast as possible.
rate = 0
# Total records to generate (sequence numbers 0..count); 0 = unlimited.
count = 0
# Pad each JSON payload to about this many bytes; 0 = no padding.
payload_size = 0
# Number of distinct keys ("key-{seq % keys}"); 0 = records have no key.
keys = 0
"#;

/// The `[datagen]` table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Topics to publish to, each `/namespace/name`; records go round-robin
    /// by sequence number. Default: `["/default/datagen"]`.
    pub topics: Vec<String>,
    /// 0 (the default): plain topics; N > 0: N partitions per topic
    /// (`-part-0`...), records spread by key.
    pub partitions: u32,
    /// Reliable dispatch: records are stored and acknowledged by the broker.
    /// Default: true.
    pub reliable: bool,
    /// Records per second; 0 (the default) = as fast as the host polls.
    pub rate: u64,
    /// Total records to generate (sequence numbers 0..count); 0 (the
    /// default) = unlimited. Once reached, polls return nothing.
    pub count: u64,
    /// Pad each JSON payload to about this many bytes; 0 (the default) = no
    /// padding.
    pub payload_size: usize,
    /// Number of distinct keys (`key-{seq % keys}`); 0 (the default) =
    /// records have no key.
    pub keys: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            topics: vec!["/default/datagen".to_string()],
            partitions: 0,
            reliable: true,
            rate: 0,
            count: 0,
            payload_size: 0,
            keys: 0,
        }
    }
}

/// The JSON payload of each record.
#[derive(Serialize)]
struct Payload<'a> {
    seq: u64,
    key: Option<&'a str>,
    topic: &'a str,
    pad: &'a str,
}

pub struct Datagen {
    config: Config,
    /// Sequence number of the next record to generate.
    next_seq: u64,
    /// Highest sequence number committed so far (stored in the state store).
    committed: Option<u64>,
    /// Pacing: when the record `paced_base` was due.
    paced_from: Instant,
    paced_base: u64,
    pad: String,
}

impl Datagen {
    fn done(&self) -> bool {
        self.config.count > 0 && self.next_seq >= self.config.count
    }

    /// When the record with sequence number `seq` is due under the rate.
    fn due(&self, seq: u64) -> Option<Instant> {
        if self.config.rate == 0 {
            return None;
        }
        let n = seq - self.paced_base;
        let nanos = (n as u128 * 1_000_000_000 / self.config.rate as u128) as u64;
        Some(self.paced_from + Duration::from_nanos(nanos))
    }

    fn make_record(&self, seq: u64) -> Result<SourceRecord, ConnectorError> {
        let topic = &self.config.topics[(seq % self.config.topics.len() as u64) as usize];
        let key = (self.config.keys > 0).then(|| format!("key-{}", seq % self.config.keys));
        let payload = Payload {
            seq,
            key: key.as_deref(),
            topic,
            pad: "",
        };
        let mut bytes = serde_json::to_vec(&payload)?;
        if self.config.payload_size > bytes.len() {
            let missing = self.config.payload_size - bytes.len();
            let pad = &self.pad[..missing.min(self.pad.len())];
            bytes = serde_json::to_vec(&Payload { pad, ..payload })?;
        }
        let mut record = SourceRecord::from_bytes(topic.clone(), bytes)
            .with_attribute("seq", seq.to_string())
            .with_offset(STREAM, seq);
        if let Some(key) = key {
            record = record.with_key(key);
        }
        Ok(record)
    }
}

impl Source for Datagen {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Generates JSON test records {seq, key, topic, pad} at a given rate; \
             resumes after the last committed record.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError> {
        if config.topics.is_empty() {
            return Err(ConnectorError::config(
                "`topics` must name at least one topic",
            ));
        }
        if let Some(t) = config.topics.iter().find(|t| !t.starts_with('/')) {
            return Err(ConnectorError::config(format!(
                "topic `{t}` must look like /namespace/name"
            )));
        }
        let committed = state::get_json::<u64>(COMMITTED_KEY)?;
        let next_seq = committed.map_or(0, |c| c + 1);
        info!(
            "datagen starting at seq {next_seq} (rate {}/s, count {}, {} topic(s))",
            config.rate,
            config.count,
            config.topics.len()
        );
        let producers = config
            .topics
            .iter()
            .map(|t| {
                ProducerConfig::new(t)
                    .with_partitions(config.partitions)
                    .with_reliable(config.reliable)
            })
            .collect();
        let pad = "x".repeat(config.payload_size);
        Ok((
            Datagen {
                config,
                next_seq,
                committed,
                paced_from: Instant::now(),
                paced_base: next_seq,
                pad,
            },
            producers,
        ))
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError> {
        let deadline = Instant::now() + timeout;
        if self.done() {
            // Nothing more will come: wait out the timeout so the host does
            // not spin on empty polls.
            thread::sleep(timeout);
            return Ok(Vec::new());
        }
        let mut records = Vec::new();
        while records.len() < max && !self.done() {
            if let Some(due) = self.due(self.next_seq) {
                let now = Instant::now();
                if due > now {
                    // Wait only for the first record of a batch, and only
                    // within the timeout; later ones go in the next poll.
                    if !records.is_empty() {
                        break;
                    }
                    if due > deadline {
                        thread::sleep(deadline.saturating_duration_since(now));
                        break;
                    }
                    thread::sleep(due - now);
                } else if now - due > MAX_LAG {
                    // Too far behind (the host was slow to poll): pace from
                    // now instead of bursting to catch up.
                    self.paced_from = now;
                    self.paced_base = self.next_seq;
                }
            }
            records.push(self.make_record(self.next_seq)?);
            self.next_seq += 1;
        }
        if !records.is_empty() {
            metrics::counter_add("datagen_records_generated_total", records.len() as u64, &[]);
        }
        Ok(records)
    }

    fn commit(&mut self, offsets: Vec<Offset>) -> Result<(), ConnectorError> {
        let Some(position) = offsets
            .iter()
            .filter(|o| o.stream == STREAM)
            .map(|o| o.position)
            .max()
        else {
            return Ok(());
        };
        if self.committed.is_some_and(|c| c >= position) {
            return Ok(());
        }
        state::put_json(COMMITTED_KEY, &position)?;
        self.committed = Some(position);
        metrics::gauge_set("datagen_committed_seq", position as f64, &[]);
        Ok(())
    }
}

danube_connect_sdk::export_source!(Datagen);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn open(json: &str) -> (Datagen, Vec<ProducerConfig>) {
        Datagen::open(parse_config(json).unwrap()).unwrap()
    }

    #[test]
    fn defaults() {
        let (_, producers) = open("{}");
        assert_eq!(producers, vec![ProducerConfig::new("/default/datagen")]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse_config::<Config>(r#"{"rat": 5}"#).unwrap_err();
        assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
        assert!(err.message().contains("rat"), "{err}");
    }

    #[test]
    fn records_round_robin_keys_and_padding() {
        let (mut g, producers) = open(
            r#"{"topics":["/a/one","/a/two"],"keys":3,"payload_size":200,"count":5,"partitions":4,"reliable":false}"#,
        );
        assert_eq!(producers.len(), 2);
        assert_eq!((producers[0].partitions, producers[0].reliable), (4, false));
        let recs = g.poll(100, Duration::from_millis(10)).unwrap();
        assert_eq!(recs.len(), 5);
        for (i, r) in recs.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(v["seq"], i as u64);
            assert_eq!(r.topic, if i % 2 == 0 { "/a/one" } else { "/a/two" });
            assert_eq!(v["topic"], r.topic.as_str());
            assert_eq!(r.key.as_deref(), Some(format!("key-{}", i % 3).as_str()));
            assert_eq!(v["key"], format!("key-{}", i % 3));
            assert_eq!(r.payload.len(), 200);
            assert_eq!(r.attributes, vec![("seq".to_string(), i.to_string())]);
            assert_eq!(r.offset, Some(Offset::new("datagen", i as u64)));
        }
        // count reached: empty polls.
        assert!(g.poll(100, Duration::from_millis(1)).unwrap().is_empty());
    }

    #[test]
    fn resumes_after_committed() {
        let (mut g, _) = open(r#"{"count": 10}"#);
        let recs = g.poll(4, Duration::ZERO).unwrap();
        assert_eq!(recs.len(), 4);
        g.commit(vec![Offset::new("datagen", 2)]).unwrap();
        drop(g);
        let (mut g, _) = open(r#"{"count": 10}"#);
        let recs = g.poll(100, Duration::ZERO).unwrap();
        let seqs: Vec<u64> = recs
            .iter()
            .map(|r| r.offset.clone().unwrap().position)
            .collect();
        assert_eq!(seqs, (3..10).collect::<Vec<_>>());
    }

    #[test]
    fn rate_paces_records() {
        let (mut g, _) = open(r#"{"rate": 100}"#);
        let start = Instant::now();
        let mut n = 0;
        while n < 11 {
            n += g.poll(100, Duration::from_millis(50)).unwrap().len();
        }
        // 11 records at 100/s: the 11th is due at 100 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");
    }
}
