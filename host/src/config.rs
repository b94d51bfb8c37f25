//! The connector configuration file.
//!
//! One TOML file per connector, compatible with danube-connect's core settings:
//! root keys `danube_service_url` and `connector_name`, the tables `[retry]` and
//! `[processing]`, the host's own `[sandbox]`, `[state]`, `[dead_letter]`,
//! `[metrics]` and `[broker]`,
//! the topics' schemas in `[[schemas]]`, and exactly one more table that belongs to the connector (`[mqtt]`,
//! `[datagen]`, ...) and is handed to the guest as JSON.
//!
//! Every mistake is reported on one line naming the file, the key and what to
//! do: an unknown key comes with the nearest valid one, a wrong type with its
//! line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::connector_table::ConnectorTable;

/// Environment variables the host reads (beside `SECTION_KEY` for connector keys).
pub const ENV_SERVICE_URL: &str = "DANUBE_SERVICE_URL";
pub const ENV_CONNECTOR_NAME: &str = "CONNECTOR_NAME";
/// Overrides `[metrics] bind`; the container image sets it to `0.0.0.0`.
pub const ENV_METRICS_BIND: &str = "METRICS_BIND";
/// Overrides `[metrics] port` (and so `[processing] metrics_port`).
pub const ENV_METRICS_PORT: &str = "METRICS_PORT";
pub const ENV_CONFIG_PATH: &str = "CONNECTOR_CONFIG_PATH";
pub const ENV_LOG_LEVEL: &str = "LOG_LEVEL";

/// A configuration problem, always one line: `FILE: what is wrong; what to do`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// The host's settings. Every field has a default except the two root keys, so
/// that a minimal file is two lines plus the connector's table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostConfig {
    /// The Danube broker, e.g. `http://127.0.0.1:6650`. Env: `DANUBE_SERVICE_URL`.
    pub danube_service_url: String,
    /// Names the connector in logs, metrics, producer and subscription names.
    /// Env: `CONNECTOR_NAME`.
    pub connector_name: String,
    pub retry: RetryConfig,
    pub processing: ProcessingConfig,
    pub sandbox: SandboxConfig,
    pub state: StateConfig,
    pub dead_letter: DeadLetterConfig,
    pub metrics: MetricsConfig,
    pub broker: BrokerConfig,
    pub schemas: Vec<SchemaConfig>,
    /// `[server]`: the HTTP listener of an ingress connector; refused for
    /// other connectors, as are `[auth]` and `[rate_limit]`.
    pub server: Option<ServerConfig>,
    /// `[auth]`: how an ingress connector's senders authenticate.
    pub auth: Option<AuthConfig>,
    /// `[rate_limit]`: how many requests an ingress connector takes.
    pub rate_limit: Option<RateLimitConfig>,
}

impl HostConfig {
    /// The first of the ingress tables (`[server]`, `[auth]`,
    /// `[rate_limit]`) the file has, to refuse it for other connectors.
    pub fn ingress_table(&self) -> Option<&'static str> {
        [
            ("server", self.server.is_some()),
            ("auth", self.auth.is_some()),
            ("rate_limit", self.rate_limit.is_some()),
        ]
        .into_iter()
        .find_map(|(table, set)| set.then_some(table))
    }
}

/// `[retry]`: how retryable errors from the guest and from Danube back off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RetryConfig {
    /// Attempts after the first before the error is final.
    pub max_retries: u32,
    /// First backoff; doubles on every attempt, with jitter. Also read as
    /// `initial_interval_ms` (danube-connect's webhook source).
    #[serde(alias = "initial_interval_ms")]
    pub retry_backoff_ms: u64,
    /// Backoff ceiling. Also read as `max_interval_ms`.
    #[serde(alias = "max_interval_ms")]
    pub max_backoff_ms: u64,
    /// What a sink does with a batch whose retryable errors outlasted
    /// `max_retries`.
    pub on_exhausted: OnExhausted,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            retry_backoff_ms: 200,
            max_backoff_ms: 10_000,
            on_exhausted: OnExhausted::DeadLetter,
        }
    }
}

/// `[retry] on_exhausted`: the end of a sink batch that kept failing with
/// retryable errors.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Its records go to the dead-letter topic (`dlq.error` says the retries
    /// were exhausted) and the connector goes on.
    DeadLetter,
    /// The connector stops with a fatal error; the records stay
    /// unacknowledged and are delivered again when it restarts.
    Stop,
}

/// `[processing]`: batching and pacing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessingConfig {
    /// Records per `poll` (source) or per `process-batch` (sink).
    pub batch_size: u32,
    /// A sink batch is flushed at this age even if not full.
    pub batch_timeout_ms: u64,
    /// How long a sink batch waits for more messages once none is waiting
    /// (what has arrived always joins the batch at once). With a broker's
    /// small unacked window (10 by default) the next message cannot come
    /// before the batch is acked: 0 hands a batch on at once and drains a
    /// reliable subscription fastest. Batches still grow under load: while
    /// two are in flight, everything that arrives joins the next.
    pub linger_ms: u64,
    /// A sink that was handed no batch for this long is handed an empty
    /// one, a tick: a connector that gathers records across calls
    /// (delta-lake-sink's files) writes what it holds once it is old
    /// enough, also when the topic has gone quiet. The Rust SDK hands a
    /// tick to `Sink::tick` (nothing by default). 0: never.
    pub idle_tick_ms: u64,
    /// How long one source `poll` may wait for the first record.
    pub poll_interval_ms: u64,
    /// Parallel Danube producers per topic (one send is in flight per producer).
    /// Records with the same key always use the same producer, so per-key order
    /// holds. 8 by default: on the real broker 8 lanes published 1.4× the
    /// records of 4 at less CPU per record in host and broker alike (fewer
    /// idle wake-ups per record). Each lane is one more producer of the topic.
    pub producers_per_topic: u32,
    /// Source records published but not yet acked, at most. A source whose
    /// window is full is polled again once `batch_size` records (or half the
    /// window, when smaller) fit.
    pub max_in_flight: u32,
    /// While a source's polls come back full (it has more than the host
    /// takes), its `commit` is called at most this often: each commit may
    /// cost the connector a write to disk (the state store syncs every
    /// put). A poll that returns fewer records than asked commits at once,
    /// so sources that acknowledge upstream on commit (MQTT) are not held
    /// back. 0: commit as soon as anything is acknowledged.
    pub commit_interval_ms: u64,
    /// Bound on one publish or ack to Danube before it counts as failed.
    pub publish_timeout_ms: u64,
    /// How often the connector's `health()` is asked; a failure marks the
    /// connector degraded, and a worker that died while idle is noticed.
    pub health_interval_ms: u64,
    /// Port of `/metrics` and `/health`.
    pub metrics_port: u16,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter.
    /// Env: `LOG_LEVEL` (then `RUST_LOG`).
    pub log_level: String,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            batch_size: 500,
            batch_timeout_ms: 1000,
            linger_ms: 0,
            idle_tick_ms: 1000,
            poll_interval_ms: 100,
            producers_per_topic: 8,
            max_in_flight: 5000,
            commit_interval_ms: 100,
            publish_timeout_ms: 10_000,
            health_interval_ms: 10_000,
            metrics_port: 9090,
            log_level: "info".into(),
        }
    }
}

