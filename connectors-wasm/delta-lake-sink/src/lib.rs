//! `delta-lake-sink`: a sink connector that writes the records it consumes
//! into Delta Lake tables, exactly once per Danube offset. See README.md.
//!
//! Per `process-batch`, each route's records become one Parquet file per
//! partition value, committed in one log entry with a `txn` action per topic
//! partition (application id `danube-connect:<subscription>:<topic>`, version
//! the highest offset written). At the first batch the log is read: records
//! at or below their topic partition's `txn` version are already in the
//! table and are skipped, so a replay after a crash adds no row twice. A
//! log entry is created only if absent (local: hard link; S3:
//! `If-None-Match: *`); when another writer took the version, the new
//! entries are read (their `txn`s too) and the commit is tried again on top.
//!
//! Every `checkpoint_interval` commits the state just committed (protocol,
//! metaData, txns, live files) is written as a Parquet checkpoint for
//! readers (`checkpoint.rs`).
//!
//! Batches are small (reliable topics let about ten unacknowledged
//! messages out), so a route stages each batch's rows in the table's
//! storage and commits them once enough have gathered or the oldest is old
//! enough (`staging.rs`); the host's ticks flush an idle topic's rows.
//!
//! Two batches may be in flight: when a batch fails with a retryable error,
//! later records of the same topic partition are refused as retryable too
//! until the failed one is written, so that a later commit's `txn` version
//! never covers records not in the table.

mod checkpoint;
mod config;
mod delta_log;
mod parquet_file;
mod schema;
mod staging;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord, debug, info,
    metrics, warn,
};
use serde_json::{Value as Json, json};

use config::{Config, METADATA_COLUMN, Route, SchemaMode, shown};
use delta_log::{TableColumn, TableState, log_path};
use parquet_file::Column;
use schema::{DataType, Value};
use staging::{Layout, Limits, Staging};
use store::{Put, Store};

const CONFIG_EXAMPLE: &str = r#"[deltalake]
# local (a directory granted with [sandbox] dirs) or s3. Default: s3 when
# the first route's `to` is s3://, local otherwise. azure and gcs: not
# supported yet.
storage_backend = "local"
# For s3: region, endpoint (MinIO and other S3-compatible servers; grant its
# address with [sandbox] allow), and credentials (env
# DELTALAKE_S3_ACCESS_KEY_ID, DELTALAKE_S3_SECRET_ACCESS_KEY; never logged).
# s3_region = "us-east-1"
# s3_endpoint = "http://127.0.0.1:9000"
# s3_allow_http = true
# s3_access_key_id = ""
# s3_secret_access_key = ""
# ca_file = "/etc/danube/s3-ca.pem"
request_timeout_secs = 30
# A checkpoint of the table every this many commits, for readers; 0: none.
checkpoint_interval = 100
# Rows are staged in the table's storage (_danube_staging/) and written as
# data files once a route has this many rows or bytes staged, or the oldest
# waited this long (0: no staging, a file per batch).
target_file_rows = 100000
target_file_bytes = 33554432
flush_interval_ms = 60000

[[deltalake.routes]]
from = "/default/payments"
subscription = "deltalake-payments"
# exclusive | failover | shared | key_shared (one writer per topic
# partition keeps the table exactly-once)
subscription_type = "exclusive"
# A directory (local) or s3://bucket/prefix (s3).
to = "/data/tables/payments"
write_mode = "append"
include_danube_metadata = false
# strict | add_columns
schema_mode = "strict"
partition_columns = ["currency"]
field_mappings = [
    { json_path = "payment_id", column = "payment_id", data_type = "Utf8", nullable = false },
    { json_path = "amount", column = "amount", data_type = "Float64", nullable = false },
    { json_path = "currency", column = "currency", data_type = "Utf8", nullable = false },
    { json_path = "user.id", column = "user_id", data_type = "Int64", nullable = true },
    { json_path = "created_at", column = "created_at", data_type = "Timestamp", nullable = true },
]
"#;

/// A route, ready to write.
struct Table {
    route: Route,
    store: Store,
    /// Each mapping's path, split.
    paths: Vec<Vec<String>>,
    /// Mapping indices of the columns in the data files (not partitions).
    data_columns: Vec<usize>,
    /// Mapping indices of the partition columns, in `partition_columns` order.
    partition_columns: Vec<usize>,
    /// The table's log as read; `None` until the first batch reads it.
    state: Option<TableState>,
    /// The log must be read again before the next commit (a commit's
    /// outcome is unknown).
    stale: bool,
    /// `checkpoint_interval`.
    checkpoint_interval: u64,
    staging: Staging,
}

/// A converted record waiting for its commit.
pub(crate) struct Row {
    index: usize,
    app_id: String,
    offset: u64,
    partition: Vec<Option<String>>,
    cells: Vec<Option<Value>>,
}

