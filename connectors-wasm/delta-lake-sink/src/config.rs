//! The `[deltalake]` table, read as upstream's `sink-deltalake` reads it
//! (the same keys: `storage_backend`, `s3_region`, `s3_endpoint`,
//! `s3_allow_http`, `[[deltalake.routes]]` with `from`, `subscription`,
//! `to`, `field_mappings`, `write_mode`, `include_danube_metadata`,
//! `expected_schema_subject`), plus this connector's own keys, and the
//! checks `open` runs on it.

use std::collections::HashSet;
use std::path::PathBuf;

use danube_connect_sdk::{ConnectorError, SubscriptionType};
use serde::Deserialize;

use crate::schema::DataType;

/// The `[deltalake]` table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the tables are: `local` (a directory granted with `[sandbox]
    /// dirs`; `to` is its path) or `s3` (S3-compatible object storage; `to`
    /// is `s3://bucket/prefix`). `azure` and `gcs` are refused: not
    /// supported yet. Default: `s3` when the first route's `to` starts with
    /// `s3://`, `local` otherwise.
    #[serde(default)]
    pub storage_backend: Option<StorageBackend>,
    /// S3 region, used in the request signatures (SigV4). Required with
    /// `storage_backend = "s3"`.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// S3 endpoint, `https://host:port` (or `http://` with `s3_allow_http`),
    /// for MinIO and other S3-compatible servers; grant its address with
    /// `[sandbox] allow`. Buckets are addressed by path
    /// (`endpoint/bucket/key`). Default: `https://s3.<region>.amazonaws.com`.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// Allow an `http://` `s3_endpoint` (a local test server). Default: false.
    #[serde(default)]
    pub s3_allow_http: bool,
    /// S3 access key id (env `DELTALAKE_S3_ACCESS_KEY_ID`). Required with
    /// `storage_backend = "s3"`; never logged.
    #[serde(default)]
    pub s3_access_key_id: String,
    /// S3 secret access key (env `DELTALAKE_S3_SECRET_ACCESS_KEY`). Required
    /// with `storage_backend = "s3"`; never logged nor put in errors.
    #[serde(default)]
    pub s3_secret_access_key: String,
    /// For an `https://` endpoint: a PEM CA bundle trusted instead of the
    /// built-in Mozilla roots, in a directory granted with `[sandbox] dirs`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Upstream's Azure key: accepted in the file, refused at start (Azure
    /// is not supported yet).
    #[serde(default)]
    pub azure_storage_account: Option<String>,
    /// Upstream's Azure key: accepted in the file, refused at start.
    #[serde(default)]
    pub azure_container: Option<String>,
    /// Upstream's GCS key: accepted in the file, refused at start (GCS is
    /// not supported yet).
    #[serde(default)]
    pub gcp_project_id: Option<String>,
    /// Bound, in seconds, on each step of an S3 request. Default: 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Write a checkpoint of the table every this many commits (at each
    /// version divisible by it), for readers to start from; 0: none.
    /// Default: 100.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Rows of a route staged (in the table's storage, under
    /// `_danube_staging/`) before they are written as data files and
    /// committed. Default: 100000.
    #[serde(default = "default_target_file_rows")]
    pub target_file_rows: u64,
    /// Bytes of staged rows (as staged, JSON) that make the route write
    /// them; the rows are held in the connector's memory too, so keep it
    /// well under `[sandbox] memory_mb`. Default: 33554432 (32 MiB).
    #[serde(default = "default_target_file_bytes")]
    pub target_file_bytes: u64,
    /// Longest a staged row waits before it is written to the table, in
    /// milliseconds (idle topics too: the host ticks an idle sink every
    /// `[processing] idle_tick_ms`). 0: nothing is staged, each batch is
    /// committed as it comes (one file per batch). Default: 60000.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// `[[deltalake.routes]]`: one per topic (at least one).
    pub routes: Vec<Route>,
}

/// Where tables are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
    Azure,
    Gcs,
}

/// How records are added to a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Each batch is appended (the only mode of a streaming sink).
    #[default]
    Append,
    /// Upstream's `overwrite`: refused, a stream does not replace a table.
    Overwrite,
}

/// What to do when the table exists with fewer columns than configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// The table must hold every configured column with the same type.
    #[default]
    Strict,
    /// Configured columns the table lacks are added to it (they must be
    /// nullable: older rows read them as null).
    AddColumns,
}

