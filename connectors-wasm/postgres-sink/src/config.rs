//! The `[postgres]` table: parsing, defaults and checks, down to the SQL each
//! route runs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use danube_connect_sdk::{ConnectorError, ConsumerConfig, SubscriptionType};
use danube_connector_tls::{Tls, TlsFiles, Verify};
use serde::Deserialize;

use danube_sink_mapping::{MetaField, Metadata};

use crate::table::{Column, Source, Table, metadata_type};

pub const CONFIG_EXAMPLE: &str = r#"[postgres]
# The server. Env: POSTGRES_HOST, POSTGRES_PORT. Grant it in [sandbox] allow.
host = "127.0.0.1"
port = 5432
database = "danube"
user = "danube"
# Env: POSTGRES_PASSWORD. Never logged. SCRAM-SHA-256, MD5 and cleartext
# password authentication are supported.
password = ""
# TLS. Env: POSTGRES_SSLMODE. disable (default) | require (encrypted; with
# ca_file the chain is also verified) | verify-ca (chain) | verify-full (chain
# and host name: use this for a server across a network you do not own).
sslmode = "disable"
# PEM CA bundle to trust instead of the built-in Mozilla roots; the file must
# be in a directory granted with [sandbox] dirs.
# ca_file = "/etc/danube/postgres/ca.pem"
# Client certificate and key, for `cert` authentication in pg_hba.conf.
# client_cert_file = "/etc/danube/postgres/client.pem"
# client_key_file = "/etc/danube/postgres/client.key"
# The name the server's certificate must carry, when it is not `host`.
# tls_server_name = "db.example.com"
# Bound on one TCP connect plus the authentication exchange.
connect_timeout_secs = 10
# Bound on waiting for the server's answer to one statement; keep it below
# [sandbox] call_timeout_ms.
query_timeout_secs = 20

# One table per Danube topic.
[[postgres.routes]]
topic = "/default/sensors"
subscription = "postgres-sink"
# exclusive | shared | failover | key_shared
subscription_type = "shared"
# May be schema-qualified: "public.sensor_readings".
table = "sensor_readings"
# CREATE TABLE IF NOT EXISTS with the columns below and a primary key on
# upsert_key.
auto_create = true
# Rows are upserted on these columns (INSERT ... ON CONFLICT DO UPDATE), so a
# redelivered record overwrites its own row. Default: the topic and offset
# metadata columns, which must then be set.
upsert_key = ["device_id", "seq"]
# Optional Danube metadata columns: which column gets what.
metadata = { topic = "danube_topic", offset = "danube_offset", publish_time = "danube_publish_time", producer = "danube_producer" }

  [[postgres.routes.columns]]
  column = "device_id"
  # Dotted path into the JSON payload: "a.b.c".
  path = "device"
  # text | int | bigint | double | bool | timestamp | json
  type = "text"
  # false (default): a missing or null field makes the record invalid data.
  nullable = false

  [[postgres.routes.columns]]
  column = "seq"
  path = "seq"
  type = "bigint"

  [[postgres.routes.columns]]
  column = "temperature"
  path = "reading.temp"
  type = "double"
  nullable = true
"#;

/// A string that may arrive as a number: `POSTGRES_PASSWORD=1234` reaches the
/// connector as an integer. Its `Debug` never shows the value.
#[derive(Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(from = "Scalar")]
pub struct Password(pub String);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl From<Scalar> for Password {
    fn from(s: Scalar) -> Self {
        Password(match s {
            Scalar::Text(t) => t,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        })
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"…\"")
    }
}

