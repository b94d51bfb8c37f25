//! `clickhouse-sink`: a sink connector that writes JSON records into
//! ClickHouse tables through its HTTP interface, one `INSERT ... FORMAT
//! JSONEachRow` per table per batch. See README.md.

mod client;
mod config;
mod row;

use std::collections::HashMap;

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord, debug, info,
    metrics, warn,
};

use client::{Client, Failure};
use config::{Config, Route};
use danube_sink_mapping::Dialect;
use row::{ClickHouse, metadata_type};

const CONFIG_EXAMPLE: &str = r#"[clickhouse]
# ClickHouse's HTTP interface, http:// or https:// (env CLICKHOUSE_URL); grant
# it with [sandbox] allow.
url = "http://127.0.0.1:8123"
database = "default"
user = "default"
# Env CLICKHOUSE_PASSWORD; sent as the X-ClickHouse-Key header, never logged.
password = ""
# For https://: a PEM CA bundle trusted instead of the built-in Mozilla roots,
# in a directory granted with [sandbox] dirs; and a client certificate, if
# the server asks for one.
# ca_file = "/etc/danube/clickhouse/ca.pem"
# client_cert_file = "/etc/danube/clickhouse/client.pem"
# client_key_file = "/etc/danube/clickhouse/client.key"
connect_timeout_secs = 10
# Bound on each step of a request: sending it, waiting for and reading the answer.
request_timeout_secs = 60

[[clickhouse.routes]]
topic = "/default/sensors"
subscription = "clickhouse-sink"
# exclusive | shared | failover | key_shared
subscription_type = "shared"
table = "sensor_readings"
# CREATE TABLE IF NOT EXISTS ... ENGINE = ReplacingMergeTree ORDER BY (dedup key)
auto_create = true
# Orders the auto-created table, so identifies a row; default: the topic and
# offset metadata columns.
# dedup_key = ["device_id", "seq"]
# Danube metadata columns, all optional: topic String, offset UInt64,
# publish_time UInt64 (ms since the epoch), producer String.
metadata = { topic = "danube_topic", offset = "danube_offset", publish_time = "danube_publish_time", producer = "danube_producer" }

  [[clickhouse.routes.columns]]
  column = "device_id"
  # Dotted path into the JSON payload: "a.b.c".
  path = "device"
  # text | int | bigint | double | bool | timestamp | json
  type = "text"
  # A missing or null field is NULL instead of invalid data.
  nullable = false
"#;

/// One route, ready to write.
struct Table {
    route: Route,
    /// `INSERT INTO ... (columns) FORMAT JSONEachRow`.
    insert: String,
    /// `CREATE TABLE IF NOT EXISTS ...`, until it has run.
    pending_create: Option<String>,
}

impl Table {
    fn new(route: Route, database: &str) -> Result<Table, ConnectorError> {
        let name = format!("`{database}`.`{}`", route.table);
        let columns: Vec<(&str, String)> = route
            .columns
            .iter()
            .map(|c| {
                let kind = ClickHouse::type_name(c.kind);
                let kind = if c.nullable {
                    format!("Nullable({kind})")
                } else {
                    kind.to_string()
                };
                (c.column.as_str(), kind)
            })
            .chain(
                route
                    .metadata
                    .columns()
                    .map(|(field, n)| (n, metadata_type(field).to_string())),
            )
            .collect();
        let insert = format!(
            "INSERT INTO {name} ({}) FORMAT JSONEachRow",
            quoted_list(columns.iter().map(|(n, _)| *n))
        );
        let pending_create = if route.auto_create {
            let definitions = columns
                .iter()
                .map(|(n, k)| format!("`{n}` {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let key = quoted_list(route.dedup_columns()?.into_iter());
            Some(format!(
                "CREATE TABLE IF NOT EXISTS {name} ({definitions}) ENGINE = ReplacingMergeTree ORDER BY ({key})"
            ))
        } else {
            None
        };
        Ok(Table {
            route,
            insert,
            pending_create,
        })
    }
}

/// `a, b` as "`a`, `b`" (names are checked identifiers: nothing to escape).
fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of one batch for one table: JSONEachRow lines in `buf`, row `i`
/// ending at `ends[i]`, from the batch's record `records[i]`.
#[derive(Default)]
struct Rows {
    buf: Vec<u8>,
    ends: Vec<usize>,
    records: Vec<usize>,
}

impl Rows {
    /// The bytes of rows `range`; rows are contiguous in `buf`.
    fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        &self.buf[start..self.ends[range.end - 1]]
    }
}

pub struct ClickHouseSink {
    client: Client,
    tables: Vec<Table>,
    /// Topic to index in `tables`.
    by_topic: HashMap<String, usize>,
}

impl ClickHouseSink {
    /// A `SELECT 1` with the configured credentials.
    fn health_check(&self) -> Result<(), ConnectorError> {
        self.client.execute("SELECT 1", b"")?;
        Ok(())
    }

