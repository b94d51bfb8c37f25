//! `file-sink`: a sink connector that appends every record as one JSON line
//! to a file in a directory the host grants to the component. See README.md.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use base64::prelude::{BASE64_STANDARD, Engine};
use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord,
    SubscriptionType, debug, info, metrics, warn,
};
use serde::Deserialize;
use serde_json::{Map, Value};

const CONFIG_EXAMPLE: &str = r#"[file]
# Directory to write into; grant it to the connector with [sandbox] dirs.
path = "/var/lib/danube/out"
# File inside `path` that records are appended to.
file_name = "records.jsonl"
# Topics to consume.
topics = ["/default/events"]
# Subscription name and type (exclusive | shared | failover | key_shared).
subscription = "file-sink"
subscription_type = "shared"
# Only records published with this schema subject are written; the host
# sends the others to the dead-letter topic.
# expected_schema_subject = "events-value"
# Avro payloads are written decoded to JSON; false writes the Avro binary as
# published (base64, as `payload_base64`).
# decode_avro = true
# Testing aid: a record whose JSON payload has this field set to true is
# reported as invalid data (and so goes to the dead-letter topic).
# fail_on = "poison"
"#;

/// The `[file]` table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory to write into (required). Grant it with `[sandbox] dirs`;
    /// the connector sees it at the same path.
    pub path: PathBuf,
    /// File inside `path` that records are appended to, one JSON line each.
    /// Default: `records.jsonl`.
    #[serde(default = "default_file_name")]
    pub file_name: String,
    /// Topics to consume (required), each `/namespace/name`.
    pub topics: Vec<String>,
    /// Subscription name; it keeps its position across restarts. Default:
    /// `file-sink`.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// Subscription type: `exclusive`, `shared` (the default), `failover` or
    /// `key_shared`.
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    /// Only records published with this schema subject are written; the host
    /// sends the others to the dead-letter topic. Unset: any schema or none.
    #[serde(default)]
    pub expected_schema_subject: Option<String>,
    /// true (the default): Avro payloads are written decoded to JSON; false:
    /// the Avro binary is written as published.
    #[serde(default = "default_decode_avro")]
    pub decode_avro: bool,
    /// Testing aid: a record whose JSON payload has this field set to true is
    /// reported as invalid data and goes to the dead-letter topic. Leave it
    /// unset in production.
    #[serde(default)]
    pub fail_on: Option<String>,
}

fn default_file_name() -> String {
    "records.jsonl".to_string()
}

fn default_subscription() -> String {
    "file-sink".to_string()
}

fn default_decode_avro() -> bool {
    true
}

pub struct FileSink {
    dir: PathBuf,
    file: File,
    fail_on: Option<String>,
}

impl FileSink {
    /// Whether the record is marked to fail by the `fail_on` field.
    fn marked_to_fail(&self, payload: Option<&Value>) -> bool {
        match (&self.fail_on, payload) {
            (Some(field), Some(Value::Object(obj))) => obj.get(field) == Some(&Value::Bool(true)),
            _ => false,
        }
    }
}

/// Cuts `file` back to its last complete line and returns how many bytes went:
/// a worker killed in the middle of a write leaves the start of a line behind.
fn drop_partial_line(file: &mut File) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
    }
    Ok(len - end)
}

/// One output line for `record`, whose payload parsed as `json` (if it did).
fn line(record: &SinkRecord, json: Option<Value>) -> Value {
    let attributes: Map<String, Value> = record
        .attributes()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut out = Map::new();
    out.insert("topic".into(), record.topic().into());
    out.insert("offset".into(), record.offset().into());
    out.insert("key".into(), record.key().into());
    out.insert("publish_time".into(), record.publish_time().into());
    out.insert("attributes".into(), Value::Object(attributes));
    if let Some(schema) = record.schema() {
        let schema = serde_json::json!({"subject": schema.subject, "version": schema.version});
        out.insert("schema".into(), schema);
    }
    match (json, record.payload_str()) {
        (Some(value), _) => {
            out.insert("payload".into(), value);
        }
        (None, Ok(text)) => {
            out.insert("payload".into(), text.into());
        }
        (None, Err(_)) => {
            let encoded = BASE64_STANDARD.encode(record.payload());
            out.insert("payload_base64".into(), encoded.into());
        }
    }
    Value::Object(out)
}