/// `[sandbox]`: what the guest may use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SandboxConfig {
    /// Linear memory cap of the guest, MiB.
    pub memory_mb: u64,
    /// Longest a single guest call may run before it is stopped.
    pub call_timeout_ms: u64,
    /// Host directories granted to the guest (read and write), at the same path.
    pub dirs: Vec<PathBuf>,
    /// TCP destinations the guest may connect to, `host:port` or
    /// `address/prefix:port`. Everything else is denied.
    pub allow: Vec<String>,
    /// Names the guest may look up besides the host names in `allow`: those
    /// of destinations allowed by address range (a compose service in
    /// `172.28.0.0/24`, a Kubernetes Service in the cluster's range).
    pub lookup: Vec<String>,
    /// Where compiled modules are cached. Default: `$XDG_CACHE_HOME/danube-host`
    /// or `~/.cache/danube-host`.
    pub cache_dir: Option<PathBuf>,
    /// Fuel per guest call: a deterministic bound on compute, counted in
    /// WebAssembly instructions (roughly). Off by default: it slows compute
    /// by about 40%.
    pub fuel: Option<u64>,
    /// Largest file the worker may write, MiB; a larger write fails with
    /// "File too large".
    pub max_file_mb: u64,
    /// Topics the connector may publish to or consume from, as patterns
    /// (`*` for any run of characters, e.g. `"/default/pg-*"`). Empty: any.
    pub topics: Vec<String>,
    /// Subscription names a sink may consume under. Empty: any.
    pub subscriptions: Vec<String>,
    /// Most topics (and subscriptions) one connector may open; each costs
    /// producers, a consumer and metric series in the host.
    pub max_topics: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: 256,
            call_timeout_ms: 30_000,
            dirs: Vec::new(),
            allow: Vec::new(),
            lookup: Vec::new(),
            cache_dir: None,
            fuel: None,
            max_file_mb: 4096,
            topics: Vec::new(),
            subscriptions: Vec::new(),
            max_topics: 100,
        }
    }
}

/// `[state]`: where the connector's state store is persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StateConfig {
    /// Directory holding `<connector_name>.state.json`.
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("danube-state"),
        }
    }
}

/// `[dead_letter]`: where sink records that can never be written go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeadLetterConfig {
    /// Default: `/default/<connector_name>-dlq`.
    pub topic: Option<String>,
}

/// `[broker]`: what the host may ask of the Danube broker beyond producing
/// and consuming, and how closely a sink watches its subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BrokerConfig {
    /// The broker's admin API (its `--admin-addr`, port 50051 by default),
    /// e.g. `http://danube-broker:50051`. Given, the host creates the
    /// namespaces its topics need; not given, a missing namespace stops the
    /// connector naming it and how to create it.
    pub admin_url: Option<String>,
    /// The broker's Prometheus exporter (its `--prom-exporter`, port 9040 by
    /// default), e.g. `http://danube-broker:9040/metrics`. Given, a sink
    /// reads its subscriptions' lag there and reports one the broker stopped
    /// feeding, also on shared subscriptions.
    pub metrics_url: Option<String>,
    /// A subscription whose messages the broker holds back this long (nothing
    /// received, nothing in hand, the broker reporting a lag) is reported
    /// stalled.
    pub stall_timeout_ms: u64,
    /// How often a sink looks for partitions of its topics created since it
    /// subscribed, and reads the broker's metrics.
    pub check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            admin_url: None,
            metrics_url: None,
            stall_timeout_ms: 30_000,
            check_interval_ms: 5_000,
        }
    }
}

/// `[metrics]`: where `/metrics`, `/health` and `/ready` are served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MetricsConfig {
    /// Address to listen on. Loopback by default: /health carries the
    /// connector's own words, which are not for every network peer. Env:
    /// `METRICS_BIND` (the container image sets `0.0.0.0`).
    pub bind: std::net::IpAddr,
    /// Port; overrides `[processing] metrics_port` (kept for compatibility).
    /// 0 picks a free port (it is logged).
    pub port: Option<u16>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: None,
        }
    }
}

/// `[server]`: where an ingress connector takes HTTP requests, with
/// danube-connect's webhook keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on. All interfaces by default, as webhooks come
    /// from elsewhere. Env: `SERVER_HOST`.
    pub host: std::net::IpAddr,
    /// Port; 0 picks a free one (it is logged). Env: `SERVER_PORT`.
    pub port: u16,
    /// How long, in seconds, a request may wait for its records to be
    /// stored before it is answered 503 (the sender tries again).
    pub timeout_seconds: u64,
    /// Largest request body, in bytes; a larger one is answered 413.
    pub max_body_size: usize,
    /// PEM certificate chain: with `tls_key_path`, the listener speaks
    /// HTTPS only.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key of `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 8080,
            timeout_seconds: 30,
            max_body_size: 1 << 20,
            tls_cert_path: None,
            tls_key_path: None,
        }
    }
}