    /// Creates the tables not created yet.
    fn create_tables(&mut self) -> Result<(), ConnectorError> {
        for table in &mut self.tables {
            if let Some(ddl) = &table.pending_create {
                self.client.execute(ddl, b"")?;
                info!("table `{}` ready", table.route.table);
                table.pending_create = None;
            }
        }
        Ok(())
    }

    /// Inserts rows `range` of `rows` into `table` in one request. If
    /// ClickHouse refuses the data, halves the range until the refused rows
    /// are found alone: they fail as invalid data, the others are written.
    fn insert(
        &self,
        table: &Table,
        rows: &Rows,
        range: std::ops::Range<usize>,
        outcome: &mut BatchOutcome,
    ) -> Result<(), ConnectorError> {
        match self
            .client
            .execute(&table.insert, rows.bytes(range.clone()))
        {
            Ok(_) => {
                metrics::counter_add(
                    "clickhouse_sink_rows_written_total",
                    range.len() as u64,
                    &[("table", table.route.table.as_str())],
                );
                Ok(())
            }
            Err(Failure::Data(why)) if range.len() == 1 => {
                outcome.fail(rows.records[range.start], ConnectorError::invalid_data(why));
                Ok(())
            }
            Err(Failure::Data(why)) => {
                debug!("ClickHouse refused {} rows, bisecting: {why}", range.len());
                let middle = range.start + range.len() / 2;
                self.insert(table, rows, range.start..middle, outcome)?;
                self.insert(table, rows, middle..range.end, outcome)
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }
}

impl Sink for ClickHouseSink {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Writes JSON records into ClickHouse tables over HTTP, one INSERT per table per \
             batch, converting fields to column types first; auto-created tables are \
             ReplacingMergeTree on a dedup key, so redelivered records collapse (read with FINAL).",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        config.check()?;
        let client = Client::new(&config)?;
        let consumers = config
            .routes
            .iter()
            .map(|r| {
                ConsumerConfig::new(&r.topic, &r.subscription)
                    .with_subscription_type(r.subscription_type)
            })
            .collect();
        let by_topic = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.topic.clone(), i))
            .collect();
        let tables = config
            .routes
            .into_iter()
            .map(|r| Table::new(r, &config.database))
            .collect::<Result<_, _>>()?;
        let mut sink = ClickHouseSink {
            client,
            tables,
            by_topic,
        };
        // Checks the credentials now; a server that is down only delays the
        // tables to the first batch.
        match sink.create_tables().and_then(|()| sink.health_check()) {
            Err(e) if e.is_retryable() => {
                warn!(
                    "{}; tables will be created with the first batch",
                    e.message()
                )
            }
            Err(e) => return Err(e),
            Ok(()) => info!("connected to ClickHouse at {}", config.url),
        }
        Ok((sink, consumers))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        self.create_tables()?;
        let mut outcome = BatchOutcome::new();
        let mut rows: Vec<Rows> = self.tables.iter().map(|_| Rows::default()).collect();
        for (index, record) in records.iter().enumerate() {
            let Some(&t) = self.by_topic.get(record.base_topic()) else {
                outcome.fail(
                    index,
                    ConnectorError::invalid_data(format!(
                        "no route for topic `{}`",
                        record.topic()
                    )),
                );
                continue;
            };
            let target = &mut rows[t];
            match row::encode(&self.tables[t].route, record, &mut target.buf) {
                Ok(()) => {
                    target.ends.push(target.buf.len());
                    target.records.push(index);
                }
                Err(e) => outcome.fail(index, e),
            }
        }
        for (table, rows) in self.tables.iter().zip(&rows) {
            if !rows.ends.is_empty() {
                self.insert(table, rows, 0..rows.ends.len(), &mut outcome)?;
            }
        }
        debug!(
            "wrote {} of {} records",
            records.len() - outcome.failures().len(),
            records.len()
        );
        Ok(outcome)
    }

    fn health(&mut self) -> Result<(), String> {
        self.health_check().map_err(|e| e.message().to_string())
    }
}