impl Sink for FileSink {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Appends every consumed record as one JSON line (topic, offset, key, \
             publish_time, attributes, payload) to a file, synced once per batch.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        if config.topics.is_empty() {
            return Err(ConnectorError::config(
                "`topics` must name at least one topic",
            ));
        }
        if config.file_name.is_empty()
            || config.file_name.contains('/')
            || config.file_name == "."
            || config.file_name == ".."
        {
            return Err(ConnectorError::config(format!(
                "`file_name` must be a plain file name, not `{}`",
                config.file_name
            )));
        }
        match std::fs::metadata(&config.path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConnectorError::config(format!(
                    "`path` {} is not a directory",
                    config.path.display()
                )));
            }
            Err(e) => {
                return Err(ConnectorError::config(format!(
                    "`path` {} is not accessible ({e}); is it granted in [sandbox] dirs?",
                    config.path.display()
                )));
            }
        }
        let file_path = config.path.join(&config.file_name);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&file_path)
            .map_err(|e| {
                ConnectorError::config(format!("cannot open {}: {e}", file_path.display()))
            })?;
        let dropped = drop_partial_line(&mut file).map_err(|e| {
            ConnectorError::retryable(format!("checking the end of {}: {e}", file_path.display()))
        })?;
        if dropped > 0 {
            warn!(
                "dropped a partial last line ({dropped} bytes) of {}, left by an interrupted write; its records are delivered again",
                file_path.display()
            );
        }
        info!("file-sink appending to {}", file_path.display());
        let consumers = config
            .topics
            .iter()
            .map(|t| {
                let mut consumer = ConsumerConfig::new(t, &config.subscription)
                    .with_subscription_type(config.subscription_type);
                if !config.decode_avro {
                    consumer = consumer.with_avro_bytes();
                }
                match &config.expected_schema_subject {
                    Some(subject) => consumer.with_expected_schema_subject(subject),
                    None => consumer,
                }
            })
            .collect();
        Ok((
            FileSink {
                dir: config.path,
                file,
                fail_on: config.fail_on,
            },
            consumers,
        ))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        let mut outcome = BatchOutcome::new();
        let mut buf = Vec::new();
        let mut written = 0u64;
        for (index, record) in records.iter().enumerate() {
            let json = serde_json::from_slice::<Value>(record.payload()).ok();
            if self.marked_to_fail(json.as_ref()) {
                let field = self.fail_on.as_deref().unwrap_or_default();
                outcome.fail(
                    index,
                    ConnectorError::invalid_data(format!("record marked `{field}`: rejected")),
                );
                continue;
            }
            serde_json::to_writer(&mut buf, &line(record, json))
                .map_err(|e| ConnectorError::fatal(format!("encoding a line: {e}")))?;
            buf.push(b'\n');
            written += 1;
        }
        if !buf.is_empty() {
            // A failed write or sync fails the whole batch, which the host
            // retries; the file is cut back to where the batch began so a
            // retry never follows half a line (whole lines already synced may
            // still appear twice: at-least-once).
            let start = self
                .file
                .metadata()
                .map_err(|e| ConnectorError::retryable(format!("reading the file's size: {e}")))?
                .len();
            if let Err(e) = self
                .file
                .write_all(&buf)
                .and_then(|()| self.file.sync_data())
            {
                let _ = self.file.set_len(start);
                return Err(ConnectorError::retryable(format!("writing records: {e}")));
            }
            metrics::counter_add("file_sink_lines_written_total", written, &[]);
        }
        debug!("wrote {written} of {} records", records.len());
        Ok(outcome)
    }

    fn health(&mut self) -> Result<(), String> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!("{} is not a directory", self.dir.display())),
            Err(e) => Err(format!("{}: {e}", self.dir.display())),
        }
    }

    fn close(&mut self) {
        let _ = self.file.sync_all();
    }
}