pub struct DeltaLakeSink {
    tables: Vec<Table>,
    by_topic: HashMap<String, usize>,
    /// Per application id, the lowest offset of a record that failed as
    /// retryable and is not written yet: later records wait for it.
    held: HashMap<String, u64>,
    last_failure: Option<String>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Table {
    /// The columns the connector writes: the mappings, then the metadata
    /// column.
    fn configured_columns(&self) -> Vec<TableColumn> {
        let mut columns: Vec<TableColumn> = self
            .route
            .field_mappings
            .iter()
            .map(|m| TableColumn {
                name: m.column.clone(),
                type_name: m.data_type.delta_name().to_string(),
                nullable: m.nullable,
            })
            .collect();
        if self.route.include_danube_metadata {
            columns.push(TableColumn {
                name: METADATA_COLUMN.into(),
                type_name: "string".into(),
                nullable: false,
            });
        }
        columns
    }

    /// The data file's columns, in write order.
    fn file_columns(&self) -> Vec<Column> {
        let mut columns: Vec<Column> = self
            .data_columns
            .iter()
            .map(|&i| {
                let m = &self.route.field_mappings[i];
                Column {
                    name: m.column.clone(),
                    data_type: m.data_type,
                    nullable: m.nullable,
                }
            })
            .collect();
        if self.route.include_danube_metadata {
            columns.push(Column {
                name: METADATA_COLUMN.into(),
                data_type: DataType::Utf8,
                nullable: false,
            });
        }
        columns
    }

    /// The state of the log, read now if it was not (or may be out of date).
    fn state(&mut self) -> Result<&mut TableState, ConnectorError> {
        let state = match self.state.take() {
            // A state whose update failed is dropped: the next call reads
            // the log afresh.
            Some(mut state) if self.stale => {
                state.read_new(&self.store)?;
                state
            }
            Some(state) => state,
            None => {
                let state = TableState::load(&self.store)?;
                info!(
                    "table {}: {}",
                    self.store.shown(),
                    match state.version {
                        Some(v) => format!("at version {v}, {} writers known", state.txns.len()),
                        None => "no log yet; created by the first commit".to_string(),
                    }
                );
                state
            }
        };
        self.stale = false;
        Ok(self.state.insert(state))
    }

    /// Compares the table's schema with the configured columns. Returns
    /// the `metaData` action to commit when columns are to be added.
    fn schema_change(&self, state: &TableState) -> Result<Option<Json>, ConnectorError> {
        let configured = self.configured_columns();
        let Some(metadata) = &state.metadata else {
            return Ok(Some(delta_log::new_metadata(
                &configured,
                &self.route.partition_columns,
                now_ms(),
            )));
        };
        let at = self.store.shown();
        let refuse = |why: String| Err(ConnectorError::fatal(format!("table {at}: {why}")));
        if state.partition_columns != self.route.partition_columns {
            return refuse(format!(
                "it is partitioned by {:?}, `partition_columns` says {:?}; configure the table's",
                state.partition_columns, self.route.partition_columns
            ));
        }
        let mut added = Vec::new();
        for c in &configured {
            match state
                .columns
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&c.name))
            {
                Some(t) if t.type_name != c.type_name => {
                    return refuse(format!(
                        "column `{}` is `{}` in the table, the mapping makes it `{}`",
                        shown(&c.name),
                        shown(&t.type_name),
                        c.type_name
                    ));
                }
                Some(t) if !t.nullable && c.nullable => {
                    return refuse(format!(
                        "column `{}` is NOT NULL in the table; set `nullable = false` in its \
                         mapping",
                        shown(&c.name)
                    ));
                }
                Some(_) => {}
                None => added.push(c.clone()),
            }
        }
        for t in &state.columns {
            if !t.nullable
                && !configured
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(&t.name))
            {
                return refuse(format!(
                    "column `{}` is NOT NULL in the table and not mapped; add a mapping for it",
                    shown(&t.name)
                ));
            }
        }
        if added.is_empty() {
            return Ok(None);
        }
        let names: Vec<&str> = added.iter().map(|c| c.name.as_str()).collect();
        if self.route.schema_mode == SchemaMode::Strict {
            return refuse(format!(
                "the table has no column {names:?}; set `schema_mode = \"add_columns\"` to add \
                 them, or map only the table's columns"
            ));
        }
        if let Some(c) = added.iter().find(|c| !c.nullable) {
            return refuse(format!(
                "column `{}` would be added NOT NULL, but the table's rows have no value for it; \
                 make it nullable",
                shown(&c.name)
            ));
        }
        let mut columns = state.columns.clone();
        columns.extend(added);
        let mut metadata = metadata.clone();
        metadata["schemaString"] = Json::String(delta_log::schema_string(&columns));
        Ok(Some(metadata))
    }

    /// Converts a record to a row, or says why it does not fit.
    fn convert(&self, index: usize, record: &SinkRecord, app_id: String) -> Result<Row, String> {
        let payload: Json = serde_json::from_slice(record.payload())
            .map_err(|e| format!("the payload is not JSON ({e})"))?;
        let mut values = Vec::with_capacity(self.route.field_mappings.len());
        for (m, path) in self.route.field_mappings.iter().zip(&self.paths) {
            let value = schema::at_path(&payload, path);
            if parquet_file::is_null(value) {
                if !m.nullable {
                    return Err(format!(
                        "column `{}` is not nullable and `{}` is missing or null",
                        shown(&m.column),
                        shown(&m.json_path)
                    ));
                }
                values.push(None);
            } else {
                values.push(Some(m.data_type.convert(&m.column, value.unwrap())?));
            }
        }
        let partition = self
            .partition_columns
            .iter()
            .map(|&i| {
                values[i]
                    .as_ref()
                    .map(|v| match (self.route.field_mappings[i].data_type, v) {
                        (DataType::Date, Value::I32(d)) => schema::format_date(*d),
                        (_, Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        (_, Value::I32(i)) => i.to_string(),
                        (_, Value::I64(i)) => i.to_string(),
                        (_, Value::Bool(b)) => b.to_string(),
                        (_, Value::F32(f)) => f.to_string(),
                        (_, Value::F64(f)) => f.to_string(),
                    })
            })
            .collect();
        let mut cells: Vec<Option<Value>> = self
            .data_columns
            .iter()
            .map(|&i| values[i].take())
            .collect();
        if self.route.include_danube_metadata {
            let meta = json!({
                "topic": record.topic(),
                "offset": record.offset(),
                "publish_time": record.publish_time(),
                "producer": record.producer(),
                "key": record.key(),
                "attributes": record.attributes().iter().cloned().collect::<BTreeMap<_, _>>(),
            });
            cells.push(Some(Value::Bytes(meta.to_string().into_bytes())));
        }
        Ok(Row {
            index,
            app_id,
            offset: record.offset(),
            partition,
            cells,
        })
    }

    /// Writes a batch's rows: staged, or committed at once without
    /// staging. Returns how many rows were staged or committed.
    fn write(&mut self, mut rows: Vec<Row>) -> Result<usize, ConnectorError> {
        // Rows an earlier run staged go in first.
        if !self.staging.listed() {
            self.flush()?;
        }
        if !self.staging.enabled() {
            return self.commit(rows);
        }
        self.keep_new_rows(&mut rows)?;
        if rows.is_empty() {
            return Ok(0);
        }
        // A table this route cannot write to stops the connector before
        // the batch is acknowledged, not at the commit.
        self.checked_metadata()?;
        let n = rows.len();
        let columns = self.file_columns();
        let layout = Layout {
            columns: &columns,
            partition_columns: &self.route.partition_columns,
        };
        self.staging.stage(&self.store, &layout, rows)?;
        metrics::counter_add("deltalake_rows_staged_total", n as u64, &[]);
        Ok(n)
    }

    /// Drops the rows the table holds already (at or below their `txn`
    /// version), reading the log first if needed.
    fn keep_new_rows(&mut self, rows: &mut Vec<Row>) -> Result<(), ConnectorError> {
        let state = self.state()?;
        rows.retain(|r| {
            state
                .txns
                .get(&r.app_id)
                .is_none_or(|&v| (r.offset as i64) > v)
        });
        Ok(())
    }

    /// Whether this route may write to the table as read: its protocol,
    /// its schema. Returns the `metaData` action a commit must carry, if
    /// any (a new table, added columns).
    fn checked_metadata(&self) -> Result<Option<Json>, ConnectorError> {
        let state = self.state.as_ref().expect("the log was read");
        state.check_protocol(&self.store.shown())?;
        self.schema_change(state)
    }

    /// Commits every staged row when it is time. Returns how many rows
    /// went into the table.
    fn flush_if_due(&mut self) -> Result<usize, ConnectorError> {
        match self.staging.due() {
            true => self.flush(),
            false => Ok(0),
        }
    }

    /// Commits every staged row, then removes the staged objects.
    fn flush(&mut self) -> Result<usize, ConnectorError> {
        let columns = self.file_columns();
        let layout = Layout {
            columns: &columns,
            partition_columns: &self.route.partition_columns,
        };
        let (rows, paths) = self.staging.take(&self.store, &layout)?;
        if paths.is_empty() {
            return Ok(0);
        }
        let n = self.commit(rows)?;
        self.staging.committed(&self.store, &paths);
        if n > 0 {
            info!(
                "table {}: {n} staged rows written ({} staged objects)",
                self.store.shown(),
                paths.len()
            );
        }
        Ok(n)
    }

    /// Commits `rows` (those not in the table yet), retrying on top of
    /// other writers' commits. Returns how many rows were written.
    fn commit(&mut self, mut rows: Vec<Row>) -> Result<usize, ConnectorError> {
        const MAX_CONFLICTS: usize = 100;
        for _ in 0..MAX_CONFLICTS {
            self.keep_new_rows(&mut rows)?;
            if rows.is_empty() {
                return Ok(0);
            }
            let metadata = self.checked_metadata()?;
            let state = self.state.as_ref().unwrap();
            let new_table = state.version.is_none();
            let version = state.version.map_or(0, |v| v + 1);
            let entry = self.entry(&rows, new_table, metadata)?;
            match self
                .store
                .put_if_absent(&log_path(version), entry.as_bytes())
            {
                Ok(Put::Created) => {
                    let state = self.state.as_mut().unwrap();
                    state
                        .apply(version, entry.as_bytes())
                        .map_err(ConnectorError::fatal)?;
                    if self.checkpoint_interval > 0
                        && version > 0
                        && version.is_multiple_of(self.checkpoint_interval)
                    {
                        // The commit stands; a checkpoint that fails only
                        // leaves readers more JSON to read.
                        if let Err(e) = self.checkpoint(version) {
                            warn!(
                                "table {}: no checkpoint at version {version}: {}",
                                self.store.shown(),
                                e.message()
                            );
                        }
                    }
                    metrics::counter_add("deltalake_rows_written_total", rows.len() as u64, &[]);
                    return Ok(rows.len());
                }
                Ok(Put::Exists) => {
                    debug!(
                        "table {}: version {version} taken by another writer, reading it",
                        self.store.shown()
                    );
                    metrics::counter_add("deltalake_commit_conflicts_total", 1, &[]);
                    self.stale = true;
                }
                Err(e) => {
                    // The entry may have been written before the failure:
                    // read the log before trying again.
                    self.stale = true;
                    return Err(e);
                }
            }
        }
        Err(ConnectorError::retryable(format!(
            "table {}: {MAX_CONFLICTS} commits in a row lost to other writers",
            self.store.shown()
        )))
    }

    /// Writes the checkpoint of `version` (the state just committed) and
    /// points `_last_checkpoint` at it.
    fn checkpoint(&self, version: u64) -> Result<(), ConnectorError> {
        let state = self.state.as_ref().unwrap();
        let actions = delta_log::checkpoint_actions(state);
        let bytes = checkpoint::write(&actions).map_err(ConnectorError::fatal)?;
        self.store.put(
            &format!("_delta_log/{version:020}.checkpoint.parquet"),
            &bytes,
        )?;
        let last = json!({"version": version, "size": actions.len()});
        self.store
            .put("_delta_log/_last_checkpoint", last.to_string().as_bytes())?;
        metrics::counter_add("deltalake_checkpoints_total", 1, &[]);
        debug!(
            "table {}: checkpoint at version {version}",
            self.store.shown()
        );
        Ok(())
    }

    /// Writes the data files of `rows` and returns the log entry that adds
    /// them.
    fn entry(
        &self,
        rows: &[Row],
        new_table: bool,
        metadata: Option<Json>,
    ) -> Result<String, ConnectorError> {
        let now = now_ms();
        let mut lines: Vec<Json> = vec![json!({"commitInfo": {
            "timestamp": now,
            "operation": if new_table { "CREATE TABLE" } else { "WRITE" },
            "operationParameters": {
                "mode": "Append",
                "partitionBy": serde_json::to_string(&self.route.partition_columns).unwrap_or_default(),
            },
            "isBlindAppend": true,
            "engineInfo": format!("danube-connect delta-lake-sink {}", env!("CARGO_PKG_VERSION")),
        }})];
        if new_table {
            lines.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
        }
        if let Some(metadata) = metadata {
            lines.push(json!({"metaData": metadata}));
        }
        // One file per partition value.
        let mut groups: BTreeMap<Vec<Option<String>>, Vec<&Row>> = BTreeMap::new();
        for row in rows {
            groups.entry(row.partition.clone()).or_default().push(row);
        }
        let columns = self.file_columns();
        for (partition, group) in groups {
            let cells: Vec<Vec<Option<Value>>> = group.iter().map(|r| r.cells.clone()).collect();
            let file = parquet_file::write(&columns, &cells).map_err(ConnectorError::fatal)?;
            let mut dir = String::new();
            let mut values = Vec::new();
            for (name, value) in self.route.partition_columns.iter().zip(&partition) {
                let shown_value = match value {
                    Some(v) => delta_log::escape_partition_value(v),
                    None => "__HIVE_DEFAULT_PARTITION__".to_string(),
                };
                dir.push_str(&format!(
                    "{}={shown_value}/",
                    delta_log::escape_partition_value(name)
                ));
                values.push((name.clone(), value.clone()));
            }
            let path = format!(
                "{dir}part-00000-{}-c000.snappy.parquet",
                uuid::Uuid::new_v4()
            );
            self.store.make_dirs(&path)?;
            self.store.put(&path, &file.bytes)?;
            metrics::counter_add(
                "deltalake_bytes_written_total",
                file.bytes.len() as u64,
                &[],
            );
            lines.push(delta_log::add_action(
                &delta_log::uri_encode_path(&path),
                &values,
                file.bytes.len(),
                now,
                &file.stats,
            ));
        }
        let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
        for row in rows {
            let v = versions.entry(&row.app_id).or_insert(row.offset);
            *v = (*v).max(row.offset);
        }
        for (app_id, version) in versions {
            lines.push(json!({"txn": {"appId": app_id, "version": version, "lastUpdated": now}}));
        }
        self.store.make_dirs(&log_path(0))?;
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        Ok(text)
    }
}

