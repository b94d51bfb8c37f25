//! The `[mqtt]` table: parsing, defaults and checks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use danube_connect_sdk::{ConnectorError, ProducerConfig};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::topic;
use danube_connector_tls::{Tls, TlsFiles, Verify};

pub const CONFIG_EXAMPLE: &str = r#"[mqtt]
# The MQTT broker (MQTT 3.1.1 over TCP, or TLS with use_tls). Env: MQTT_BROKER_HOST, MQTT_BROKER_PORT.
broker_host = "localhost"
broker_port = 1883
# Required, unique per connector instance: the broker keeps the persistent
# session (subscriptions and unacknowledged messages) under this id.
# Env: MQTT_CLIENT_ID.
client_id = "danube-mqtt-source"
# Credentials; empty = none. Env: MQTT_USERNAME, MQTT_PASSWORD.
username = ""
password = ""
# TLS to the broker (usually port 8883). Env: MQTT_USE_TLS.
use_tls = false
# PEM file of the CA(s) to trust, in a directory granted with [sandbox] dirs;
# unset: the Mozilla root set built into the connector.
# ca_file = "/etc/danube/mqtt/ca.pem"
# Client certificate and key (PEM) for brokers that require mutual TLS.
# client_cert_file = "/etc/danube/mqtt/client.pem"
# client_key_file = "/etc/danube/mqtt/client.key"
# Name the broker's certificate must carry; default: broker_host.
# tls_server_name = "mqtt.example.com"
# Keep-alive negotiated with the broker; 0 disables it.
keep_alive_secs = 60
# Bound on one TCP connect plus CONNACK, and on waiting for SUBACK.
connection_timeout_secs = 10
# false (default): persistent session, unacknowledged QoS 1/2 messages are
# redelivered after a restart or reconnect. true: the broker forgets them.
clean_session = false
# Add mqtt.topic, mqtt.qos, mqtt.retain and mqtt.dup attributes to each record.
include_metadata = true
# Payloads as received ("raw", the default), or as danube-connect publishes
# them ("json_or_base64"): JSON as it is, anything else as
# {"data": "<base64>", "size": N, "encoding": "base64"}.
payload_format = "raw"
# Largest PUBLISH packet accepted, bytes; larger ones are logged, counted and dropped.
max_packet_size = 10485760
# Disable Nagle's algorithm on the MQTT socket.
tcp_nodelay = true

# One table per subscription. A message goes to the first route whose filter
# matches its topic.
[[mqtt.routes]]
# MQTT topic filter; `+` matches one level, `#` the rest.
from = "sensors/#"
# Danube topic, /namespace/name.
to = "/iot/sensors"
# Subscription QoS: AtMostOnce, AtLeastOnce (default) or ExactlyOnce (or 0, 1, 2).
qos = "AtLeastOnce"
# 0: a plain topic; N > 0: N partitions (`-part-0`...), chosen by the routing key.
partitions = 8
# Reliable dispatch on the Danube topic; default: true for QoS 1 and 2, false for QoS 0.
reliable_dispatch = true
# Routing key of each record: "topic" (default; per-device order on
# partitioned topics) or "none".
routing_key = "topic"

# The older shape of a route, as danube-connect writes it, is read too (same
# keys, `mqtt_topic` for `from` and `danube_topic` for `to`):
# [[mqtt.topic_mappings]]
# mqtt_topic = "alerts/#"
# danube_topic = "/iot/alerts"
"#;

/// QoS levels, by name (`AtLeastOnce`) or number (`1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }

    pub fn to_mqttrs(self) -> mqttrs::QoS {
        match self {
            Qos::AtMostOnce => mqttrs::QoS::AtMostOnce,
            Qos::AtLeastOnce => mqttrs::QoS::AtLeastOnce,
            Qos::ExactlyOnce => mqttrs::QoS::ExactlyOnce,
        }
    }
}