/// `[auth]`: how senders to an ingress connector prove who they are, with
/// danube-connect's webhook keys; a request that fails is answered 401.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthConfig {
    /// `none`, `apikey`, `hmac` or `jwt`.
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// The environment variable holding the secret: the API key, the HMAC
    /// signing secret, or the JWT HMAC secret. Read by the host at start;
    /// never logged.
    pub secret_env: Option<String>,
    /// `apikey`: the header carrying the key (default `X-API-Key`);
    /// `hmac`: the header carrying the signature (required), as
    /// `sha256=<hex>`, `<hex>`, or Stripe's `t=<time>,v1=<hex>`.
    pub header: Option<String>,
    /// `hmac`: `sha256` (the default) or `sha512`; `jwt`: `HS256` (the
    /// default with `secret_env`), `HS384`, `HS512`, `RS256` (the default
    /// with `public_key_path`), `RS384`, `RS512`, `ES256`, `ES384`.
    pub algorithm: Option<String>,
    /// `jwt`: the PEM public key tokens are verified with, instead of a
    /// secret.
    pub public_key_path: Option<PathBuf>,
    /// `hmac`: the header carrying the signing time (Unix seconds), when it
    /// is not in the signature header (Stripe's `t=`). The signed text is
    /// then `<time>.<body>`. Default: `X-Webhook-Timestamp`.
    pub timestamp_header: Option<String>,
    /// `hmac`: how far, in seconds, the signing time may be from now; and
    /// how long a signature is remembered to refuse it sent again.
    pub tolerance_seconds: u64,
    /// `hmac`: refuse a signature without a signing time (true, the
    /// default: a captured request could otherwise be replayed later).
    /// false accepts an HMAC of the body alone (GitHub's
    /// `X-Hub-Signature-256`), remembered for `tolerance_seconds`.
    pub require_timestamp: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            kind: AuthKind::None,
            secret_env: None,
            header: None,
            algorithm: None,
            public_key_path: None,
            timestamp_header: None,
            tolerance_seconds: 300,
            require_timestamp: true,
        }
    }
}

/// `[auth] type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    None,
    #[serde(alias = "api_key")]
    Apikey,
    Hmac,
    Jwt,
}

/// `[rate_limit]`: the requests an ingress connector takes, over all
/// senders and per sender; above them a request is answered 429 with
/// `Retry-After`. danube-connect's keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Requests per second over all senders; 0: no limit.
    pub requests_per_second: u32,
    /// Requests that may come at once above that rate. Default: the rate.
    pub burst_size: u32,
    /// Limit each sender (by address) too.
    pub per_ip_enabled: bool,
    /// Requests per second from one sender, with as many at once.
    pub per_ip_requests_per_second: Option<u32>,
}

/// Overrides `[server] host`.
pub const ENV_SERVER_HOST: &str = "SERVER_HOST";
/// Overrides `[server] port`.
pub const ENV_SERVER_PORT: &str = "SERVER_PORT";

/// `[[schemas]]`: the schema a source topic's messages are published with,
/// with danube-connect's keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SchemaConfig {
    /// The topic whose producers attach the schema, `/namespace/name`.
    pub topic: String,
    /// The registry subject, e.g. `orders-value`.
    pub subject: String,
    pub schema_type: SchemaType,
    /// The schema definition; a relative path is taken from the configuration
    /// file's directory, else from the working directory. Not needed (empty
    /// or absent) for `string`, `bytes` and `number`.
    #[serde(default)]
    pub schema_file: PathBuf,
    /// Register `schema_file` under `subject` at start (a new version if it
    /// changed); otherwise the subject must already be registered.
    #[serde(default = "auto_register_default")]
    pub auto_register: bool,
    /// Which version of the subject the producers attach.
    #[serde(default)]
    pub version_strategy: VersionStrategy,
}

fn auto_register_default() -> bool {
    true
}

/// The kinds of schema the registry knows. Read in any case, `json` and
/// `jsonschema` included, as danube-connect writes them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum SchemaType {
    JsonSchema,
    String,
    Bytes,
    Number,
    Avro,
    Protobuf,
}

impl TryFrom<String> for SchemaType {
    type Error = String;

    fn try_from(name: String) -> Result<SchemaType, String> {
        Ok(match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "json_schema" | "jsonschema" | "json" => SchemaType::JsonSchema,
            "string" => SchemaType::String,
            "bytes" => SchemaType::Bytes,
            "number" => SchemaType::Number,
            "avro" => SchemaType::Avro,
            "protobuf" => SchemaType::Protobuf,
            _ => {
                return Err(format!(
                    "unknown schema_type {name:?}; expected json_schema, avro, string, bytes or number"
                ));
            }
        })
    }
}

/// `version_strategy`: `"latest"`, `{ pinned = N }` or `{ minimum = N }`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionStrategy {
    /// The subject's latest version.
    #[default]
    Latest,
    /// Exactly this version.
    Pinned(u32),
    /// The latest version, which must be at least this one.
    Minimum(u32),
}

impl HostConfig {
    /// Where the observability endpoints listen.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let port = self.metrics.port.unwrap_or(self.processing.metrics_port);
        std::net::SocketAddr::new(self.metrics.bind, port)
    }
}

/// A parsed configuration file: the host's settings and the connector's table.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub path: PathBuf,
    pub host: HostConfig,
    /// Name of the connector's table, e.g. `mqtt`; `None` when the
    /// connector's settings are top-level tables (see `take_connector_table`).
    pub section: Option<String>,
    /// The connector's table, handed to the guest.
    pub connector: toml::Table,
}