/// The `txn` application id of a subscription's topic partition.
fn app_id(subscription: &str, topic: &str) -> String {
    format!("danube-connect:{subscription}:{topic}")
}

impl Sink for DeltaLakeSink {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Writes records into Delta Lake tables (Parquet files and the table's _delta_log) \
             in a local directory or S3-compatible storage, exactly once per Danube offset; \
             records that do not fit the mapped columns go to the dead-letter topic.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        config.check()?;
        let limits = Limits {
            rows: config.target_file_rows.max(1),
            bytes: config.target_file_bytes.max(1),
            interval: Duration::from_millis(config.flush_interval_ms),
        };
        let mut tables = Vec::new();
        let mut by_topic = HashMap::new();
        let mut consumers = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let store = Store::open(&config, &route.to)?;
            let paths = route
                .field_mappings
                .iter()
                .map(|m| m.json_path.split('.').map(String::from).collect())
                .collect();
            let partition_columns: Vec<usize> = route
                .partition_columns
                .iter()
                .map(|p| {
                    route
                        .field_mappings
                        .iter()
                        .position(|m| &m.column == p)
                        .unwrap()
                })
                .collect();
            let data_columns = (0..route.field_mappings.len())
                .filter(|i| !partition_columns.contains(i))
                .collect();
            let mut consumer = ConsumerConfig::new(&route.from, &route.subscription)
                .with_subscription_type(route.subscription_type);
            if let Some(subject) = &route.expected_schema_subject {
                consumer = consumer.with_expected_schema_subject(subject);
            }
            consumers.push(consumer);
            by_topic.insert(route.from.clone(), i);
            info!(
                "writing {} to the Delta table {}",
                route.from,
                store.shown()
            );
            tables.push(Table {
                route: route.clone(),
                store,
                paths,
                data_columns,
                partition_columns,
                state: None,
                stale: false,
                checkpoint_interval: config.checkpoint_interval,
                staging: Staging::new(&route.subscription, limits),
            });
        }
        Ok((
            DeltaLakeSink {
                tables,
                by_topic,
                held: HashMap::new(),
                last_failure: None,
            },
            consumers,
        ))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        let mut outcome = BatchOutcome::new();
        let mut rows: Vec<Vec<Row>> = self.tables.iter().map(|_| Vec::new()).collect();
        // A held topic partition: its records wait unless the batch brings
        // the one that failed.
        // Each record's table and `txn` application id, if it has a route.
        let routed: Vec<Option<(usize, String)>> = records
            .iter()
            .map(|record| {
                let &table = self.by_topic.get(record.base_topic())?;
                let id = app_id(&self.tables[table].route.subscription, record.topic());
                Some((table, id))
            })
            .collect();
        let mut releasing: HashMap<&str, bool> = HashMap::new();
        for (record, routed) in records.iter().zip(&routed) {
            if let Some((_, id)) = routed
                && let Some(&low) = self.held.get(id)
            {
                *releasing.entry(id).or_default() |= record.offset() <= low;
            }
        }
        for ((index, record), routed) in records.iter().enumerate().zip(&routed) {
            let Some((table, id)) = routed else {
                outcome.fail(
                    index,
                    ConnectorError::invalid_data(format!(
                        "no route for topic `{}`",
                        shown(record.topic())
                    )),
                );
                continue;
            };
            if releasing.get(id.as_str()) == Some(&false) {
                outcome.fail(
                    index,
                    ConnectorError::retryable(format!(
                        "waiting for an earlier batch of {} to be written first",
                        shown(record.topic())
                    )),
                );
                continue;
            }
            match self.tables[*table].convert(index, record, id.clone()) {
                Ok(row) => rows[*table].push(row),
                Err(why) => {
                    metrics::counter_add("deltalake_records_invalid_total", 1, &[]);
                    outcome.fail(index, ConnectorError::invalid_data(why));
                }
            }
        }
        let mut written = 0;
        for (table, rows) in rows.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let indices: Vec<(usize, String, u64)> = rows
                .iter()
                .map(|r| (r.index, r.app_id.clone(), r.offset))
                .collect();
            match self.tables[table].write(rows) {
                Ok(n) => {
                    written += n;
                    for (_, id, _) in &indices {
                        self.held.remove(id);
                    }
                    self.last_failure = None;
                }
                Err(e) if e.is_retryable() => {
                    warn!("{}", e.message());
                    self.last_failure = Some(e.message().to_string());
                    for (index, id, offset) in indices {
                        let low = self.held.entry(id).or_insert(offset);
                        *low = (*low).min(offset);
                        outcome.fail(index, e.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // The batch is staged: a commit that fails now is tried again at
        // the next batch or tick, and does not fail this one.
        for table in 0..self.tables.len() {
            if let Err(e) = self.flush_if_due(table)
                && !e.is_retryable()
            {
                return Err(e);
            }
        }
        debug!("wrote {written} of {} records", records.len());
        Ok(outcome)
    }

    fn tick(&mut self) -> Result<(), ConnectorError> {
        for table in 0..self.tables.len() {
            self.flush_if_due(table)?;
        }
        Ok(())
    }

    fn close(&mut self) {
        for table in &mut self.tables {
            if table.staging.rows() > 0
                && let Err(e) = table.flush()
            {
                warn!(
                    "table {}: staged rows not written at close, written at the next start: {}",
                    table.store.shown(),
                    e.message()
                );
            }
        }
    }

    fn health(&mut self) -> Result<(), String> {
        match &self.last_failure {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

impl DeltaLakeSink {
    /// Commits a table's staged rows when due; a failure marks the sink
    /// unhealthy until a write succeeds.
    fn flush_if_due(&mut self, table: usize) -> Result<(), ConnectorError> {
        let table = &mut self.tables[table];
        match table.flush_if_due() {
            Ok(_) => {
                metrics::gauge_set(
                    "deltalake_rows_staged",
                    table.staging.rows() as f64,
                    &[("table", &table.store.shown())],
                );
                Ok(())
            }
            Err(e) => {
                warn!("{}", e.message());
                self.last_failure = Some(e.message().to_string());
                Err(e)
            }
        }
    }
}

danube_connect_sdk::export_sink!(DeltaLakeSink);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn config(text: &str) -> Result<Config, ConnectorError> {
        let table: toml::Table = text.parse().unwrap();
        let json = serde_json::to_string(&table["deltalake"]).unwrap();
        let config: Config = parse_config(&json)?;
        config.check()?;
        Ok(config)
    }

    /// The example with each batch committed as it comes (no staging).
    fn unstaged() -> String {
        CONFIG_EXAMPLE.replace("flush_interval_ms = 60000", "flush_interval_ms = 0")
    }

    #[test]
    fn the_example_config_is_valid() {
        config(CONFIG_EXAMPLE).unwrap();
    }

    #[test]
    fn a_checkpoint_is_written_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let text = unstaged()
            .replace("/data/tables/payments", dir.path().to_str().unwrap())
            .replace("checkpoint_interval = 100", "checkpoint_interval = 2");
        let (mut sink, _) = DeltaLakeSink::open(config(&text).unwrap()).unwrap();
        for offset in 0..5 {
            let record = SinkRecord::new(
                "/default/payments",
                serde_json::to_vec(&json!({"payment_id": "p", "amount": 1.0, "currency": "EUR"}))
                    .unwrap(),
            )
            .with_offset(offset);
            assert!(sink.process_batch(vec![record]).unwrap().is_all_ok());
        }
        let log = dir.path().join("_delta_log");
        assert!(log.join(format!("{:020}.checkpoint.parquet", 2)).exists());
        assert!(log.join(format!("{:020}.checkpoint.parquet", 4)).exists());
        let last = std::fs::read_to_string(log.join("_last_checkpoint")).unwrap();
        // protocol, metaData, one txn, five adds
        assert_eq!(last, r#"{"size":8,"version":4}"#);

        // Without the JSON entries up to the checkpoint, a new instance
        // starts from it: the replay of offset 4 is skipped, offset 5 is
        // committed as version 5, and the next checkpoint holds every file.
        for v in 0..=4 {
            std::fs::remove_file(dir.path().join(log_path(v))).unwrap();
        }
        let (mut fresh, _) = DeltaLakeSink::open(config(&text).unwrap()).unwrap();
        let record = |offset| {
            SinkRecord::new(
                "/default/payments",
                serde_json::to_vec(&json!({"payment_id": "p", "amount": 1.0, "currency": "EUR"}))
                    .unwrap(),
            )
            .with_offset(offset)
        };
        assert!(fresh.process_batch(vec![record(4)]).unwrap().is_all_ok());
        assert!(
            !dir.path().join(log_path(5)).exists(),
            "offset 4 is in the checkpoint"
        );
        assert!(fresh.process_batch(vec![record(5)]).unwrap().is_all_ok());
        assert!(fresh.process_batch(vec![record(6)]).unwrap().is_all_ok());
        assert!(dir.path().join(log_path(6)).exists());
        let last = std::fs::read_to_string(log.join("_last_checkpoint")).unwrap();
        // protocol, metaData, one txn, the seven files: those of the checkpoint too
        assert_eq!(last, r#"{"size":10,"version":6}"#);
    }

    #[test]
    fn azure_and_gcs_are_refused_as_not_supported_yet() {
        let e = config(
            &CONFIG_EXAMPLE.replace("storage_backend = \"local\"", "storage_backend = \"azure\""),
        )
        .err()
        .unwrap();
        assert!(e.message().contains("not supported yet"), "{}", e.message());
    }

    #[test]
    fn a_local_table_is_created_appended_and_replays_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = unstaged().replace("/data/tables/payments", dir.path().to_str().unwrap());
        let cfg = config(&text).unwrap();
        let (mut sink, _) = DeltaLakeSink::open(cfg).unwrap();
        let rec = |offset: u64, payload: Json| {
            SinkRecord::new("/default/payments", serde_json::to_vec(&payload).unwrap())
                .with_offset(offset)
        };
        let batch = vec![
            rec(
                0,
                json!({"payment_id": "p0", "amount": 1.5, "currency": "EUR", "user": {"id": 3}}),
            ),
            rec(
                1,
                json!({"payment_id": "p1", "amount": "bad", "currency": "EUR"}),
            ),
            rec(
                2,
                json!({"payment_id": "p2", "amount": 2.0, "currency": "USD",
                "created_at": "2024-05-01T12:00:00Z"}),
            ),
        ];
        let outcome = sink.process_batch(batch).unwrap();
        assert_eq!(outcome.failures().len(), 1);
        assert_eq!(outcome.failures()[0].index, 1);
        let log0 = std::fs::read_to_string(dir.path().join(log_path(0))).unwrap();
        assert!(log0.contains("\"txn\""), "{log0}");
        assert_eq!(
            log0.matches("\"add\"").count(),
            2,
            "one file per partition value"
        );
        // A replay of offset 2 with a new one: only offset 3 is written.
        let again = vec![
            rec(
                2,
                json!({"payment_id": "p2", "amount": 2.0, "currency": "USD"}),
            ),
            rec(
                3,
                json!({"payment_id": "p3", "amount": 3.0, "currency": "USD"}),
            ),
        ];
        assert!(sink.process_batch(again).unwrap().is_all_ok());
        let log1 = std::fs::read_to_string(dir.path().join(log_path(1))).unwrap();
        assert_eq!(log1.matches("\"add\"").count(), 1);
        assert!(log1.contains("\"numRecords\\\":1"), "{log1}");
        // A fresh instance reads the log and skips everything written.
        let (mut fresh, _) = DeltaLakeSink::open(config(&text).unwrap()).unwrap();
        let replay = vec![rec(
            3,
            json!({"payment_id": "p3", "amount": 3.0, "currency": "USD"}),
        )];
        assert!(fresh.process_batch(replay).unwrap().is_all_ok());
        assert!(!dir.path().join(log_path(2)).exists());
    }

    fn payment(topic: &str, offset: u64) -> SinkRecord {
        let payload = json!({"payment_id": format!("p{offset}"), "amount": 1.0, "currency": "EUR"});
        SinkRecord::new(topic, serde_json::to_vec(&payload).unwrap()).with_offset(offset)
    }

    fn local(dir: &std::path::Path, extra: &str) -> Config {
        let text = unstaged()
            .replace("/data/tables/payments", dir.to_str().unwrap())
            .replace("schema_mode = \"strict\"", extra);
        config(&text).unwrap()
    }

    #[test]
    fn a_version_taken_by_another_writer_is_read_and_committed_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) = DeltaLakeSink::open(local(dir.path(), "")).unwrap();
        let mut other = local(dir.path(), "");
        other.routes[0].subscription = "other".into();
        let (mut b, _) = DeltaLakeSink::open(other).unwrap();
        assert!(
            a.process_batch(vec![payment("/default/payments", 0)])
                .unwrap()
                .is_all_ok()
        );
        assert!(
            b.process_batch(vec![payment("/default/payments", 0)])
                .unwrap()
                .is_all_ok()
        );
        // `a` still believes version 0 is the last: version 1 is taken.
        assert!(
            a.process_batch(vec![payment("/default/payments", 1)])
                .unwrap()
                .is_all_ok()
        );
        let log2 = std::fs::read_to_string(dir.path().join(log_path(2))).unwrap();
        assert!(
            log2.contains("danube-connect:deltalake-payments:/default/payments"),
            "{log2}"
        );
        assert!(!log2.contains("metaData"), "the table exists: {log2}");
        let log1 = std::fs::read_to_string(dir.path().join(log_path(1))).unwrap();
        assert!(log1.contains("danube-connect:other:"), "{log1}");
    }

    #[test]
    fn missing_columns_are_refused_in_strict_mode_and_added_in_add_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mut narrow = local(dir.path(), "");
        narrow.routes[0].field_mappings.truncate(3);
        let (mut first, _) = DeltaLakeSink::open(narrow).unwrap();
        assert!(
            first
                .process_batch(vec![payment("/default/payments", 0)])
                .unwrap()
                .is_all_ok()
        );

        let (mut strict, _) = DeltaLakeSink::open(local(dir.path(), "")).unwrap();
        let e = strict
            .process_batch(vec![payment("/default/payments", 1)])
            .err()
            .unwrap();
        assert!(
            e.message().contains("schema_mode = \"add_columns\""),
            "{}",
            e.message()
        );

        let (mut adding, _) =
            DeltaLakeSink::open(local(dir.path(), "schema_mode = \"add_columns\"")).unwrap();
        assert!(
            adding
                .process_batch(vec![payment("/default/payments", 1)])
                .unwrap()
                .is_all_ok()
        );
        let log1 = std::fs::read_to_string(dir.path().join(log_path(1))).unwrap();
        assert!(
            log1.contains("metaData") && log1.contains("created_at"),
            "{log1}"
        );
    }

    #[test]
    fn after_a_retryable_failure_later_records_of_the_partition_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, _) = DeltaLakeSink::open(local(dir.path(), "")).unwrap();
        let id = app_id("deltalake-payments", "/default/payments");
        // As if the batch of offset 5 had failed as retryable.
        sink.held.insert(id.clone(), 5);
        let outcome = sink
            .process_batch(vec![payment("/default/payments", 6)])
            .unwrap();
        assert_eq!(outcome.failures().len(), 1);
        assert!(outcome.failures()[0].error.is_retryable());
        assert!(!dir.path().join(log_path(0)).exists());
        // Its retry brings offset 5 (with 6): both are written, the hold ends.
        let retry = vec![
            payment("/default/payments", 5),
            payment("/default/payments", 6),
        ];
        assert!(sink.process_batch(retry).unwrap().is_all_ok());
        assert!(sink.held.is_empty());
        assert!(
            sink.process_batch(vec![payment("/default/payments", 7)])
                .unwrap()
                .is_all_ok()
        );
    }

