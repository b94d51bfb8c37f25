//! `probe-source`: a **test fixture** for `danube-host`'s own tests, not a
//! connector for real use; the source twin of `probe-connector`.
//!
//! It publishes to `topic` (default `/default/probe`). Its `[probe]` table:
//!
//! | key            | what `poll` does                                               |
//! |----------------|----------------------------------------------------------------|
//! | `loop_in_poll` | loops forever (the call timeout or `[sandbox] fuel` must stop it) |
//! | `overfill_poll`| returns one record more than the `max` it was asked for |
//! | `attribute_kb` | returns one record with an attribute of that many KiB |
//!
//! Without either, `poll` waits out its timeout and returns nothing.

use std::time::Duration;

use danube_connect_sdk::{ConnectorError, ConnectorInfo, ProducerConfig, Source, SourceRecord};
use serde::Deserialize;

const CONFIG_EXAMPLE: &str = r#"[probe]
topic = "/default/probe"
loop_in_poll = false
overfill_poll = false
attribute_kb = 0
"#;

/// The `[probe]` table.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_topic")]
    topic: String,
    #[serde(default)]
    loop_in_poll: bool,
    #[serde(default)]
    overfill_poll: bool,
    #[serde(default)]
    attribute_kb: usize,
}

fn default_topic() -> String {
    "/default/probe".into()
}

pub struct ProbeSource {
    loop_in_poll: bool,
    overfill_poll: bool,
    attribute_kb: usize,
    topic: String,
}

impl Source for ProbeSource {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Test fixture: a source that misbehaves in poll as its [probe] table says.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError> {
        Ok((
            ProbeSource {
                loop_in_poll: config.loop_in_poll,
                overfill_poll: config.overfill_poll,
                attribute_kb: config.attribute_kb,
                topic: config.topic.clone(),
            },
            vec![ProducerConfig::new(config.topic)],
        ))
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError> {
        if self.attribute_kb > 0 {
            let mut record = SourceRecord::from_string(&self.topic, "big metadata");
            record.attributes = vec![("big".into(), "a".repeat(self.attribute_kb << 10))];
            return Ok(vec![record]);
        }
        if self.overfill_poll {
            return Ok((0..=max)
                .map(|i| SourceRecord::from_string(&self.topic, i.to_string()))
                .collect());
        }
        if self.loop_in_poll {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        std::thread::sleep(timeout);
        Ok(Vec::new())
    }
}

danube_connect_sdk::export_source!(ProbeSource);