impl ConnectorConfig {
    /// Reads and checks a file, applying the environment overrides for host keys.
    pub fn load(path: &Path) -> Result<ConnectorConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` looks up environment variables.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectorConfig, ConfigError> {
        let file = path.display().to_string();
        let err = |message: String| ConfigError {
            file: file.clone(),
            message,
        };
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(describe_toml_error(&e, text)))?;

        move_root_metrics_port(&mut root).map_err(err)?;
        let known = known_keys();
        let (section, connector) = take_connector_table(&mut root, &known).map_err(err)?;

        for (var, key) in [
            (ENV_SERVICE_URL, "danube_service_url"),
            (ENV_CONNECTOR_NAME, "connector_name"),
        ] {
            if let Some(value) = env(var) {
                root.insert(key.into(), toml::Value::String(value));
            }
        }
        for (var, table, key) in [
            (ENV_LOG_LEVEL, "processing", "log_level"),
            (ENV_METRICS_BIND, "metrics", "bind"),
            (ENV_METRICS_PORT, "metrics", "port"),
            (ENV_SERVER_HOST, "server", "host"),
            (ENV_SERVER_PORT, "server", "port"),
        ] {
            // `[server]` is an ingress connector's: the environment of any
            // other connector may well have a SERVER_PORT of its own.
            if table == "server" && !root.contains_key("server") {
                continue;
            }
            if let Some(value) = env(var) {
                let table = root
                    .entry(table)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = table {
                    // A port is a number; a value that is not one is named
                    // by the type check below.
                    let value = match key {
                        "port" => parse_env_value(&value),
                        _ => toml::Value::String(value),
                    };
                    t.insert(key.into(), value);
                }
            }
        }

        let mut unknown = Vec::new();
        let host: HostConfig =
            serde_ignored::deserialize(toml::Value::Table(root), |p| unknown.push(p.to_string()))
                .map_err(|e| err(one_line_type_error(&e.to_string())))?;
        if let Some(key) = unknown.first() {
            return Err(err(unknown_key_message(key, &known)));
        }
        check_host(&host).map_err(err)?;
        Ok(ConnectorConfig {
            path: path.to_path_buf(),
            host,
            section,
            connector,
        })
    }

    /// The connector's table as JSON text, for the guest's `open`.
    pub fn connector_json(&self) -> String {
        serde_json::to_string(&self.connector).unwrap_or_else(|_| "{}".into())
    }

    /// Applies `SECTION_KEY` environment overrides to the connector's table,
    /// e.g. `MQTT_PASSWORD` for `[mqtt] password`. Only keys the table has or
    /// the connector declares ([`ConnectorTable::env_keys`]) are taken, so
    /// an unrelated variable never becomes an unknown key. A key whose value
    /// in the file is a string, or which the connector types as text, takes
    /// the variable as it is (a password `123456` stays text); other keys
    /// read it as TOML.
    pub fn apply_connector_env(
        &mut self,
        declared: &ConnectorTable,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        let Some(section) = &self.section else { return };
        let declared: BTreeMap<&str, bool> = declared
            .env_keys()
            .map(|(name, key)| (name, key.takes_text()))
            .collect();
        let keys: BTreeSet<String> = self
            .connector
            .keys()
            .map(String::as_str)
            .chain(declared.keys().copied())
            .map(String::from)
            .collect();
        for key in keys {
            let var = format!("{section}_{key}").to_uppercase();
            if let Some(value) = env(&var) {
                let text = match self.connector.get(&key) {
                    Some(value) => value.is_str(),
                    None => declared.get(key.as_str()).copied().unwrap_or(false),
                };
                let value = match text {
                    true => toml::Value::String(value),
                    false => parse_env_value(&value),
                };
                self.connector.insert(key, value);
            }
        }
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.host
            .dead_letter
            .topic
            .clone()
            .unwrap_or_else(|| format!("/default/{}-dlq", self.host.connector_name))
    }

    /// The file holding the connector's persisted state store.
    pub fn state_file(&self) -> PathBuf {
        self.host
            .state
            .dir
            .join(format!("{}.state.json", self.host.connector_name))
    }
}

/// An environment value as TOML where it parses as a scalar or array
/// (`true`, `1883`, `["a"]`), else as a string.
fn parse_env_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

/// Every valid host key as a dotted path (`processing.batch_size`), derived
/// from the settings themselves so the list never drifts from the code.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let toml::Value::Table(t) = v {
                walk(&path, t, out);
            }
            out.insert(path);
        }
    }
    let mut out = BTreeSet::new();
    let defaults = toml::Table::try_from(HostConfig::default()).unwrap_or_default();
    walk("", &defaults, &mut out);
    // Optional keys are absent from the serialized defaults.
    out.insert("server".into());
    let server = toml::Table::try_from(ServerConfig::default()).unwrap_or_default();
    walk("server", &server, &mut out);
    out.insert("server.tls_cert_path".into());
    out.insert("server.tls_key_path".into());
    out.insert("auth".into());
    let auth = toml::Table::try_from(AuthConfig::default()).unwrap_or_default();
    walk("auth", &auth, &mut out);
    for key in [
        "secret_env",
        "header",
        "algorithm",
        "public_key_path",
        "timestamp_header",
    ] {
        out.insert(format!("auth.{key}"));
    }
    out.insert("rate_limit".into());
    let rate_limit = toml::Table::try_from(RateLimitConfig::default()).unwrap_or_default();
    walk("rate_limit", &rate_limit, &mut out);
    out.insert("rate_limit.per_ip_requests_per_second".into());
    out.insert("sandbox.cache_dir".into());
    out.insert("sandbox.fuel".into());
    out.insert("dead_letter.topic".into());
    out.insert("metrics.port".into());
    out.insert("broker.admin_url".into());
    out.insert("broker.metrics_url".into());
    let schema = SchemaConfig {
        topic: String::new(),
        subject: String::new(),
        schema_type: SchemaType::Bytes,
        schema_file: PathBuf::new(),
        auto_register: true,
        version_strategy: VersionStrategy::Latest,
    };
    let schema = toml::Table::try_from(schema).unwrap_or_default();
    out.extend(schema.keys().map(|k| format!("schemas.{k}")));
    out
}

/// Takes the connector's settings out of the file. Usually they are its one
/// table that is not the host's (`[mqtt]`: the section, whose name prefixes
/// environment overrides). A connector may also keep them at the top level,
/// as some of danube-connect's do (`[server]`, `[auth]`, `[[routes]]`): then
/// every top-level table and array of tables that is not the host's is the
/// connector's, gathered, with no section. Top-level values stay the host's,
/// so that a mistyped host key is still named as one, and a table whose name
/// is a near miss of a host table's is a typo, not the connector's.
fn take_connector_table(
    root: &mut toml::Table,
    known: &BTreeSet<String>,
) -> Result<(Option<String>, toml::Table), String> {
    let host_tables: Vec<&str> = known
        .iter()
        .filter(|k| !k.contains('.'))
        .map(String::as_str)
        .filter(|k| root.get(*k).is_none_or(|v| v.is_table()))
        .collect();
    let is_tables = |v: &toml::Value| match v {
        toml::Value::Table(_) => true,
        toml::Value::Array(items) => !items.is_empty() && items.iter().all(toml::Value::is_table),
        _ => false,
    };
    let candidates: Vec<String> = root
        .iter()
        .filter(|(k, v)| is_tables(v) && !known.contains(*k))
        .map(|(k, _)| k.clone())
        .collect();
    for name in &candidates {
        if let Some(near) = nearest(name, host_tables.iter().copied())
            && strsim::levenshtein(name, near) <= 2
        {
            return Err(format!(
                "unknown table [{}]; did you mean [{near}]?",
                name.escape_debug()
            ));
        }
    }
    if let [one] = candidates.as_slice()
        && root.get(one).is_some_and(toml::Value::is_table)
        && let Some(toml::Value::Table(table)) = root.remove(one)
    {
        return Ok((Some(one.clone()), table));
    }
    let gathered = candidates
        .into_iter()
        .filter_map(|name| root.remove(&name).map(|value| (name, value)))
        .collect();
    Ok((None, gathered))
}

fn unknown_key_message(key: &str, known: &BTreeSet<String>) -> String {
    // A key inside an array of tables reads `schemas.0.subjct`: it is matched
    // as `schemas.subjct` and shown as `schemas[0].subjct`.
    let segments: Vec<&str> = key.split('.').collect();
    let is_index = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let plain = segments
        .iter()
        .filter(|s| !is_index(s))
        .copied()
        .collect::<Vec<_>>()
        .join(".");
    let mut shown = String::new();
    for segment in &segments {
        match is_index(segment) {
            true => shown.push_str(&format!("[{segment}]")),
            false if shown.is_empty() => shown.push_str(segment),
            false => shown.push_str(&format!(".{segment}")),
        }
    }
    let parent = plain.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    let siblings = known
        .iter()
        .filter(|k| k.rsplit_once('.').map(|(p, _)| p).unwrap_or("") == parent);
    // Names come from the file: escaped, so a message stays on one line.
    let shown = shown.escape_debug();
    match nearest(&plain, siblings.map(String::as_str)) {
        Some(near) => format!("unknown key `{shown}`; did you mean `{near}`?"),
        None => format!("unknown key `{shown}`"),
    }
}

pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A settings error reads `message\nin `path``: make it `` `path`: message ``.
fn one_line_type_error(text: &str) -> String {
    let mut message = Vec::new();
    let mut path = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("in ") {
            Some(p) => path = Some(p.trim_matches('`').to_string()),
            None => message.push(line),
        }
    }
    match path {
        Some(p) => format!("`{p}`: {}", message.join(" ")),
        None => message.join(" "),
    }
}

