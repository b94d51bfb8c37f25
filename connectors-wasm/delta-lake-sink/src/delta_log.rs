//! The Delta transaction log, written and read by the connector itself with
//! serde_json: `_delta_log/<version, 20 digits>.json`, one action per line.
//!
//! Why not `delta_kernel` (or `deltalake`): an append-only writer needs five
//! actions (`protocol`, `metaData`, `add`, `txn`, `commitInfo`) and, to
//! resume, the `txn` versions and the schema of the log; the kernel brings an
//! engine abstraction, arrow and object_store for reading that this sink
//! does not need, and `deltalake` does not build for wasm32-wasip2 (tokio
//! networking, object_store's clients). The protocol written is reader 1 /
//! writer 2, which every current delta-rs, Spark and Trino reads.
//!
//! Reading starts at the checkpoint `_last_checkpoint` names (a single-part
//! Parquet checkpoint, read row by row with the `parquet` crate's record
//! API), or at version 0, and goes on until a version is missing. A table
//! whose only checkpoint cannot be read here (several parts) and whose early
//! JSON entries were cleaned up is refused with an error that says so.

use std::collections::HashMap;

use danube_connect_sdk::ConnectorError;
use serde_json::{Value as Json, json};

use crate::store::Store;

/// The highest writer protocol version this connector honours.
const MAX_WRITER_VERSION: i64 = 2;

/// A column of the table's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct TableColumn {
    pub name: String,
    /// The Delta type: a primitive's name, or the JSON of a nested type.
    pub type_name: String,
    pub nullable: bool,
}

/// What the connector knows of a table from its log.
#[derive(Debug, Default)]
pub struct TableState {
    /// The last version read; `None`: the table has no log yet.
    pub version: Option<u64>,
    /// The latest `metaData` action, as written.
    pub metadata: Option<Json>,
    pub columns: Vec<TableColumn>,
    pub partition_columns: Vec<String>,
    /// The highest `txn` version of each application id.
    pub txns: HashMap<String, i64>,
    /// `protocol.minWriterVersion`.
    pub writer_version: i64,
    /// The latest `protocol` action.
    pub protocol: Option<Json>,
    /// The live files: path to its `add` action (for checkpoints).
    pub files: std::collections::BTreeMap<String, Json>,
    /// The last `txn` action of each application id (for checkpoints).
    pub txn_actions: HashMap<String, Json>,
}

/// The log entry of `version`.
pub fn log_path(version: u64) -> String {
    format!("_delta_log/{version:020}.json")
}

impl TableState {
    /// Reads the whole log of the table.
    pub fn load(store: &Store) -> Result<TableState, ConnectorError> {
        let mut state = TableState::default();
        let last = store.get("_delta_log/_last_checkpoint")?;
        if let Some(last) = &last
            && let Some(why) = state.load_checkpoint(store, last)?
        {
            danube_connect_sdk::warn!(
                "table {}: reading the log from version 0: {why}",
                store.shown()
            );
            state = TableState::default();
        }
        state.read_new(store)?;
        if state.version.is_none() && last.is_some() {
            return Err(ConnectorError::fatal(format!(
                "the table at {} has a checkpoint but no log entry 0 (older entries were cleaned \
                 up): this connector reads JSON log entries only, not Parquet checkpoints yet; \
                 write to a new table",
                store.shown()
            )));
        }
        Ok(state)
    }

    /// Reads the entries after the last one read, until one is missing.
    /// Returns how many were read.
    pub fn read_new(&mut self, store: &Store) -> Result<usize, ConnectorError> {
        let mut read = 0;
        loop {
            let next = self.version.map_or(0, |v| v + 1);
            let Some(bytes) = store.get(&log_path(next))? else {
                return Ok(read);
            };
            self.apply(next, &bytes).map_err(|e| {
                ConnectorError::fatal(format!("{} {}: {e}", store.shown(), log_path(next)))
            })?;
            read += 1;
        }
    }