/// One topic written to one table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Topic to consume (required), `/namespace/name`; a partitioned
    /// topic's partitions all go to this table.
    pub from: String,
    /// Subscription name (required). It also names this route's writer in
    /// the table's log: the `txn` application id is
    /// `danube-connect:<subscription>:<topic partition>`.
    pub subscription: String,
    /// Subscription type: `exclusive` (the default), `failover`, `shared` or
    /// `key_shared`. Exactly-once needs one writer per topic partition:
    /// with `shared`, run one instance only.
    #[serde(default = "default_subscription_type")]
    pub subscription_type: SubscriptionType,
    /// The table (required): a directory path for `local`
    /// (`/data/tables/payments` or `file:///data/tables/payments`), or
    /// `s3://bucket/prefix` for `s3`.
    pub to: String,
    /// `append` (the default). `overwrite` is refused.
    #[serde(default)]
    pub write_mode: WriteMode,
    /// Add a column `_danube_metadata` (string, JSON: topic, offset,
    /// publish time, producer, key, attributes). Default: false.
    #[serde(default)]
    pub include_danube_metadata: bool,
    /// Schema subject the topic's records must carry, checked by the host.
    #[serde(default)]
    pub expected_schema_subject: Option<String>,
    /// The columns (required, at least one): where each value is in the
    /// record's JSON payload and its type.
    pub field_mappings: Vec<FieldMapping>,
    /// Columns the table is partitioned by (each one of `field_mappings`,
    /// of type Utf8, an integer type, Boolean or Date). Default: none.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// `strict` (the default) or `add_columns` (configured nullable columns
    /// an existing table lacks are added to its schema).
    #[serde(default)]
    pub schema_mode: SchemaMode,
}

/// A JSON path in the payload and the column it fills.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Dot-separated path to the value in the payload (`user.id`).
    pub json_path: String,
    /// Column name.
    pub column: String,
    /// Arrow type name as upstream: `Utf8`, `Int8`, `Int16`, `Int32`,
    /// `Int64`, `UInt8`, `UInt16`, `UInt32`, `UInt64`, `Float32`, `Float64`,
    /// `Boolean`, `Timestamp` (microseconds, UTC), `Date`, `Binary`.
    pub data_type: DataType,
    /// Whether the value may be missing or null. Default: true.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

fn default_true() -> bool {
    true
}

fn default_target_file_rows() -> u64 {
    100_000
}

fn default_target_file_bytes() -> u64 {
    32 << 20
}

fn default_flush_interval_ms() -> u64 {
    60_000
}

fn default_checkpoint_interval() -> u64 {
    100
}

fn default_request_timeout() -> u64 {
    30
}

fn default_subscription_type() -> SubscriptionType {
    SubscriptionType::Exclusive
}

/// The column `include_danube_metadata` adds.
pub const METADATA_COLUMN: &str = "_danube_metadata";

/// Bounds a configured value quoted in an error.
pub fn shown(value: &str) -> String {
    const MAX: usize = 200;
    if value.len() <= MAX {
        return value.to_string();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

impl Config {
    /// The storage backend, given or inferred from the first route.
    pub fn backend(&self) -> StorageBackend {
        self.storage_backend
            .unwrap_or_else(|| match self.routes.first() {
                Some(r) if r.to.starts_with("s3://") => StorageBackend::S3,
                _ => StorageBackend::Local,
            })
    }

    /// Checks what serde cannot: the backend, the S3 keys, each route.
    pub fn check(&self) -> Result<(), ConnectorError> {
        let backend = self.backend();
        match backend {
            StorageBackend::Azure => {
                return Err(ConnectorError::config(
                    "`storage_backend = \"azure\"` is not supported yet by this connector: use \
                     `s3` (S3-compatible storage) or `local` (a mounted directory)",
                ));
            }
            StorageBackend::Gcs => {
                return Err(ConnectorError::config(
                    "`storage_backend = \"gcs\"` is not supported yet by this connector: use \
                     `s3` (S3-compatible storage, GCS's interoperability endpoint) or `local`",
                ));
            }
            StorageBackend::S3 => {
                if self.s3_region.as_deref().unwrap_or("").is_empty() {
                    return Err(ConnectorError::config(
                        "`s3_region` is required with `storage_backend = \"s3\"`",
                    ));
                }
                if let Some(endpoint) = &self.s3_endpoint {
                    if endpoint.starts_with("http://") && !self.s3_allow_http {
                        return Err(ConnectorError::config(format!(
                            "`s3_endpoint` `{}` is http://: set `s3_allow_http = true` to allow it, \
                             or use https://",
                            shown(endpoint)
                        )));
                    }
                    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                        return Err(ConnectorError::config(format!(
                            "`s3_endpoint` must start with http:// or https://, not `{}`",
                            shown(endpoint)
                        )));
                    }
                }
                if self.s3_access_key_id.is_empty() || self.s3_secret_access_key.is_empty() {
                    return Err(ConnectorError::config(
                        "`s3_access_key_id` and `s3_secret_access_key` are required with \
                         `storage_backend = \"s3\"` (env DELTALAKE_S3_ACCESS_KEY_ID, \
                         DELTALAKE_S3_SECRET_ACCESS_KEY)",
                    ));
                }
            }
            StorageBackend::Local => {}
        }
        if self.azure_storage_account.is_some() || self.azure_container.is_some() {
            return Err(ConnectorError::config(
                "`azure_storage_account` / `azure_container`: Azure storage is not supported yet \
                 by this connector; remove the keys",
            ));
        }
        if self.gcp_project_id.is_some() {
            return Err(ConnectorError::config(
                "`gcp_project_id`: GCS is not supported yet by this connector; remove the key",
            ));
        }
        if self.routes.is_empty() {
            return Err(ConnectorError::config(
                "`routes` is empty: add at least one [[deltalake.routes]]",
            ));
        }
        let mut topics = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            route.check(i, backend)?;
            if !topics.insert(route.from.as_str()) {
                return Err(ConnectorError::config(format!(
                    "`routes[{i}].from`: topic `{}` has two routes; one route per topic",
                    shown(&route.from)
                )));
            }
        }
        Ok(())
    }
}