impl<'de> Deserialize<'de> for Qos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Qos;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("AtMostOnce, AtLeastOnce, ExactlyOnce, or 0, 1, 2")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Qos, E> {
                match v {
                    0 => Ok(Qos::AtMostOnce),
                    1 => Ok(Qos::AtLeastOnce),
                    2 => Ok(Qos::ExactlyOnce),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Qos, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Qos, E> {
                let norm: String = v
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                match norm.as_str() {
                    "atmostonce" | "0" => Ok(Qos::AtMostOnce),
                    "atleastonce" | "1" => Ok(Qos::AtLeastOnce),
                    "exactlyonce" | "2" => Ok(Qos::ExactlyOnce),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A name in any case, or the level's number.
impl schemars::JsonSchema for Qos {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Qos".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "AtMostOnce, AtLeastOnce, ExactlyOnce (any case), or 0, 1, 2",
        })
    }
}

/// How an MQTT payload becomes a record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// As received, byte for byte.
    #[default]
    Raw,
    /// As danube-connect publishes it: a JSON payload as it is, anything
    /// else as `{"data": "<base64>", "size": N, "encoding": "base64"}`, so
    /// that every record on the topic is JSON.
    JsonOrBase64,
}

impl PayloadFormat {
    pub fn encode(self, payload: Vec<u8>) -> Vec<u8> {
        use base64::Engine;
        match self {
            PayloadFormat::JsonOrBase64
                if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() =>
            {
                let envelope = serde_json::json!({
                    "data": base64::engine::general_purpose::STANDARD.encode(&payload),
                    "size": payload.len(),
                    "encoding": "base64",
                });
                envelope.to_string().into_bytes()
            }
            _ => payload,
        }
    }
}

/// How a record's routing key is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingKey {
    /// The MQTT topic the message was published on.
    #[default]
    Topic,
    /// No key: records spread over partitions and producers freely.
    None,
}

/// A string that may arrive as another scalar: environment overrides such as
/// `MQTT_PASSWORD=1234` reach the connector as numbers. Never echoes the value
/// in an error, since it may be a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"…\"")
    }
}