    /// Applies the actions of one log entry.
    pub fn apply(&mut self, version: u64, bytes: &[u8]) -> Result<(), String> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| "the log entry is not UTF-8".to_string())?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let action: Json =
                serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", n + 1))?;
            self.apply_action(&action)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        self.version = Some(version);
        Ok(())
    }

    /// Applies one action, `{"<kind>": {...}}`.
    fn apply_action(&mut self, action: &Json) -> Result<(), String> {
        if let Some(txn) = action.get("txn") {
            let (Some(app), Some(v)) = (
                txn.get("appId").and_then(Json::as_str),
                txn.get("version").and_then(Json::as_i64),
            ) else {
                return Err("a txn action without appId or version".to_string());
            };
            let entry = self.txns.entry(app.to_string()).or_insert(v);
            *entry = (*entry).max(v);
            self.txn_actions.insert(app.to_string(), txn.clone());
        } else if let Some(add) = action.get("add") {
            if let Some(path) = add.get("path").and_then(Json::as_str) {
                self.files.insert(path.to_string(), add.clone());
            }
        } else if let Some(remove) = action.get("remove") {
            if let Some(path) = remove.get("path").and_then(Json::as_str) {
                self.files.remove(path);
            }
        } else if let Some(meta) = action.get("metaData") {
            self.set_metadata(meta.clone())?;
        } else if let Some(protocol) = action.get("protocol") {
            self.writer_version = protocol
                .get("minWriterVersion")
                .and_then(Json::as_i64)
                .unwrap_or(0);
            self.protocol = Some(protocol.clone());
        }
        Ok(())
    }

    /// Starts from the checkpoint `_last_checkpoint` names. `Ok(Some(why))`
    /// when it cannot be read here (a multi-part checkpoint, a missing or
    /// unreadable file): the caller reads the JSON entries instead.
    fn load_checkpoint(
        &mut self,
        store: &Store,
        last: &[u8],
    ) -> Result<Option<String>, ConnectorError> {
        let Ok(last) = serde_json::from_slice::<Json>(last) else {
            return Ok(Some("_last_checkpoint is not JSON".into()));
        };
        let Some(version) = last.get("version").and_then(Json::as_u64) else {
            return Ok(Some("_last_checkpoint names no version".into()));
        };
        if last
            .get("parts")
            .and_then(Json::as_u64)
            .is_some_and(|p| p > 1)
        {
            return Ok(Some(format!(
                "the checkpoint of version {version} has several parts"
            )));
        }
        let path = format!("_delta_log/{version:020}.checkpoint.parquet");
        let Some(bytes) = store.get(&path)? else {
            return Ok(Some(format!("{path} is missing")));
        };
        match self.read_checkpoint(bytes) {
            Ok(()) => {
                self.version = Some(version);
                Ok(None)
            }
            Err(why) => Ok(Some(format!("{path}: {why}"))),
        }
    }

    fn read_checkpoint(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader =
            SerializedFileReader::new(bytes::Bytes::from(bytes)).map_err(|e| e.to_string())?;
        let rows = reader.get_row_iter(None).map_err(|e| e.to_string())?;
        for row in rows {
            let row = row.map_err(|e| e.to_string())?.to_json_value();
            let Some(kinds) = row.as_object() else {
                continue;
            };
            for (kind, action) in kinds {
                if !action.is_null() && kind != "commitInfo" {
                    self.apply_action(&json!({ kind.as_str(): action }))?;
                }
            }
        }
        Ok(())
    }

    fn set_metadata(&mut self, meta: Json) -> Result<(), String> {
        let schema_string = meta
            .get("schemaString")
            .and_then(Json::as_str)
            .ok_or("a metaData action without schemaString")?;
        let schema: Json = serde_json::from_str(schema_string)
            .map_err(|e| format!("the table's schemaString is not JSON: {e}"))?;
        let fields = schema
            .get("fields")
            .and_then(Json::as_array)
            .ok_or("the table's schema has no fields")?;
        self.columns = fields
            .iter()
            .map(|f| TableColumn {
                name: f
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                type_name: match f.get("type") {
                    Some(Json::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                nullable: f.get("nullable").and_then(Json::as_bool).unwrap_or(true),
            })
            .collect();
        self.partition_columns = meta
            .get("partitionColumns")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        self.metadata = Some(meta);
        Ok(())
    }

    /// Refuses to write to a table whose protocol asks for more than this
    /// connector does.
    pub fn check_protocol(&self, shown: &str) -> Result<(), ConnectorError> {
        if self.version.is_some() && self.writer_version > MAX_WRITER_VERSION {
            return Err(ConnectorError::fatal(format!(
                "the table at {shown} needs Delta writer version {} (features such as check \
                 constraints, generated columns or deletion vectors); this connector writes \
                 version {MAX_WRITER_VERSION} tables only",
                self.writer_version
            )));
        }
        Ok(())
    }
}

/// The actions of a checkpoint of the state: protocol, metaData, each
/// application's txn, each live add.
pub fn checkpoint_actions(state: &TableState) -> Vec<Json> {
    let mut actions = Vec::new();
    if let Some(p) = &state.protocol {
        actions.push(json!({"protocol": p}));
    }
    if let Some(m) = &state.metadata {
        actions.push(json!({"metaData": m}));
    }
    for txn in state.txn_actions.values() {
        actions.push(json!({"txn": txn}));
    }
    for add in state.files.values() {
        let mut add = add.clone();
        // A checkpoint's adds do not change data.
        add["dataChange"] = Json::Bool(false);
        actions.push(json!({"add": add}));
    }
    actions
}

/// The Delta `schemaString` of columns (name, Delta type, nullable).
pub fn schema_string(columns: &[TableColumn]) -> String {
    let fields: Vec<Json> = columns
        .iter()
        .map(|c| {
            let ty = if c.type_name.starts_with('{') {
                serde_json::from_str(&c.type_name).unwrap_or(Json::String(c.type_name.clone()))
            } else {
                Json::String(c.type_name.clone())
            };
            json!({"name": c.name, "type": ty, "nullable": c.nullable, "metadata": {}})
        })
        .collect();
    json!({"type": "struct", "fields": fields}).to_string()
}

/// The `metaData` action of a new table.
pub fn new_metadata(columns: &[TableColumn], partition_columns: &[String], now_ms: i64) -> Json {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string(columns),
        "partitionColumns": partition_columns,
        "configuration": {},
        "createdTime": now_ms,
    })
}