/// The `[postgres]` table as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server host name or address (env `POSTGRES_HOST`); grant it in
    /// `[sandbox] allow` as `host:port`. Default: `127.0.0.1`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Server port (env `POSTGRES_PORT`). Default: 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database to connect to (env `POSTGRES_DATABASE`). Default: `postgres`.
    #[serde(default = "default_database")]
    pub database: String,
    /// User to log in as (env `POSTGRES_USER`). Default: `postgres`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password (env `POSTGRES_PASSWORD`), for SCRAM-SHA-256, MD5 or
    /// cleartext password authentication; never logged nor put in an error.
    /// Default: empty.
    #[serde(default)]
    pub password: Password,
    /// TLS, with libpq's meaning (env `POSTGRES_SSLMODE`): `disable` (the
    /// default), `require` (encrypted; with `ca_file` the chain is also
    /// verified), `verify-ca` (chain) or `verify-full` (chain and host name).
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the CA certificates to trust instead of the built-in
    /// Mozilla roots, in a directory granted with `[sandbox] dirs`. Not with
    /// `sslmode = "disable"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for `cert` authentication in
    /// pg_hba.conf. Set together with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Set both or neither.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The name (DNS name or IP address) the server's certificate must
    /// carry, when it is not `host`. Default: `host`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Bound, in seconds, on one TCP connect plus the authentication
    /// exchange; at least 1. Default: 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Bound, in seconds, on waiting for the server's answer to one
    /// statement; past it the batch is retried on a new connection. At least
    /// 1, and keep it below `[sandbox] call_timeout_ms`. Default: 20.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: u64,
    /// `[[postgres.routes]]` tables, one per Danube topic; at least one is
    /// required.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `sslmode`, with libpq's meaning. libpq's default, `prefer` (and `allow`),
/// falls back to a plain connection without saying so, so neither is
/// offered: a connection is encrypted exactly when the configuration says.
/// `disable` is the default because TLS needs certificates the sandbox must
/// be granted; a server that requires TLS refuses a plain connection with a
/// message pointing here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    #[default]
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}
fn default_user() -> String {
    "postgres".into()
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_query_timeout() -> u64 {
    20
}
fn default_subscription() -> String {
    "postgres-sink".into()
}

/// `[[postgres.routes]]`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Danube topic to consume (required), `/namespace/name`; a partitioned
    /// topic's partitions are included. One route per topic.
    pub topic: String,
    /// Subscription name. Default: `postgres-sink`.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// Subscription type: `exclusive`, `shared` (the default), `failover` or
    /// `key_shared`.
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    /// Table to write (required), optionally schema-qualified
    /// (`public.sensor_readings`); quoted as written, so case is kept.
    pub table: String,
    /// Run `CREATE TABLE IF NOT EXISTS` once per start, with the route's
    /// columns (non-nullable ones `NOT NULL`) and a primary key on
    /// `upsert_key`. Default: false.
    #[serde(default)]
    pub auto_create: bool,
    /// Columns rows are upserted on (`INSERT ... ON CONFLICT DO UPDATE`), so
    /// a redelivered record overwrites its own row; each must be a
    /// non-nullable column of the route. Default: the topic and offset
    /// metadata columns, which must then be set.
    #[serde(default)]
    pub upsert_key: Option<Vec<String>>,
    /// Columns that receive Danube metadata, any subset of `{ topic = "col",
    /// offset = "col", publish_time = "col", producer = "col" }`. Default:
    /// none.
    #[serde(default)]
    pub metadata: Metadata,
    /// `[[postgres.routes.columns]]` tables: columns filled from the JSON
    /// payload.
    #[serde(default)]
    pub columns: Vec<danube_sink_mapping::Column>,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Password,
    /// Set unless `sslmode = "disable"`: the loaded client configuration.
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
}

/// One checked route: a topic, how to subscribe, and the table it fills.
#[derive(Debug)]
pub struct Route {
    pub topic: String,
    pub subscription: String,
    pub subscription_type: SubscriptionType,
    pub auto_create: bool,
    pub table: Table,
}

impl Route {
    pub fn consumer(&self) -> ConsumerConfig {
        ConsumerConfig::new(&self.topic, &self.subscription)
            .with_subscription_type(self.subscription_type)
    }

    /// Whether a record read from `topic` belongs to this route: the topic
    /// itself or one of its partitions (`<topic>-part-<n>`).
    pub fn takes(&self, topic: &str) -> bool {
        match topic.strip_prefix(self.topic.as_str()) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix("-part-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => false,
        }
    }
}

/// The checked settings the connector runs with.
#[derive(Debug)]
pub struct Settings {
    pub server: Server,
    pub routes: Vec<Route>,
}

/// PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

