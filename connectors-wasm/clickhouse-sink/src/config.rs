//! The `[clickhouse]` table and the checks `open` runs on it.

use std::path::PathBuf;

use danube_connect_sdk::{ConnectorError, SubscriptionType};
use danube_connector_tls::TlsFiles;
use danube_connector_tls::http::check_url;
use danube_sink_mapping::{Column, Metadata};
use serde::Deserialize;

/// The `[clickhouse]` table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// ClickHouse's HTTP interface, `http://host:port` or `https://host:port`
    /// (env `CLICKHOUSE_URL`); grant it with `[sandbox] allow`. Default:
    /// `http://127.0.0.1:8123`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Database of every route's table. Default: `default`.
    #[serde(default = "default_database")]
    pub database: String,
    /// User, sent as `X-ClickHouse-User`. Default: `default`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password (env `CLICKHOUSE_PASSWORD`), sent as `X-ClickHouse-Key`;
    /// never logged nor put in errors. Default: empty.
    #[serde(default)]
    pub password: String,
    /// For `https://`: a PEM CA bundle trusted instead of the built-in
    /// Mozilla roots, in a directory granted with `[sandbox] dirs`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// For `https://`: a PEM client certificate chain, for servers that
    /// require one. Set together with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// For `https://`: the PEM private key of `client_cert_file`. Set both or
    /// neither.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Bound, in seconds, on opening a connection, TLS handshake included.
    /// Default: 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Bound, in seconds, on each step of a request: sending it, waiting for
    /// the answer, reading the answer. Default: 60.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// `[[clickhouse.routes]]` tables, one per topic (required, at least
    /// one).
    pub routes: Vec<Route>,
}

/// One topic written to one table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Topic to consume (required), `/namespace/name`; a partitioned topic's
    /// partitions all go to this route. One route per topic.
    pub topic: String,
    /// Subscription name; it keeps its position across restarts. Default:
    /// `clickhouse-sink`.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// Subscription type: `exclusive`, `shared` (the default), `failover` or
    /// `key_shared`.
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    /// Table to insert into (required), in `database`: letters, digits and
    /// `_`, not starting with a digit.
    pub table: String,
    /// `CREATE TABLE IF NOT EXISTS` the table as a ReplacingMergeTree ordered
    /// by the dedup key, so redelivered records collapse. Default: false.
    #[serde(default)]
    pub auto_create: bool,
    /// Columns that order the auto-created table, and so identify a row for
    /// ReplacingMergeTree; only with `auto_create`, and not nullable. Default:
    /// the topic and offset metadata columns.
    #[serde(default)]
    pub dedup_key: Option<Vec<String>>,
    /// Columns that receive Danube metadata, each optional: `{ topic = "col",
    /// offset = "col", publish_time = "col", producer = "col" }`. Default:
    /// none.
    #[serde(default)]
    pub metadata: Metadata,
    /// `[[clickhouse.routes.columns]]` tables: columns filled from the JSON
    /// payload. Default: none.
    #[serde(default)]
    pub columns: Vec<Column>,
}

fn default_url() -> String {
    "http://127.0.0.1:8123".to_string()
}

fn default_database() -> String {
    "default".to_string()
}

fn default_user() -> String {
    "default".to_string()
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    60
}

fn default_subscription() -> String {
    "clickhouse-sink".to_string()
}

/// Whether `name` can be used unquoted-safe inside backticks: letters,
/// digits and `_`, not starting with a digit. Anything else is refused
/// rather than escaped, so names never need quoting rules.
pub fn check_identifier(what: &str, name: &str) -> Result<(), ConnectorError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConnectorError::config(format!(
            "{what} `{name}` must be letters, digits and `_`, not starting with a digit"
        )))
    }
}

impl Config {
    /// Checks what serde cannot: names, the URL, one route per topic.
    pub fn check(&self) -> Result<(), ConnectorError> {
        check_url("url", &self.url, &self.tls_files()).map_err(ConnectorError::config)?;
        check_identifier("`database`", &self.database)?;
        if self.routes.is_empty() {
            return Err(ConnectorError::config(
                "`routes` must list at least one topic",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|r| r.topic == route.topic) {
                return Err(ConnectorError::config(format!(
                    "topic `{}` has more than one route",
                    route.topic
                )));
            }
            route.check()?;
        }
        Ok(())
    }
}

impl Config {
    /// The TLS keys, for an `https://` URL.
    pub fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
            // ureq verifies the host of `url`.
            server_name: None,
        }
    }
}

impl Route {
    fn check(&self) -> Result<(), ConnectorError> {
        let route = format!("route for `{}`", self.topic);
        check_identifier(&format!("{route}: `table`"), &self.table)?;
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|c| c.column.as_str())
            .chain(self.metadata.columns().map(|(_, n)| n))
            .collect();
        if names.is_empty() {
            return Err(ConnectorError::config(format!(
                "{route}: no `columns` and no `metadata` columns: nothing to write"
            )));
        }
        for (i, name) in names.iter().enumerate() {
            check_identifier(&format!("{route}: column"), name)?;
            if names[..i].contains(name) {
                return Err(ConnectorError::config(format!(
                    "{route}: column `{name}` is listed twice"
                )));
            }
        }
        if let Some(column) = self.columns.iter().find(|c| c.path.is_empty()) {
            return Err(ConnectorError::config(format!(
                "{route}: column `{}` has an empty `path`",
                column.column
            )));
        }
        match (&self.dedup_key, self.auto_create) {
            (Some(_), false) => Err(ConnectorError::config(format!(
                "{route}: `dedup_key` orders the table `auto_create` makes; without `auto_create = true` the existing table's own ORDER BY applies: remove `dedup_key`"
            ))),
            (_, true) => self.dedup_columns().map(|_| ()),
            (None, false) => Ok(()),
        }
    }

    /// The columns that order the auto-created table: `dedup_key`, or the
    /// topic and offset metadata columns.
    pub fn dedup_columns(&self) -> Result<Vec<&str>, ConnectorError> {
        let route = format!("route for `{}`", self.topic);
        let Some(key) = &self.dedup_key else {
            return match (&self.metadata.topic, &self.metadata.offset) {
                (Some(topic), Some(offset)) => Ok(vec![topic, offset]),
                _ => Err(ConnectorError::config(format!(
                    "{route}: `auto_create` needs a dedup key: set `metadata.topic` and `metadata.offset` (the default key), or `dedup_key`"
                ))),
            };
        };
        if key.is_empty() {
            return Err(ConnectorError::config(format!(
                "{route}: `dedup_key` must name at least one column"
            )));
        }
        for name in key {
            let payload_column = self.columns.iter().find(|c| &c.column == name);
            let known = payload_column.is_some() || self.metadata.columns().any(|(_, n)| n == name);
            if !known {
                return Err(ConnectorError::config(format!(
                    "{route}: `dedup_key` names `{name}`, which is not one of its columns"
                )));
            }
            if payload_column.is_some_and(|c| c.nullable) {
                return Err(ConnectorError::config(format!(
                    "{route}: `dedup_key` column `{name}` is nullable; ClickHouse cannot order by a nullable column"
                )));
            }
        }
        Ok(key.iter().map(String::as_str).collect())
    }
}