danube_connect_sdk::export_sink!(ClickHouseSink);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn route(extra: &str) -> Route {
        let config: Config = parse_config(&format!(
            r#"{{"routes": [{{"topic": "/default/a", "table": "t",
                "columns": [{{"column": "n", "path": "v.n", "type": "int"}},
                            {{"column": "s", "path": "s", "type": "text", "nullable": true}}]{extra}}}]}}"#
        ))
        .unwrap();
        config.check().unwrap();
        config.routes.into_iter().next().unwrap()
    }

    #[test]
    fn the_example_config_is_valid() {
        let example: toml::Table = CONFIG_EXAMPLE.parse().unwrap();
        let json = serde_json::to_string(&example["clickhouse"]).unwrap();
        let config: Config = parse_config(&json).unwrap();
        config.check().unwrap();
        assert!(Table::new(config.routes[0].clone(), "default").is_ok());
    }

    #[test]
    fn statements_for_an_auto_created_table() {
        let table = Table::new(
            route(r#", "auto_create": true, "metadata": {"topic": "tp", "offset": "off"}"#),
            "db",
        )
        .unwrap();
        assert_eq!(
            table.insert,
            "INSERT INTO `db`.`t` (`n`, `s`, `tp`, `off`) FORMAT JSONEachRow"
        );
        assert_eq!(
            table.pending_create.as_deref(),
            Some(
                "CREATE TABLE IF NOT EXISTS `db`.`t` (`n` Int32, `s` Nullable(String), `tp` String, `off` UInt64) ENGINE = ReplacingMergeTree ORDER BY (`tp`, `off`)"
            )
        );
        assert!(
            Table::new(route(""), "db")
                .unwrap()
                .pending_create
                .is_none()
        );
    }

    #[test]
    fn rows_are_encoded_and_bad_records_refused() {
        let r = route(r#", "metadata": {"offset": "off", "publish_time": "pt"}"#);
        let mut buf = Vec::new();
        let record = SinkRecord::new("/default/a", br#"{"v":{"n":7}}"#.to_vec())
            .with_offset(9)
            .with_publish_time(1234);
        row::encode(&r, &record, &mut buf).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"n": 7, "s": null, "off": 9, "pt": 1234})
        );
        for (payload, wanted) in [
            (
                &br#"{"v":{"n":"7"}}"#[..],
                "column `n` (Int32): field `v.n`: expected an integer",
            ),
            (br#"{"v":{}}"#, "field `v.n` is missing"),
            (br#"{"v":{"n":1},"s":5}"#, "expected a string"),
            (b"not json", "not valid JSON"),
        ] {
            let before = buf.len();
            let e = row::encode(
                &r,
                &SinkRecord::new("/default/a", payload.to_vec()),
                &mut buf,
            )
            .unwrap_err();
            assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
            assert!(e.message().contains(wanted), "{e}");
            assert_eq!(buf.len(), before);
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let check = |json: &str| {
            parse_config::<Config>(json)
                .and_then(|c| c.check())
                .unwrap_err()
                .message()
                .to_string()
        };
        let cols = r#""columns": [{"column": "n", "path": "n", "type": "int"}]"#;
        assert!(check(r#"{"routes": [], "pasword": "x"}"#).contains("pasword"));
        assert!(check(r#"{"routes": []}"#).contains("at least one"));
        assert!(
            check(&format!(
                r#"{{"url": "ftp://x", "routes": [{{"topic": "/a/b", "table": "t", {cols}}}]}}"#
            ))
            .contains("http:// or https://")
        );
        assert!(
            check(&format!(
                r#"{{"ca_file": "/ca.pem", "routes": [{{"topic": "/a/b", "table": "t", {cols}}}]}}"#
            ))
            .contains("`ca_file` is set but `url` is http://")
        );
        assert!(
            check(&format!(
                r#"{{"routes": [{{"topic": "/a/b", "table": "t; DROP", {cols}}}]}}"#
            ))
            .contains("letters, digits")
        );
        assert!(
            check(&format!(
                r#"{{"routes": [{{"topic": "/a/b", "table": "t", "auto_create": true, {cols}}}]}}"#
            ))
            .contains("needs a dedup key")
        );
        assert!(
            check(&format!(
                r#"{{"routes": [{{"topic": "/a/b", "table": "t", "auto_create": true, "dedup_key": ["zz"], {cols}}}]}}"#
            ))
            .contains("`zz`")
        );
        assert!(
            check(&format!(
                r#"{{"routes": [{{"topic": "/a/b", "table": "t", "metadata": {{"offset": "n"}}, {cols}}}]}}"#
            ))
            .contains("listed twice")
        );
        assert!(
            check(r#"{"routes": [{"topic": "/a/b", "table": "t", "columns": [{"column": "n", "path": "n", "type": "float"}]}]}"#)
                .contains("float")
        );
    }
}
