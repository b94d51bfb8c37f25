//! counter-source: publishes `{"n": 0}`, `{"n": 1}`, ... up to `count` and
//! resumes after the last number the broker acknowledged. See README.md.

use std::time::Duration;

use danube_connect_sdk::{
    ConnectorError, ConnectorInfo, Offset, ProducerConfig, Source, SourceRecord, info, state,
};

/// Offset stream of the numbers, and the state key of the last one committed.
const STREAM: &str = "counter";
const COMMITTED: &str = "committed";

/// The `[counter_source]` table of the host's configuration file. Its JSON Schema,
/// with these doc comments, is what `danube-host validate` checks the table
/// with and `danube-host inspect` lists.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The topic the numbers are published to.
    topic: String,
    /// How many numbers to publish; 0 = no end.
    #[serde(default)]
    count: u64,
}

pub struct Counter {
    topic: String,
    count: u64,
    next: u64,
}

impl Counter {
    fn done(&self) -> bool {
        self.count > 0 && self.next >= self.count
    }
}

impl Source for Counter {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Publishes {\"n\": 0}, {\"n\": 1}, ... and resumes after the last acknowledged number.",
            "[counter_source]\n# Topic to publish to.\ntopic = \"/default/counter\"\n# How many numbers to publish; 0 = no end.\ncount = 100\n",
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError> {
        let next = state::get_json::<u64>(COMMITTED)?.map_or(0, |c| c + 1);
        info!("counter-source starts at {next}");
        let producers = vec![ProducerConfig::new(&config.topic)];
        let counter = Counter { topic: config.topic, count: config.count, next };
        Ok((counter, producers))
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError> {
        if self.done() {
            // Nothing more will come: wait so that the host does not spin.
            std::thread::sleep(timeout);
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(max);
        while records.len() < max && !self.done() {
            let record = SourceRecord::from_json(&self.topic, &serde_json::json!({ "n": self.next }))?;
            records.push(record.with_offset(STREAM, self.next));
            self.next += 1;
        }
        Ok(records)
    }

    fn commit(&mut self, offsets: Vec<Offset>) -> Result<(), ConnectorError> {
        for offset in offsets.iter().filter(|o| o.stream == STREAM) {
            state::put_json(COMMITTED, &offset.position)?;
        }
        Ok(())
    }
}

danube_connect_sdk::export_source!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    #[test]
    fn publishes_up_to_count_and_resumes_after_the_commit() {
        let config: Config = parse_config(r#"{"topic": "/default/n", "count": 3}"#).unwrap();
        let (mut counter, _) = Counter::open(config).unwrap();
        let records = counter.poll(10, Duration::ZERO).unwrap();
        assert_eq!(records.len(), 3);
        counter.commit(vec![Offset::new(STREAM, 1)]).unwrap();

        let config: Config = parse_config(r#"{"topic": "/default/n", "count": 3}"#).unwrap();
        let (mut counter, _) = Counter::open(config).unwrap();
        assert_eq!(counter.poll(10, Duration::ZERO).unwrap().len(), 1, "only n = 2 is left");
    }
}