/// Turns a TOML error into one line with its line number.
pub fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// danube-connect files set `metrics_port` at the top level: it is read as
/// `[processing] metrics_port`.
fn move_root_metrics_port(root: &mut toml::Table) -> Result<(), String> {
    let Some(port) = root.remove("metrics_port") else {
        return Ok(());
    };
    let processing = root
        .entry("processing")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match processing {
        toml::Value::Table(t) if t.contains_key("metrics_port") => {
            Err("`metrics_port` is set both at the top level and in [processing]; keep one".into())
        }
        toml::Value::Table(t) => {
            t.insert("metrics_port".into(), port);
            Ok(())
        }
        _ => Err("`processing` must be a table".into()),
    }
}

fn check_host(host: &HostConfig) -> Result<(), String> {
    if host.danube_service_url.is_empty() {
        return Err(format!(
            "missing `danube_service_url` (the Danube broker, e.g. \"http://127.0.0.1:6650\"); set it in the file or with {ENV_SERVICE_URL}"
        ));
    }
    check_url(
        "danube_service_url",
        &host.danube_service_url,
        "http://127.0.0.1:6650",
        true,
    )?;
    if let Some(admin) = &host.broker.admin_url {
        check_url(
            "broker.admin_url",
            admin,
            "http://danube-broker:50051",
            true,
        )?;
    }
    if let Some(metrics) = &host.broker.metrics_url {
        let example = "http://danube-broker:9040/metrics";
        check_url("broker.metrics_url", metrics, example, false)?;
    }
    if host.connector_name.is_empty() {
        return Err(format!(
            "missing `connector_name` (names the connector in logs and metrics); set it in the file or with {ENV_CONNECTOR_NAME}"
        ));
    }
    if !host
        .connector_name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "`connector_name` = {:?} may only hold letters, digits, '-' and '_'",
            host.connector_name
        ));
    }
    let p = &host.processing;
    for (key, value) in [
        ("processing.batch_size", p.batch_size as u64),
        (
            "processing.producers_per_topic",
            p.producers_per_topic as u64,
        ),
        ("processing.max_in_flight", p.max_in_flight as u64),
        ("sandbox.memory_mb", host.sandbox.memory_mb),
        ("sandbox.call_timeout_ms", host.sandbox.call_timeout_ms),
        ("sandbox.max_file_mb", host.sandbox.max_file_mb),
        ("sandbox.max_topics", host.sandbox.max_topics as u64),
        ("sandbox.fuel", host.sandbox.fuel.unwrap_or(1)),
        ("processing.health_interval_ms", p.health_interval_ms),
    ] {
        if value == 0 {
            return Err(format!("`{key}` must be greater than 0"));
        }
    }
    crate::capability::topics::check_patterns(&host.sandbox)?;
    check_schemas(&host.schemas)
}