impl Config {
    /// Checks the table and resolves defaults; every refusal is a config error
    /// that names the key.
    pub fn into_settings(self) -> Result<Settings, ConnectorError> {
        if self.host.trim().is_empty() {
            return Err(ConnectorError::config("`host` is empty"));
        }
        if self.port == 0 {
            return Err(ConnectorError::config("`port` must not be 0"));
        }
        for (key, value) in [("database", &self.database), ("user", &self.user)] {
            if value.is_empty() {
                return Err(ConnectorError::config(format!("`{key}` is empty")));
            }
        }
        for (key, secs) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("query_timeout_secs", self.query_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConnectorError::config(format!(
                    "`{key}` must be at least 1"
                )));
            }
        }
        let tls = self.tls()?;
        if self.routes.is_empty() {
            return Err(ConnectorError::config(
                "no routes: add a [[postgres.routes]] table with `topic`, `table` and [[postgres.routes.columns]]",
            ));
        }
        let mut topics = BTreeSet::new();
        let mut routes = Vec::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            if !topics.insert(r.topic.clone()) {
                return Err(ConnectorError::config(format!(
                    "`{at}.topic`: {:?} is already routed; one route per topic",
                    r.topic
                )));
            }
            routes.push(route(r).map_err(|why| ConnectorError::config(format!("`{at}{why}")))?);
        }
        Ok(Settings {
            server: Server {
                host: self.host.trim().to_string(),
                port: self.port,
                database: self.database,
                user: self.user,
                password: self.password,
                tls,
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                query_timeout: Duration::from_secs(self.query_timeout_secs),
            },
            routes,
        })
    }

    /// Loads the TLS settings `sslmode` asks for; TLS keys with
    /// `sslmode = "disable"` are refused rather than silently ignored.
    fn tls(&self) -> Result<Option<Tls>, ConnectorError> {
        let files = TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
            server_name: self.tls_server_name.as_deref(),
        };
        let verify = match self.sslmode {
            SslMode::Disable => {
                return match files.first_set() {
                    Some(key) => Err(ConnectorError::config(format!(
                        "`{key}` is set but `sslmode` is \"disable\": set sslmode (env POSTGRES_SSLMODE) or remove `{key}`"
                    ))),
                    None => Ok(None),
                };
            }
            // As libpq: `require` with a CA file verifies the chain.
            SslMode::Require if self.ca_file.is_none() => Verify::Nothing,
            SslMode::Require | SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::Full,
        };
        Tls::load(&files, self.host.trim(), verify)
            .map(Some)
            .map_err(ConnectorError::config)
    }
}

/// Checks one route; an error starts with the rest of the key after
/// `routes[i]` (e.g. `.table\`: ...`).
fn route(r: RouteConfig) -> Result<Route, String> {
    validate_danube_topic(&r.topic).map_err(|why| format!(".topic` = {:?}: {why}", r.topic))?;
    if r.subscription.is_empty() {
        return Err(".subscription` is empty".into());
    }
    let table_name = r.table.split('.').collect::<Vec<_>>();
    if r.table.is_empty() || table_name.len() > 2 {
        return Err(format!(
            ".table` = {:?}: a table name, optionally schema-qualified (schema.table)",
            r.table
        ));
    }
    for part in &table_name {
        check_identifier(part).map_err(|why| format!(".table` = {:?}: {why}", r.table))?;
    }

    let mut columns = Vec::new();
    for (j, c) in r.columns.into_iter().enumerate() {
        if c.path.split('.').any(str::is_empty) {
            return Err(format!(
                ".columns[{j}].path` = {:?}: a dotted path into the JSON payload, like \"reading.temp\"",
                c.path
            ));
        }
        check_identifier(&c.column)
            .map_err(|why| format!(".columns[{j}].column` = {:?}: {why}", c.column))?;
        columns.push(Column {
            name: c.column,
            source: Source::Path(c.path),
            column_type: c.kind,
            nullable: c.nullable,
        });
    }
    for (field, name) in r.metadata.columns() {
        check_identifier(name)
            .map_err(|why| format!(".metadata.{}` = {name:?}: {why}", field.key()))?;
        columns.push(Column {
            name: name.to_string(),
            column_type: metadata_type(field),
            source: Source::Meta(field),
            nullable: false,
        });
    }
    if columns.is_empty() {
        return Err(
            "` has no columns: add [[postgres.routes.columns]] tables or `metadata` columns".into(),
        );
    }
    let mut names = BTreeSet::new();
    for c in &columns {
        if !names.insert(c.name.as_str()) {
            return Err(format!("`: column {:?} is filled twice", c.name));
        }
    }

    let key_names = match r.upsert_key {
        Some(key) => key,
        None => default_key(&columns).ok_or(
            "`: without `upsert_key` the rows are keyed on the topic and offset metadata columns, \
             so set both, e.g. metadata = { topic = \"danube_topic\", offset = \"danube_offset\" }, \
             or name the key columns in `upsert_key`",
        )?,
    };
    if key_names.is_empty() {
        return Err(".upsert_key` is empty: name at least one column".into());
    }
    let mut key = Vec::new();
    for name in &key_names {
        let Some(index) = columns.iter().position(|c| &c.name == name) else {
            return Err(format!(
                ".upsert_key`: {name:?} is not one of the route's columns"
            ));
        };
        if columns[index].nullable {
            return Err(format!(
                ".upsert_key`: column {name:?} is nullable; key columns must be `nullable = false`"
            ));
        }
        if key.contains(&index) {
            return Err(format!(".upsert_key`: {name:?} is named twice"));
        }
        key.push(index);
    }
    Ok(Route {
        topic: r.topic,
        subscription: r.subscription,
        subscription_type: r.subscription_type,
        auto_create: r.auto_create,
        table: Table::new(&table_name, columns, key),
    })
}