impl Route {
    fn check(&self, i: usize, backend: StorageBackend) -> Result<(), ConnectorError> {
        let key = |k: &str| format!("`routes[{i}].{k}`");
        if self.write_mode == WriteMode::Overwrite {
            return Err(ConnectorError::config(format!(
                "{}: `overwrite` is not supported (a stream appends); use `append`",
                key("write_mode")
            )));
        }
        if self.subscription.is_empty() {
            return Err(ConnectorError::config(format!(
                "{} is empty",
                key("subscription")
            )));
        }
        match backend {
            StorageBackend::S3 if !self.to.starts_with("s3://") => {
                return Err(ConnectorError::config(format!(
                    "{} must be `s3://bucket/prefix` with storage_backend `s3`, not `{}`",
                    key("to"),
                    shown(&self.to)
                )));
            }
            StorageBackend::S3 => {
                let rest = &self.to["s3://".len()..];
                if rest.split('/').next().unwrap_or("").is_empty() {
                    return Err(ConnectorError::config(format!(
                        "{} names no bucket: `{}`",
                        key("to"),
                        shown(&self.to)
                    )));
                }
            }
            StorageBackend::Local if self.to.contains("://") && !self.to.starts_with("file://") => {
                return Err(ConnectorError::config(format!(
                    "{} is `{}` but the storage backend is `local`: give a directory path, or set \
                     `storage_backend`",
                    key("to"),
                    shown(&self.to)
                )));
            }
            _ => {}
        }
        if self.field_mappings.is_empty() {
            return Err(ConnectorError::config(format!(
                "{} is empty: map at least one column",
                key("field_mappings")
            )));
        }
        let mut columns = HashSet::new();
        for (j, m) in self.field_mappings.iter().enumerate() {
            let mkey = format!("`routes[{i}].field_mappings[{j}]`");
            if m.column.is_empty() || m.json_path.is_empty() {
                return Err(ConnectorError::config(format!(
                    "{mkey}: `column` and `json_path` must not be empty"
                )));
            }
            if m.column.chars().any(|c| " ,;{}()\n\t=".contains(c)) {
                return Err(ConnectorError::config(format!(
                    "{mkey}: column `{}` has a character Delta column names may not hold \
                     (space ,;{{}}()\\n\\t=)",
                    shown(&m.column)
                )));
            }
            if !columns.insert(m.column.to_lowercase()) {
                return Err(ConnectorError::config(format!(
                    "{mkey}: column `{}` is mapped twice (Delta column names ignore case)",
                    shown(&m.column)
                )));
            }
            if self.include_danube_metadata && m.column.eq_ignore_ascii_case(METADATA_COLUMN) {
                return Err(ConnectorError::config(format!(
                    "{mkey}: `{METADATA_COLUMN}` is the column include_danube_metadata adds"
                )));
            }
        }
        for p in &self.partition_columns {
            let Some(m) = self.field_mappings.iter().find(|m| &m.column == p) else {
                return Err(ConnectorError::config(format!(
                    "{}: `{}` is not a column of field_mappings",
                    key("partition_columns"),
                    shown(p)
                )));
            };
            if !m.data_type.can_partition() {
                return Err(ConnectorError::config(format!(
                    "{}: `{}` is {:?}; partition by a Utf8, integer, Boolean or Date column",
                    key("partition_columns"),
                    shown(p),
                    m.data_type
                )));
            }
        }
        if self.partition_columns.len() == self.field_mappings.len()
            && !self.include_danube_metadata
        {
            return Err(ConnectorError::config(format!(
                "{}: every column is a partition column; leave at least one for the data files",
                key("partition_columns")
            )));
        }
        Ok(())
    }
}