/// Text, which may be written as another scalar.
impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "integer", "number", "boolean"] })
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Text, A::Error> {
                Err(de::Error::custom("expected a string, found a table"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Text, A::Error> {
                Err(de::Error::custom("expected a string, found an array"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[mqtt.routes]]`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// MQTT topic filter (required); `+` matches one level, `#` the
    /// remaining levels.
    pub from: String,
    /// Danube topic to publish to (required), `/namespace/name`.
    pub to: String,
    /// Subscription QoS: `AtMostOnce`, `AtLeastOnce` (the default) or
    /// `ExactlyOnce`, or 0, 1, 2.
    #[serde(default = "default_qos")]
    pub qos: Qos,
    /// 0 (the default): a plain Danube topic; N > 0: N partitions
    /// (`-part-0`...), chosen by the routing key.
    #[serde(default)]
    pub partitions: u32,
    /// Reliable dispatch on the Danube topic. Default: true for QoS 1 and 2,
    /// false for QoS 0.
    #[serde(default)]
    pub reliable_dispatch: Option<bool>,
    /// Routing key of each record: `topic` (the default; the MQTT topic, so
    /// per-device order on partitioned topics) or `none`.
    #[serde(default)]
    pub routing_key: RoutingKey,
}

/// `[[mqtt.topic_mappings]]`, the older shape of a route.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicMapping {
    /// MQTT topic filter (required), as `from` in a route; `+` matches one
    /// level, `#` the remaining levels.
    pub mqtt_topic: String,
    /// Danube topic to publish to (required), `/namespace/name`, as `to` in
    /// a route.
    pub danube_topic: String,
    /// Subscription QoS: `AtMostOnce`, `AtLeastOnce` (the default) or
    /// `ExactlyOnce`, or 0, 1, 2.
    #[serde(default = "default_qos")]
    pub qos: Qos,
    /// 0 (the default): a plain Danube topic; N > 0: N partitions
    /// (`-part-0`...), chosen by the routing key.
    #[serde(default)]
    pub partitions: u32,
    /// Reliable dispatch on the Danube topic. Default: true for QoS 1 and 2,
    /// false for QoS 0.
    #[serde(default)]
    pub reliable_dispatch: Option<bool>,
    /// Routing key of each record: `topic` (the default; the MQTT topic, so
    /// per-device order on partitioned topics) or `none`.
    #[serde(default)]
    pub routing_key: RoutingKey,
}

fn default_qos() -> Qos {
    Qos::AtLeastOnce
}

/// The `[mqtt]` table as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// MQTT broker host name or address (env `MQTT_BROKER_HOST`). Default:
    /// `localhost`.
    #[serde(default = "default_host")]
    pub broker_host: String,
    /// MQTT broker port (env `MQTT_BROKER_PORT`), usually 8883 with TLS.
    /// Default: 1883.
    #[serde(default = "default_port")]
    pub broker_port: u16,
    /// Client identifier (required; env `MQTT_CLIENT_ID`). The broker keeps
    /// the persistent session under it, so give every connector instance its
    /// own.
    #[serde(default)]
    pub client_id: Option<Text>,
    /// User name (env `MQTT_USERNAME`); unset or empty = none.
    #[serde(default)]
    pub username: Option<Text>,
    /// Password (env `MQTT_PASSWORD`); unset or empty = none. Needs
    /// `username`; never logged.
    #[serde(default)]
    pub password: Option<Text>,
    /// Connect to the broker over TLS, usually on port 8883 (env
    /// `MQTT_USE_TLS`). Default: false.
    #[serde(default)]
    pub use_tls: bool,
    /// With `use_tls`: PEM file of the CA certificates to trust, in a
    /// directory granted with `[sandbox] dirs`. Unset: the Mozilla root set
    /// built into the connector.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `use_tls`: PEM client certificate chain, for brokers that require
    /// mutual TLS. Set together with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// With `use_tls`: PEM private key of `client_cert_file`. Set both or
    /// neither.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// With `use_tls`: the name (DNS name or IP address) the broker's
    /// certificate must carry. Default: `broker_host`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// MQTT keep-alive, in seconds; a PINGREQ goes out after half of it
    /// without traffic. Default: 60; 0 disables it.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// Bound, in seconds, on a TCP connect plus CONNACK, on SUBACK, on a
    /// write and on an unanswered PINGREQ; at least 1, and keep it below
    /// `[sandbox] call_timeout_ms`. Default: 10.
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout_secs: u64,
    /// false (the default): persistent session, unacknowledged QoS 1/2
    /// messages are redelivered after a restart or reconnect. true: the
    /// broker forgets them.
    #[serde(default)]
    pub clean_session: bool,
    /// Add the `mqtt.topic`, `mqtt.qos`, `mqtt.retain` and `mqtt.dup`
    /// attributes to each record. Default: true.
    #[serde(default = "yes")]
    pub include_metadata: bool,
    /// How MQTT payloads are published: `raw` (the default), as received;
    /// `json_or_base64`, as danube-connect publishes them (JSON as it is,
    /// anything else as `{"data": "<base64>", "size": N, "encoding": "base64"}`).
    #[serde(default)]
    pub payload_format: PayloadFormat,
    /// Largest PUBLISH packet accepted, in bytes; larger ones are logged,
    /// counted and dropped. Default: 10485760 (10 MiB).
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Disable Nagle's algorithm on the MQTT socket. Default: true.
    #[serde(default = "yes")]
    pub tcp_nodelay: bool,
    /// `[[mqtt.routes]]` tables, one per subscription; a message goes to the
    /// first route whose filter matches its topic. At least one route (here
    /// or in `topic_mappings`) is required.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[[mqtt.topic_mappings]]`: routes in the older danube-connect shape
    /// (`mqtt_topic` for `from`, `danube_topic` for `to`), read in addition
    /// to `routes`.
    #[serde(default)]
    pub topic_mappings: Vec<TopicMapping>,
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> u16 {
    60
}
fn default_connection_timeout() -> u64 {
    10
}
fn default_max_packet_size() -> usize {
    10 * 1024 * 1024
}
fn yes() -> bool {
    true
}

/// One checked route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub filter: String,
    pub topic: String,
    pub qos: Qos,
    pub partitions: u32,
    pub reliable: bool,
    pub routing_key: RoutingKey,
}

/// The checked settings the connector runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub keep_alive_secs: u16,
    pub connection_timeout_secs: u64,
    pub clean_session: bool,
    pub include_metadata: bool,
    pub payload_format: PayloadFormat,
    pub max_packet_size: usize,
    pub tcp_nodelay: bool,
    /// Set when `use_tls`: the loaded client configuration.
    pub tls: Option<Tls>,
    pub routes: Vec<Route>,
}

/// MQTT's own ceiling on a packet's remaining length.
const MQTT_MAX_REMAINING: usize = 268_435_455;

impl Config {
    /// Checks the table and resolves defaults; every refusal is a config error
    /// that names the key.
    pub fn into_settings(self) -> Result<Settings, ConnectorError> {
        if self.broker_host.trim().is_empty() {
            return Err(ConnectorError::config("`broker_host` is empty"));
        }
        if self.broker_port == 0 {
            return Err(ConnectorError::config("`broker_port` must not be 0"));
        }
        let tls = self.tls()?;
        let client_id = match self.client_id {
            Some(Text(id)) if !id.is_empty() => id,
            _ => {
                return Err(ConnectorError::config(
                    "`client_id` is required (env MQTT_CLIENT_ID): the broker keeps the session under it, \
                     so give every connector instance its own",
                ));
            }
        };
        if client_id.len() > u16::MAX as usize {
            return Err(ConnectorError::config("`client_id` is too long"));
        }
        let username = self.username.map(|t| t.0).filter(|u| !u.is_empty());
        let password = self.password.map(|t| t.0).filter(|p| !p.is_empty());
        if password.is_some() && username.is_none() {
            return Err(ConnectorError::config(
                "`password` is set without `username`; MQTT 3.1.1 sends a password only with a user name",
            ));
        }
        if self.connection_timeout_secs == 0 {
            return Err(ConnectorError::config(
                "`connection_timeout_secs` must be at least 1",
            ));
        }
        if self.max_packet_size == 0 || self.max_packet_size > MQTT_MAX_REMAINING {
            return Err(ConnectorError::config(format!(
                "`max_packet_size` must be between 1 and {MQTT_MAX_REMAINING} bytes"
            )));
        }

        let mut routes: Vec<(String, Route)> = Vec::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            routes.push((
                format!("routes[{i}]"),
                route(
                    r.from,
                    r.to,
                    r.qos,
                    r.partitions,
                    r.reliable_dispatch,
                    r.routing_key,
                ),
            ));
        }
        for (i, m) in self.topic_mappings.into_iter().enumerate() {
            routes.push((
                format!("topic_mappings[{i}]"),
                route(
                    m.mqtt_topic,
                    m.danube_topic,
                    m.qos,
                    m.partitions,
                    m.reliable_dispatch,
                    m.routing_key,
                ),
            ));
        }
        if routes.is_empty() {
            return Err(ConnectorError::config(
                "no routes: add at least one [[mqtt.routes]] table with `from` (an MQTT topic filter) and `to` (a Danube topic)",
            ));
        }
        let mut seen_filters = BTreeMap::new();
        let mut topics: BTreeMap<String, (String, u32, bool)> = BTreeMap::new();
        for (at, r) in &routes {
            if let Err(why) = topic::validate_filter(&r.filter) {
                return Err(ConnectorError::config(format!(
                    "`{at}.from` = {:?}: {why}",
                    r.filter
                )));
            }
            if let Err(why) = validate_danube_topic(&r.topic) {
                return Err(ConnectorError::config(format!(
                    "`{at}.to` = {:?}: {why}",
                    r.topic
                )));
            }
            if let Some(prev) = seen_filters.insert(r.filter.clone(), at.clone()) {
                return Err(ConnectorError::config(format!(
                    "`{at}.from`: filter {:?} is already used by `{prev}`",
                    r.filter
                )));
            }
            if let Some((prev, p, rel)) = topics.get(&r.topic) {
                if *p != r.partitions || *rel != r.reliable {
                    return Err(ConnectorError::config(format!(
                        "`{at}`: Danube topic {:?} is also the target of `{prev}` with different `partitions` or `reliable_dispatch`",
                        r.topic
                    )));
                }
            } else {
                topics.insert(r.topic.clone(), (at.clone(), r.partitions, r.reliable));
            }
        }

        Ok(Settings {
            host: self.broker_host.trim().to_string(),
            port: self.broker_port,
            client_id,
            username,
            password: password.map(String::into_bytes),
            keep_alive_secs: self.keep_alive_secs,
            connection_timeout_secs: self.connection_timeout_secs,
            clean_session: self.clean_session,
            include_metadata: self.include_metadata,
            payload_format: self.payload_format,
            max_packet_size: self.max_packet_size,
            tcp_nodelay: self.tcp_nodelay,
            tls,
            routes: routes.into_iter().map(|(_, r)| r).collect(),
        })
    }
}