/// Each topic has one schema, and every schema type can be honoured.
fn check_schemas(schemas: &[SchemaConfig]) -> Result<(), String> {
    let mut topics = BTreeSet::new();
    for (index, schema) in schemas.iter().enumerate() {
        let at = format!("[[schemas]] #{} (topic {:?})", index + 1, schema.topic);
        if schema.schema_type == SchemaType::Protobuf {
            return Err(format!(
                "{at}: schema_type = \"protobuf\" is not supported: this host cannot validate protobuf payloads; use \"json_schema\" or \"avro\", or \"bytes\" to publish the payload unchecked"
            ));
        }
        if schema.subject.is_empty() || schema.topic.is_empty() {
            return Err(format!("{at}: `topic` and `subject` must not be empty"));
        }
        if !topics.insert(schema.topic.as_str()) {
            return Err(format!(
                "{at}: the topic already has a schema in an earlier [[schemas]] entry; give each topic one"
            ));
        }
        if let VersionStrategy::Pinned(0) | VersionStrategy::Minimum(0) = schema.version_strategy {
            return Err(format!("{at}: versions count from 1"));
        }
    }
    Ok(())
}

/// An `http` or `https` URL with a host and, where `needs_port`, a port:
/// the broker's gRPC services have no well-known one to fall back on.
fn check_url(key: &str, url: &str, example: &str, needs_port: bool) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{key}` = {url:?} is not a broker URL ({why}); expected e.g. \"{example}\""
        ))
    };
    // `host:port` parses as a URL whose scheme is the host.
    if !url.contains("://") {
        return bad("no scheme");
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return bad(&e.to_string()),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return bad("the scheme must be http or https");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return bad("no host");
    }
    if needs_port && parsed.port().is_none() {
        return bad("no port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConnectorConfig, ConfigError> {
        ConnectorConfig::parse(text, Path::new("c.toml"), &|_| None)
    }

    const MINIMAL: &str = r#"
danube_service_url = "http://127.0.0.1:6650"
connector_name = "demo"
[datagen]
count = 3
"#;

    /// As danube-connect's webhook source writes its settings: top-level
    /// tables and arrays of tables beside the host's.
    #[test]
    fn top_level_connector_settings_are_gathered_without_a_section() {
        let text = "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"hook\"\n\
            [processing]\nbatch_size = 10\n[server]\nport = 8080\n[auth]\ntype = \"hmac\"\n\
            [[routes]]\nfrom = \"/a\"\nto = \"/default/a\"\n[[schemas]]\ntopic = \"/default/a\"\nsubject = \"a\"\nschema_type = \"string\"\n";
        let c = parse(text).unwrap();
        assert_eq!(c.section, None);
        // `[server]` and `[auth]` are the ingress listener's, so the host's.
        assert_eq!(c.connector.keys().collect::<Vec<_>>(), ["routes"]);
        assert_eq!(c.host.server.as_ref().map(|s| s.port), Some(8080));
        assert_eq!(c.host.auth.as_ref().map(|a| a.kind), Some(AuthKind::Hmac));
        assert_eq!(c.host.processing.batch_size, 10);
        assert_eq!(c.host.schemas.len(), 1);
        // A top-level value is still the host's, so a typo is named.
        let e = parse(&format!("conector_name = \"x\"\n{text}")).unwrap_err();
        assert!(e.to_string().contains("unknown key `conector_name`"), "{e}");
    }

    #[test]
    fn server_env_overrides_apply_only_to_a_file_with_a_server_table() {
        let env = |k: &str| match k {
            ENV_SERVER_PORT => Some("9443".to_string()),
            ENV_SERVER_HOST => Some("127.0.0.1".to_string()),
            _ => None,
        };
        let c = ConnectorConfig::parse(MINIMAL, Path::new("c.toml"), &env).unwrap();
        assert_eq!(
            c.host.server, None,
            "a connector without [server] gets none"
        );
        let text = format!("{MINIMAL}\n[server]\nport = 8080\n");
        let c = ConnectorConfig::parse(&text, Path::new("c.toml"), &env).unwrap();
        let server = c.host.server.unwrap();
        assert_eq!(server.port, 9443);
        assert_eq!(server.host.to_string(), "127.0.0.1");
        assert_eq!(server.max_body_size, 1 << 20);
    }

    #[test]
    fn minimal_file_takes_defaults_and_finds_the_connector_table() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.section.as_deref(), Some("datagen"));
        assert_eq!(c.connector_json(), r#"{"count":3}"#);
        assert_eq!(c.host.retry, RetryConfig::default());
        assert_eq!(c.dead_letter_topic(), "/default/demo-dlq");
    }

    #[test]
    fn unknown_key_names_the_nearest() {
        let e = parse(&format!("{MINIMAL}\n[processing]\nbatch_sise = 3\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: unknown key `processing.batch_sise`; did you mean `processing.batch_size`?"
        );
    }

    #[test]
    fn misspelt_host_table_is_not_taken_for_the_connector() {
        let e = parse(&format!("{MINIMAL}\n[sandbx]\nmemory_mb = 3\n")).unwrap_err();
        assert!(e.to_string().contains("did you mean [sandbox]"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let e = parse(&format!("{MINIMAL}\n[retry]\nmax_retries = \"x\"\n")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("max_retries") || msg.contains("invalid type"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn missing_and_bad_url_are_explained() {
        let e = parse("connector_name = \"x\"").unwrap_err();
        assert!(e.to_string().contains("missing `danube_service_url`"));
        let e = parse("danube_service_url = \"localhost\"\nconnector_name = \"x\"").unwrap_err();
        assert!(e.to_string().contains("not a broker URL"), "{e}");
    }

    /// danube-connect's spellings are read as ours: a top-level
    /// `metrics_port`, `[retry] initial_interval_ms` / `max_interval_ms`,
    /// and `schema_type` in any case or as `json`.
    #[test]
    fn danube_connect_spellings_are_accepted() {
        let text = format!(
            "metrics_port = 9191\n{MINIMAL}\n[retry]\ninitial_interval_ms = 300\nmax_interval_ms = 9000\n\n[[schemas]]\ntopic = \"/default/a\"\nsubject = \"a\"\nschema_type = \"Json\"\nschema_file = \"a.json\"\n\n[[schemas]]\ntopic = \"/default/b\"\nsubject = \"b\"\nschema_type = \"String\"\nschema_file = \"\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.host.processing.metrics_port, 9191);
        assert_eq!(
            (c.host.retry.retry_backoff_ms, c.host.retry.max_backoff_ms),
            (300, 9000)
        );
        let types: Vec<SchemaType> = c.host.schemas.iter().map(|s| s.schema_type).collect();
        assert_eq!(types, [SchemaType::JsonSchema, SchemaType::String]);
        assert!(c.host.schemas[1].schema_file.as_os_str().is_empty());

        let twice = format!("metrics_port = 1\n{MINIMAL}\n[processing]\nmetrics_port = 2\n");
        let e = parse(&twice).unwrap_err();
        assert!(
            e.to_string()
                .contains("both at the top level and in [processing]"),
            "{e}"
        );
        let e = parse(&format!("{MINIMAL}\n[[schemas]]\ntopic = \"/default/a\"\nsubject = \"a\"\nschema_type = \"xml\"\n")).unwrap_err();
        assert!(e.to_string().contains("unknown schema_type \"xml\""), "{e}");
    }

    /// The broker's admin API and exporter are checked like its service
    /// URL; the exporter's port may be implied by its scheme.
    #[test]
    fn broker_urls_are_checked_at_load() {
        for (table, why) in [
            (
                "admin_url = \"http://broker\"",
                "`broker.admin_url` = \"http://broker\" is not a broker URL (no port)",
            ),
            (
                "admin_url = \"grpc://broker:50051\"",
                "(the scheme must be http or https)",
            ),
            (
                "metrics_url = \"http://:9040/metrics\"",
                "`broker.metrics_url`",
            ),
        ] {
            let e = parse(&format!("{MINIMAL}\n[broker]\n{table}\n")).unwrap_err();
            assert!(e.to_string().contains(why), "{table}: {e}");
        }
        let fine = "[broker]\nadmin_url = \"http://broker:50051\"\nmetrics_url = \"https://broker/metrics\"\n";
        parse(&format!("{MINIMAL}\n{fine}")).unwrap();
    }

    #[test]
    fn env_overrides_root_and_connector_keys() {
        let env = |k: &str| match k {
            "DANUBE_SERVICE_URL" => Some("http://10.0.0.1:6650".to_string()),
            "METRICS_PORT" => Some("9191".to_string()),
            "DATAGEN_COUNT" => Some("7".to_string()),
            "DATAGEN_PASSWORD" => Some("s3cret".to_string()),
            "DATAGEN_TOKEN" => Some("123456".to_string()),
            "DATAGEN_PIN" => Some("0042".to_string()),
            "DATAGEN_UNRELATED" => Some("x".to_string()),
            _ => None,
        };
        let mut c = ConnectorConfig::parse(MINIMAL, Path::new("c.toml"), &env).unwrap();
        assert_eq!(c.host.danube_service_url, "http://10.0.0.1:6650");
        assert_eq!(c.host.metrics_addr().port(), 9191);
        c.connector
            .insert("pin".into(), toml::Value::String("1".into()));
        c.apply_connector_env(
            &ConnectorTable::from_example("[datagen]\ncount = 1\npassword = \"\"\n# token = \"t\""),
            &env,
        );
        assert_eq!(c.connector["count"].as_integer(), Some(7));
        assert_eq!(c.connector["password"].as_str(), Some("s3cret"));
        // Digits stay text where the example or the file has text.
        assert_eq!(c.connector["pin"].as_str(), Some("0042"));
        assert!(!c.connector.contains_key("unrelated"));
        // A key only in a comment of the example is not declared: its
        // variable is not handed over.
        assert!(!c.connector.contains_key("token"));
    }

    #[test]
    fn the_readme_schemas_example_is_accepted() {
        let readme = include_str!("../../README.md");
        let example = readme
            .split("```toml")
            .nth(1)
            .and_then(|block| block.split("```").next())
            .expect("the README's configuration example");
        let c = parse(example).unwrap();
        assert_eq!(
            c.host.schemas,
            [SchemaConfig {
                topic: "/default/events".into(),
                subject: "events-value".into(),
                schema_type: SchemaType::JsonSchema,
                schema_file: "schemas/events.json".into(),
                auto_register: true,
                version_strategy: VersionStrategy::Latest,
            }]
        );
        assert_eq!(c.section.as_deref(), Some("datagen"));
    }

    #[test]
    fn schemas_take_danube_connect_keys_and_strategies() {
        let entry = |strategy: &str| {
            format!(
                "{MINIMAL}\n[[schemas]]\ntopic = \"/default/t\"\nsubject = \"s\"\nschema_type = \"avro\"\nschema_file = \"s.avsc\"\n{strategy}"
            )
        };
        let strategy = |text: &str| parse(&entry(text)).map(|c| c.host.schemas[0].version_strategy);
        assert_eq!(strategy("").unwrap(), VersionStrategy::Latest);
        assert_eq!(
            strategy("version_strategy = \"latest\"").unwrap(),
            VersionStrategy::Latest
        );
        assert_eq!(
            strategy("version_strategy = { pinned = 2 }").unwrap(),
            VersionStrategy::Pinned(2)
        );
        assert_eq!(
            strategy("version_strategy = { minimum = 3 }").unwrap(),
            VersionStrategy::Minimum(3)
        );
        assert!(parse(&entry("")).unwrap().host.schemas[0].auto_register);
        let e = strategy("version_strategy = { pinned = 0 }").unwrap_err();
        assert!(e.to_string().contains("versions count from 1"), "{e}");
        let e = parse(&entry("subjct = \"x\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: unknown key `schemas[0].subjct`; did you mean `schemas.subject`?"
        );
        let e = parse(&entry("").replace("\"avro\"", "\"protobuf\"")).unwrap_err();
        assert!(e.to_string().contains("protobuf\" is not supported"), "{e}");
        let twice = format!("{}\n{}", entry(""), entry("").replace(MINIMAL, ""));
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("already has a schema")
        );
    }

    mod properties {
        //! Property tests of the loader: no text, however broken, makes it
        //! panic, and every mistake is reported on one line naming the file.

        use super::*;
        use proptest::prelude::*;

        /// Keys the loader knows, near misses of them, free words and quoted
        /// keys; with `escapes`, quoted keys may hold `\\n` and `\\t`.
        fn key(escapes: bool) -> impl Strategy<Value = String> {
            let known: Vec<String> = known_keys()
                .into_iter()
                .map(|k| k.rsplit('.').next().unwrap_or(&k).to_string())
                .collect();
            prop_oneof![
                prop::sample::select(known.clone()),
                prop::sample::select(known).prop_map(|k| format!("{k}x")),
                "[a-z_]{1,12}",
                "\"[ !#-\\[\\]-~]{0,8}\"",
                if escapes {
                    "\"(\\\\n|\\\\t|[a-z]){1,8}\""
                } else {
                    "\"[a-z ]{1,8}\""
                },
            ]
        }

        /// Table names: the host's, the connector's, typos and nonsense.
        fn table() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "retry",
                    "processing",
                    "sandbox",
                    "state",
                    "dead_letter",
                    "metrics",
                    "broker",
                    "schemas",
                    "datagen",
                    "mqtt",
                    "sandbx",
                    "retri",
                    "file",
                ])
                .prop_map(str::to_string),
                "[a-z_]{1,10}",
                "[a-z]{1,6}\\.[a-z]{1,6}",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                Just("0".to_string()),
                Just("-1".to_string()),
                Just("18446744073709551616".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                "[ -~]{0,20}".prop_map(|t| format!("{t:?}")),
                Just("\"http://127.0.0.1:6650\"".to_string()),
                Just("\"127.0.0.1\"".to_string()),
                Just("1979-05-27T07:32:00Z".to_string()),
            ];
            leaf.prop_recursive(2, 12, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(", "))),
                    prop::collection::vec(("[a-z]{1,6}", inner), 0..3).prop_map(|kv| {
                        let parts: Vec<String> =
                            kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        format!("{{ {} }}", parts.join(", "))
                    }),
                ]
            })
        }

        /// One line of TOML-ish text.
        fn line(escapes: bool) -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (key(escapes), value()).prop_map(|(k, v)| format!("{k} = {v}")),
                2 => table().prop_map(|t| format!("[{t}]")),
                1 => table().prop_map(|t| format!("[[{t}]]")),
                1 => "[ -~]{0,30}",
                1 => "\\PC{0,10}",
                1 => Just(String::new()),
            ]
        }

        fn document(escapes: bool) -> impl Strategy<Value = String> {
            (
                prop::option::of(value()),
                prop::option::of(value()),
                prop::collection::vec(line(escapes), 0..16),
            )
                .prop_map(|(url, name, lines)| {
                    let mut text = String::new();
                    if let Some(url) = url {
                        text.push_str(&format!("danube_service_url = {url}\n"));
                    }
                    if let Some(name) = name {
                        text.push_str(&format!("connector_name = {name}\n"));
                    }
                    text.push_str(&lines.join("\n"));
                    text
                })
        }

        /// A valid file with the root keys, then arbitrary lines.
        fn mostly_valid(escapes: bool) -> impl Strategy<Value = String> {
            prop::collection::vec(line(escapes), 0..12).prop_map(|lines| {
                format!(
                    "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"demo\"\n{}",
                    lines.join("\n")
                )
            })
        }

        /// Parses with `env` answering every variable with `env_value`, and
        /// checks the result is sound: a configuration whose connector table
        /// is JSON, or an error naming the file (on one line if `one_line`).
        fn check(
            text: &str,
            env_value: Option<String>,
            one_line: bool,
        ) -> Result<(), TestCaseError> {
            let env = move |_: &str| env_value.clone();
            match ConnectorConfig::parse(text, Path::new("c.toml"), &env) {
                Ok(mut config) => {
                    let json: serde_json::Value = serde_json::from_str(&config.connector_json())
                        .map_err(|e| TestCaseError::fail(format!("connector_json: {e}")))?;
                    prop_assert!(json.is_object());
                    let _ = config.dead_letter_topic();
                    let _ = config.state_file();
                    let _ = config.host.metrics_addr();
                    config.apply_connector_env(&ConnectorTable::from_example(text), &env);
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(message.starts_with("c.toml: "), "{message}");
                    prop_assert!(
                        !one_line || !message.contains('\n'),
                        "an error spans lines: {message:?}\nfrom:\n{text}"
                    );
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
                check(&text, None, true)?;
            }

            #[test]
            fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                check(&String::from_utf8_lossy(&bytes), None, true)?;
            }

            #[test]
            fn toml_ish_documents_never_panic(text in document(true)) {
                check(&text, None, false)?;
            }

            #[test]
            fn toml_ish_documents_with_root_keys_never_panic(
                text in mostly_valid(true),
                env in prop::option::of(prop_oneof!["[ -~]{0,20}", "\\PC{0,10}", value()]),
            ) {
                check(&text, env, false)?;
            }

            #[test]
            fn errors_are_one_line(
                text in prop_oneof![document(false), mostly_valid(false)],
                env in prop::option::of(prop_oneof!["[ -~]{0,20}", value()]),
            ) {
                check(&text, env, true)?;
            }

            #[test]
            fn an_example_never_panics(text in prop_oneof![document(true), "\\PC{0,200}"]) {
                let _ = ConnectorTable::from_example(&text);
            }
        }

        /// Found by the properties above: a key or table name holding a
        /// newline (a quoted TOML key such as `"a\\nb"`) is echoed as is, so
        /// the error spans lines.
        #[test]
        fn names_with_newlines_are_escaped_in_errors() {
            for text in [
                "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"demo\"\n[processing]\n\"a\\nb\" = 1\n",
                "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"demo\"\n[\"processin\\ng\"]\n",
            ] {
                let e = ConnectorConfig::parse(text, Path::new("c.toml"), &|_| None).unwrap_err();
                assert!(!e.to_string().contains('\n'), "{e:?}");
            }
        }
    }
}