    /// The example on a local table in `dir`, staging until `rows` rows
    /// or `interval_ms`.
    fn staged(dir: &std::path::Path, rows: u64, interval_ms: u64) -> Config {
        let text = CONFIG_EXAMPLE
            .replace("/data/tables/payments", dir.to_str().unwrap())
            .replace(
                "target_file_rows = 100000",
                &format!("target_file_rows = {rows}"),
            )
            .replace(
                "flush_interval_ms = 60000",
                &format!("flush_interval_ms = {interval_ms}"),
            );
        config(&text).unwrap()
    }

    fn staged_objects(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        match std::fs::read_dir(dir.join("_danube_staging/deltalake-payments")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn log_entries(dir: &std::path::Path) -> usize {
        (0..)
            .take_while(|&v| dir.join(log_path(v)).exists())
            .count()
    }

    #[test]
    fn small_batches_are_staged_and_written_as_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, _) = DeltaLakeSink::open(staged(dir.path(), 10, 60_000)).unwrap();
        for offset in 0..9 {
            let outcome = sink
                .process_batch(vec![payment("/default/payments", offset)])
                .unwrap();
            assert!(outcome.is_all_ok());
        }
        assert_eq!(log_entries(dir.path()), 0, "nothing committed yet");
        assert_eq!(staged_objects(dir.path()).len(), 9);
        sink.tick().unwrap();
        assert_eq!(log_entries(dir.path()), 0, "a tick before the interval");
        // The tenth row reaches `target_file_rows`.
        assert!(
            sink.process_batch(vec![payment("/default/payments", 9)])
                .unwrap()
                .is_all_ok()
        );
        let log0 = std::fs::read_to_string(dir.path().join(log_path(0))).unwrap();
        assert_eq!(log0.matches("\"add\"").count(), 1, "{log0}");
        assert!(log0.contains("\"numRecords\\\":10"), "{log0}");
        assert!(log0.contains("\"version\":9"), "{log0}");
        assert!(staged_objects(dir.path()).is_empty());
    }