impl Config {
    /// Loads the TLS settings when `use_tls`; TLS keys without it are refused
    /// rather than silently ignored.
    fn tls(&self) -> Result<Option<Tls>, ConnectorError> {
        let files = TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
            server_name: self.tls_server_name.as_deref(),
        };
        if !self.use_tls {
            return match files.first_set() {
                Some(key) => Err(ConnectorError::config(format!(
                    "`{key}` is set but `use_tls` is false: set use_tls = true (env MQTT_USE_TLS) or remove `{key}`"
                ))),
                None => Ok(None),
            };
        }
        Tls::load(&files, self.broker_host.trim(), Verify::Full)
            .map(Some)
            .map_err(ConnectorError::config)
    }
}

fn route(
    filter: String,
    topic: String,
    qos: Qos,
    partitions: u32,
    reliable: Option<bool>,
    routing_key: RoutingKey,
) -> Route {
    Route {
        filter,
        topic,
        qos,
        partitions,
        reliable: reliable.unwrap_or(qos != Qos::AtMostOnce),
        routing_key,
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

impl Settings {
    /// The Danube producers, one per distinct target topic.
    pub fn producers(&self) -> Vec<ProducerConfig> {
        let mut seen = std::collections::BTreeSet::new();
        self.routes
            .iter()
            .filter(|r| seen.insert(r.topic.clone()))
            .map(|r| {
                ProducerConfig::new(&r.topic)
                    .with_reliable(r.reliable)
                    .with_partitions(r.partitions)
            })
            .collect()
    }

    /// The route for a message published on `topic`: the first whose filter matches.
    pub fn route_for(&self, topic: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| topic::matches(&r.filter, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn settings(json: &str) -> Result<Settings, ConnectorError> {
        parse_config::<Config>(json)?.into_settings()
    }

    #[test]
    fn the_example_parses() {
        let table: serde_json::Value = {
            // TOML → JSON as the host does, without a TOML parser: the example
            // is checked by the host's own test; here the JSON equivalent.
            serde_json::json!({
                "broker_host": "localhost", "broker_port": 1883, "client_id": "c",
                "username": "", "password": "", "use_tls": false, "keep_alive_secs": 60,
                "connection_timeout_secs": 10, "clean_session": false, "include_metadata": true,
                "max_packet_size": 10485760, "tcp_nodelay": true,
                "routes": [{"from": "sensors/#", "to": "/iot/sensors", "qos": "AtLeastOnce",
                            "partitions": 8, "reliable_dispatch": true, "routing_key": "topic"}]
            })
        };
        let s = settings(&table.to_string()).unwrap();
        assert_eq!(s.username, None);
        assert_eq!(s.routes[0].partitions, 8);
        assert!(s.routes[0].reliable);
        assert_eq!(s.producers().len(), 1);
    }

    /// As danube-connect publishes MQTT payloads: JSON as it is, anything
    /// else in a base64 envelope; `raw` (the default) leaves them alone.
    #[test]
    fn payloads_as_received_or_as_danube_connect_publishes_them() {
        let json = br#"{"t": 21.5}"#.to_vec();
        let text = b"not json \xff".to_vec();
        assert_eq!(PayloadFormat::Raw.encode(text.clone()), text);
        assert_eq!(PayloadFormat::JsonOrBase64.encode(json.clone()), json);
        let envelope: serde_json::Value =
            serde_json::from_slice(&PayloadFormat::JsonOrBase64.encode(text.clone())).unwrap();
        assert_eq!(
            envelope,
            serde_json::json!({"data": "bm90IGpzb24g/w==", "size": 10, "encoding": "base64"})
        );
        let s = settings(
            r#"{"client_id": "c", "payload_format": "json_or_base64",
            "routes": [{"from": "a", "to": "/default/a"}]}"#,
        )
        .unwrap();
        assert_eq!(s.payload_format, PayloadFormat::JsonOrBase64);
    }

    #[test]
    fn older_topic_mappings_and_qos_defaults() {
        let s = settings(
            r#"{"client_id": "c", "topic_mappings": [
                {"mqtt_topic": "a/+", "danube_topic": "/default/a", "partitions": 3},
                {"mqtt_topic": "b/#", "danube_topic": "/default/b", "qos": 0}]}"#,
        )
        .unwrap();
        assert_eq!(s.routes[0].qos, Qos::AtLeastOnce);
        assert!(s.routes[0].reliable);
        assert_eq!(s.routes[1].qos, Qos::AtMostOnce);
        assert!(
            !s.routes[1].reliable,
            "QoS 0 defaults to non-reliable dispatch"
        );
        assert!(!s.clean_session);
        assert_eq!(s.route_for("a/x").unwrap().topic, "/default/a");
        assert_eq!(s.route_for("b/x/y").unwrap().topic, "/default/b");
        assert!(s.route_for("c").is_none());
    }

    #[test]
    fn tls_without_a_ca_file_trusts_the_built_in_roots() {
        let s = settings(
            r#"{"client_id": "c", "use_tls": true, "broker_host": "mqtt.example.com",
                "routes": [{"from": "a/#", "to": "/default/a"}]}"#,
        )
        .unwrap();
        let tls = s.tls.expect("use_tls loads a TLS configuration");
        assert_eq!(tls.server_name.to_str(), "mqtt.example.com");
        assert!(
            settings(r#"{"client_id": "c", "routes": [{"from": "a/#", "to": "/default/a"}]}"#)
                .unwrap()
                .tls
                .is_none()
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let base = r#""client_id": "c", "routes": [{"from": "a/#", "to": "/default/a"}]"#;
        let err = |extra: &str| {
            settings(&format!("{{{base}{extra}}}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#", "ca_file": "/ca.pem""#).contains("`use_tls` is false"));
        assert!(
            err(r#", "use_tls": true, "ca_file": "/nonexistent/ca.pem""#)
                .contains("`ca_file` /nonexistent/ca.pem")
        );
        assert!(err(r#", "use_tls": true, "client_cert_file": "/c.pem""#).contains("go together"));
        assert!(err(r#", "bogus": 1"#).contains("bogus"));
        assert!(err(r#", "password": "p""#).contains("username"));
        let e = settings(r#"{"routes": [{"from": "a", "to": "/default/a"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_id"), "{e}");
        let e =
            settings(r#"{"client_id": "c", "routes": [{"from": "a/#/b", "to": "/default/a"}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("routes[0].from"), "{e}");
        let e = settings(r#"{"client_id": "c", "routes": [{"from": "a", "to": "default"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes[0].to"), "{e}");
        let e =
            settings(r#"{"client_id": "c", "routes": [{"from": "a", "to": "/d/a", "qos": 3}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("qos"), "{e}");
        assert!(
            settings(r#"{"client_id": "c"}"#)
                .unwrap_err()
                .to_string()
                .contains("no routes")
        );
    }

    #[test]
    fn secrets_from_the_environment_may_be_numbers_and_never_echo() {
        let s = settings(
            r#"{"client_id": 42, "username": "u", "password": 1234, "routes": [{"from": "a", "to": "/d/a"}]}"#,
        )
        .unwrap();
        assert_eq!(s.client_id, "42");
        assert_eq!(s.password.as_deref(), Some(&b"1234"[..]));
        let e = settings(r#"{"client_id": "c", "password": ["secret"], "routes": []}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