/// The JSON of one `add` action.
pub fn add_action(
    path: &str,
    partition_values: &[(String, Option<String>)],
    size: usize,
    now_ms: i64,
    stats: &str,
) -> Json {
    let values: serde_json::Map<String, Json> = partition_values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Json::Null, Json::String)))
        .collect();
    json!({"add": {
        "path": path,
        "partitionValues": values,
        "size": size,
        "modificationTime": now_ms,
        "dataChange": true,
        "stats": stats,
    }})
}

/// Hive-style escaping of a partition value in a directory name.
pub fn escape_partition_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_alphanumeric() || "_-.~ ".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// An `add` path is a URI reference: `%` and characters a URI may not hold
/// as they are get percent-encoded.
pub fn uri_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_versions_and_schema_come_from_the_log() {
        let mut state = TableState::default();
        let meta = new_metadata(
            &[TableColumn {
                name: "a".into(),
                type_name: "long".into(),
                nullable: true,
            }],
            &[],
            0,
        );
        let entry0 = format!(
            "{}\n{}\n{}\n",
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            json!({"metaData": meta}),
            json!({"txn": {"appId": "x", "version": 7}})
        );
        state.apply(0, entry0.as_bytes()).unwrap();
        state
            .apply(
                1,
                json!({"txn": {"appId": "x", "version": 9}})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(state.version, Some(1));
        assert_eq!(state.txns["x"], 9);
        assert_eq!(state.columns[0].type_name, "long");
        assert!(state.check_protocol("t").is_ok());
        assert!(state.apply(2, b"{not json").is_err());
    }

    #[test]
    fn partition_values_are_escaped_in_paths() {
        assert_eq!(escape_partition_value("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(
            uri_encode_path("p=a%2Fb/x y.parquet"),
            "p=a%252Fb/x%20y.parquet"
        );
    }
}