    #[test]
    fn a_row_staged_longer_than_the_interval_is_written_at_a_tick() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, _) = DeltaLakeSink::open(staged(dir.path(), 1000, 50)).unwrap();
        assert!(
            sink.process_batch(vec![payment("/default/payments", 0)])
                .unwrap()
                .is_all_ok()
        );
        sink.tick().unwrap();
        assert_eq!(log_entries(dir.path()), 0);
        std::thread::sleep(Duration::from_millis(60));
        sink.tick().unwrap();
        assert_eq!(log_entries(dir.path()), 1);
        assert!(staged_objects(dir.path()).is_empty());
    }

    /// A crash with rows staged (no `close`): the next instance commits
    /// them at its first call and drops a replay of a staged record; an
    /// object left behind after its commit is dropped, not written twice.
    #[test]
    fn staged_rows_outlive_a_crash_and_are_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut crashed, _) = DeltaLakeSink::open(staged(dir.path(), 1000, 60_000)).unwrap();
        for offset in 0..3 {
            assert!(
                crashed
                    .process_batch(vec![payment("/default/payments", offset)])
                    .unwrap()
                    .is_all_ok()
            );
        }
        let kept = staged_objects(dir.path())[0].clone();
        let copy = std::fs::read(&kept).unwrap();
        drop(crashed);

        let (mut next, _) = DeltaLakeSink::open(staged(dir.path(), 1000, 60_000)).unwrap();
        // The replay of offset 2 (its acknowledgement was lost) and a new one.
        let batch = vec![
            payment("/default/payments", 2),
            payment("/default/payments", 3),
        ];
        assert!(next.process_batch(batch).unwrap().is_all_ok());
        let log0 = std::fs::read_to_string(dir.path().join(log_path(0))).unwrap();
        assert!(log0.contains("\"numRecords\\\":3"), "{log0}");
        // As if the removal after that commit had not happened.
        std::fs::write(&kept, copy).unwrap();
        next.close();
        let log1 = std::fs::read_to_string(dir.path().join(log_path(1))).unwrap();
        assert!(log1.contains("\"numRecords\\\":1"), "offset 3 only: {log1}");
        let (mut last, _) = DeltaLakeSink::open(staged(dir.path(), 1000, 60_000)).unwrap();
        last.tick().unwrap();
        assert_eq!(
            log_entries(dir.path()),
            2,
            "the leftover's rows are in the table"
        );
        assert!(staged_objects(dir.path()).is_empty());
    }
}
