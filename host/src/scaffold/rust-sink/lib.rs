//! lines-sink: appends each record's payload, as text, as one line of a
//! file. See README.md.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use danube_connect_sdk::{BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord, info};

/// The `[lines_sink]` table of the host's configuration file. Its JSON Schema,
/// with these doc comments, is what `danube-host validate` checks the table
/// with and `danube-host inspect` lists.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The topic to consume.
    topic: String,
    /// The subscription's name; it keeps its position across restarts.
    #[serde(default = "default_subscription")]
    subscription: String,
    /// The file the lines are appended to; grant its directory in
    /// `[sandbox] dirs`.
    path: PathBuf,
}

fn default_subscription() -> String {
    "lines-sink".into()
}

pub struct Lines {
    out: File,
}

impl Sink for Lines {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Appends each record's payload, as text, as one line of a file.",
            "[lines_sink]\n# Topic to consume and subscription name.\ntopic = \"/default/lines\"\nsubscription = \"lines-sink\"\n# File the lines are appended to; grant its directory in [sandbox] dirs.\npath = \"/tmp/lines-sink/lines.txt\"\n",
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .map_err(|e| {
                ConnectorError::config(format!(
                    "cannot open `path` {}: {e}; grant its directory in [sandbox] dirs",
                    config.path.display()
                ))
            })?;
        info!("lines-sink appending to {}", config.path.display());
        Ok((Lines { out }, vec![ConsumerConfig::new(config.topic, config.subscription)]))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        let mut outcome = BatchOutcome::new();
        let mut lines = Vec::new();
        for (index, record) in records.iter().enumerate() {
            // Text that is not UTF-8, or spans lines, can never be written
            // as one line: the host dead-letters it.
            match line(record) {
                Ok(text) => lines.extend_from_slice(text.as_bytes()),
                Err(e) => outcome.fail(index, e),
            }
        }
        // A write that fails is retried by the host, the whole batch again:
        // a line may then be written twice (at-least-once).
        self.out
            .write_all(&lines)
            .and_then(|()| self.out.sync_data())
            .map_err(|e| ConnectorError::retryable(format!("cannot append to the file: {e}")))?;
        Ok(outcome)
    }
}

/// A record's payload as one line, with its newline.
fn line(record: &SinkRecord) -> Result<String, ConnectorError> {
    let text = record.payload_str()?;
    if text.contains('\n') {
        return Err(ConnectorError::invalid_data("the payload spans lines"));
    }
    Ok(format!("{text}\n"))
}

danube_connect_sdk::export_sink!(Lines);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    #[test]
    fn appends_text_payloads_and_refuses_the_others() {
        let dir = std::env::temp_dir().join(format!("lines-sink-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.txt");
        let table = serde_json::json!({ "topic": "/default/l", "path": path });
        let config: Config = parse_config(&table.to_string()).unwrap();
        let (mut sink, consumers) = Lines::open(config).unwrap();
        assert_eq!(consumers.len(), 1);
        let outcome = sink
            .process_batch(vec![
                SinkRecord::new("/default/l", "first"),
                SinkRecord::new("/default/l", vec![0xff]),
                SinkRecord::new("/default/l", "two\nlines"),
                SinkRecord::new("/default/l", "last"),
            ])
            .unwrap();
        let failed: Vec<u32> = outcome.failures().iter().map(|f| f.index).collect();
        assert_eq!(failed, [1, 2]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nlast\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