danube_connect_sdk::export_sink!(FileSink);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("file-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(dir: &std::path::Path, extra: &str) -> (FileSink, Vec<ConsumerConfig>) {
        let json = format!(
            r#"{{"path": {:?}, "topics": ["/default/a"]{extra}}}"#,
            dir.to_str().unwrap()
        );
        FileSink::open(parse_config(&json).unwrap()).unwrap()
    }

    fn lines(dir: &std::path::Path, name: &str) -> Vec<Value> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_partial_last_line_is_dropped_at_open() {
        let dir = temp_dir("partial");
        let long = "x".repeat(100_000);
        for (before, after) in [
            ("", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("no newline at all", ""),
            (&*format!("{long}\n{long}"), &*format!("{long}\n")),
        ] {
            std::fs::write(dir.join("records.jsonl"), before).unwrap();
            drop(open(&dir, ""));
            let now = std::fs::read_to_string(dir.join("records.jsonl")).unwrap();
            assert_eq!(now.len(), after.len(), "from {} bytes", before.len());
            assert_eq!(now, after);
        }
    }

    #[test]
    fn writes_json_lines() {
        let dir = temp_dir("lines");
        let (mut sink, consumers) = open(&dir, "");
        assert_eq!(
            consumers,
            vec![ConsumerConfig::new("/default/a", "file-sink")]
        );
        let out = sink
            .process_batch(vec![
                SinkRecord::new("/default/a", br#"{"n":1}"#.to_vec())
                    .with_key("k")
                    .with_offset(5)
                    .with_publish_time(7)
                    .with_attribute("x", "y"),
                SinkRecord::new("/default/a", b"plain text".to_vec()),
                SinkRecord::new("/default/a", vec![0xff, b'a']),
            ])
            .unwrap();
        assert!(out.is_all_ok());
        let l = lines(&dir, "records.jsonl");
        assert_eq!(l.len(), 3);
        assert_eq!(l[0]["payload"]["n"], 1);
        assert_eq!(l[0]["key"], "k");
        assert_eq!(l[0]["offset"], 5);
        assert_eq!(l[0]["publish_time"], 7);
        assert_eq!(l[0]["topic"], "/default/a");
        assert_eq!(l[0]["attributes"]["x"], "y");
        assert_eq!(l[1]["payload"], "plain text");
        assert_eq!(l[1]["key"], Value::Null);
        assert_eq!(l[2]["payload_base64"], "/2E=");
        assert!(l[2].get("payload").is_none());
        sink.close();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fail_on_reports_invalid_data() {
        let dir = temp_dir("fail");
        let (mut sink, consumers) = open(
            &dir,
            r#", "fail_on": "poison", "file_name": "out.jsonl", "subscription": "s", "subscription_type": "key_shared""#,
        );
        assert_eq!(consumers[0].subscription, "s");
        assert_eq!(consumers[0].subscription_type, SubscriptionType::KeyShared);
        let out = sink
            .process_batch(vec![
                SinkRecord::new("/default/a", br#"{"n":1}"#.to_vec()),
                SinkRecord::new("/default/a", br#"{"n":2,"poison":true}"#.to_vec()),
                SinkRecord::new("/default/a", br#"{"n":3,"poison":false}"#.to_vec()),
            ])
            .unwrap();
        assert_eq!(out.failures().len(), 1);
        assert_eq!(out.failures()[0].index, 1);
        assert!(matches!(
            out.failures()[0].error,
            ConnectorError::InvalidData(_)
        ));
        let l = lines(&dir, "out.jsonl");
        let ns: Vec<i64> = l
            .iter()
            .map(|v| v["payload"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, vec![1, 3]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn config_errors() {
        let err =
            parse_config::<Config>(r#"{"path": "/tmp", "topics": [], "pth": 1}"#).unwrap_err();
        assert!(err.message().contains("pth"), "{err}");
        let cfg: Config =
            parse_config(r#"{"path": "/nonexistent/dir/xyz", "topics": ["/default/a"]}"#).unwrap();
        let err = FileSink::open(cfg).err().unwrap();
        assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
        let err = parse_config::<Config>(
            r#"{"path": "/tmp", "topics": ["/a/b"], "subscription_type": "round_robin"}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("subscription_type"), "{err}");
    }
}