/// The topic and offset metadata columns, by name, if both are set.
fn default_key(columns: &[Column]) -> Option<Vec<String>> {
    let named = |field| {
        columns
            .iter()
            .find(|c| c.source == Source::Meta(field))
            .map(|c| c.name.clone())
    };
    Some(vec![named(MetaField::Topic)?, named(MetaField::Offset)?])
}

fn check_identifier(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("an identifier must not be empty")
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Err("PostgreSQL identifiers are at most 63 bytes")
    } else if name.contains('\0') {
        Err("an identifier must not contain NUL")
    } else {
        Ok(())
    }
}

fn validate_danube_topic(topic: &str) -> Result<(), &'static str> {
    let Some(rest) = topic.strip_prefix('/') else {
        return Err("a Danube topic is /namespace/name");
    };
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(name), None) if !ns.is_empty() && !name.is_empty() => Ok(()),
        _ => Err("a Danube topic is /namespace/name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn settings(json: &str) -> Result<Settings, ConnectorError> {
        parse_config::<Config>(json)?.into_settings()
    }

    fn error(json: &str) -> String {
        settings(json).unwrap_err().to_string()
    }

    const COLUMNS: &str = r#""columns": [{"column": "id", "path": "id", "type": "bigint"}]"#;

    #[test]
    fn the_example_parses() {
        // As the host hands it over: the `[postgres]` table as JSON.
        let example: toml::Table = CONFIG_EXAMPLE.parse().unwrap();
        let s = settings(&serde_json::to_string(&example["postgres"]).unwrap()).unwrap();
        let r = &s.routes[0];
        let names: Vec<&str> = r.table.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "device_id",
                "seq",
                "temperature",
                "danube_topic",
                "danube_offset",
                "danube_publish_time",
                "danube_producer"
            ]
        );
        assert_eq!(r.table.key, vec![0, 1]);
        assert!(r.auto_create);
        assert_eq!(s.server.query_timeout, Duration::from_secs(20));
        assert_eq!(
            r.consumer(),
            ConsumerConfig::new("/default/sensors", "postgres-sink")
                .with_subscription_type(SubscriptionType::Shared)
        );
    }

    #[test]
    fn the_default_key_is_topic_and_offset_and_needs_them() {
        let s = settings(&format!(
            r#"{{"routes": [{{"topic": "/d/t", "table": "t", {COLUMNS},
                "metadata": {{"offset": "o", "topic": "tp"}}}}]}}"#
        ))
        .unwrap();
        let t = &s.routes[0].table;
        let key: Vec<&str> = t.key.iter().map(|&i| t.columns[i].name.as_str()).collect();
        assert_eq!(key, ["tp", "o"]);

        let e = error(&format!(
            r#"{{"routes": [{{"topic": "/d/t", "table": "t", {COLUMNS}, "metadata": {{"offset": "o"}}}}]}}"#
        ));
        assert!(
            e.starts_with("config: `routes[0]`: without `upsert_key`"),
            "{e}"
        );
        assert!(e.contains("metadata"), "{e}");
    }

    #[test]
    fn refusals_name_the_key() {
        let route = |extra: &str| {
            error(&format!(
                r#"{{"routes": [{{"topic": "/d/t", "table": "t", {COLUMNS}{extra}}}]}}"#
            ))
        };
        assert!(route(r#", "tabel": 1"#).contains("tabel"));
        assert!(route(r#", "upsert_key": ["nope"]"#).contains("upsert_key`: \"nope\""));
        assert!(
            route(r#", "metadata": {"topic": "id"}"#).contains("column \"id\" is filled twice")
        );
        assert!(route(r#", "subscription_type": "round_robin""#).contains("subscription_type"));
        assert!(error(r#"{"routes": []}"#).contains("no routes"));
        assert!(
            error(&format!(
                r#"{{"routes": [{{"topic": "t", "table": "t", "upsert_key": ["id"], {COLUMNS}}}]}}"#
            ))
            .contains("routes[0].topic")
        );
        assert!(
            error(&format!(
                r#"{{"routes": [{{"topic": "/d/t", "table": "a.b.c", "upsert_key": ["id"], {COLUMNS}}}]}}"#
            ))
            .contains("routes[0].table")
        );
        let e = error(
            r#"{"routes": [{"topic": "/d/t", "table": "t", "upsert_key": ["id"],
                "columns": [{"column": "id", "path": "a..b", "type": "bigint"}]}]}"#,
        );
        assert!(e.contains("routes[0].columns[0].path"), "{e}");
        let e = error(
            r#"{"routes": [{"topic": "/d/t", "table": "t", "upsert_key": ["id"],
                "columns": [{"column": "id", "path": "id", "type": "bigint", "nullable": true}]}]}"#,
        );
        assert!(e.contains("nullable"), "{e}");
        let e = error(
            r#"{"routes": [{"topic": "/d/t", "table": "t", "upsert_key": ["id"],
                "columns": [{"column": "id", "path": "id", "type": "integer"}]}]}"#,
        );
        assert!(e.contains("type"), "{e}");
    }

    #[test]
    fn a_password_from_the_environment_may_be_a_number_and_never_shows() {
        let s = settings(&format!(
            r#"{{"password": 1234, "routes": [{{"topic": "/d/t", "table": "t", "upsert_key": ["id"], {COLUMNS}}}]}}"#
        ))
        .unwrap();
        assert_eq!(s.server.password.0, "1234");
        assert!(!format!("{s:?}").contains("1234"));
    }

    #[test]
    fn sslmode_decides_tls_and_refuses_keys_it_would_ignore() {
        let with = |keys: &str| {
            settings(&format!(
                r#"{{{keys}"routes": [{{"topic": "/d/t", "table": "t", "upsert_key": ["id"], {COLUMNS}}}]}}"#
            ))
        };
        assert!(with("").unwrap().server.tls.is_none());
        let tls = with(r#""host": "db.example.com", "sslmode": "verify-full", "#)
            .unwrap()
            .server
            .tls
            .expect("verify-full loads TLS");
        assert_eq!(tls.server_name.to_str(), "db.example.com");
        assert!(
            with(r#""sslmode": "require", "#)
                .unwrap()
                .server
                .tls
                .is_some()
        );
        let e = with(r#""ca_file": "/ca.pem", "#).unwrap_err().to_string();
        assert!(
            e.contains("`ca_file` is set but `sslmode` is \"disable\""),
            "{e}"
        );
        let e = with(r#""sslmode": "prefer", "#).unwrap_err().to_string();
        assert!(e.contains("sslmode") && e.contains("verify-full"), "{e}");
        let e = with(r#""sslmode": "verify-ca", "ca_file": "/nonexistent/ca.pem", "#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ca_file` /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn routes_take_their_topic_and_its_partitions() {
        let s = settings(&format!(
            r#"{{"routes": [{{"topic": "/d/t", "table": "t", "upsert_key": ["id"], {COLUMNS}}}]}}"#
        ))
        .unwrap();
        let r = &s.routes[0];
        assert!(r.takes("/d/t"));
        assert!(r.takes("/d/t-part-3"));
        assert!(!r.takes("/d/t-part-"));
        assert!(!r.takes("/d/tx"));
        assert!(!r.takes("/d/u"));
    }
}
