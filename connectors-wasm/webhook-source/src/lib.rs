//! `webhook-source`: an ingress connector that publishes each webhook's
//! body to the Danube topic of the endpoint it was sent to, configured as
//! danube-connect's webhook source is (`[[endpoints]]`). The host listens
//! (`[server]`), authenticates (`[auth]`) and limits (`[rate_limit]`); the
//! sender's 200 means Danube stored the event. See README.md.

use std::collections::HashMap;

use danube_connect_sdk::{
    ConnectorError, ConnectorInfo, HttpRequest, Ingress, IngressRoute, IngressSetup,
    ProducerConfig, SourceRecord, info, metrics,
};
use serde::Deserialize;

const CONFIG_EXAMPLE: &str = r#"# The listener is the host's: [server] (host, port, timeout_seconds,
# max_body_size, tls_cert_path, tls_key_path), [auth] and [rate_limit].

[[endpoints]]
# The path senders post to.
path = "/webhooks/payments"
# The topic each request's body is published to.
danube_topic = "/default/payments"
# 0: a plain topic; N > 0: N partitions, chosen by the routing key.
partitions = 0
# The broker stores messages and tracks acknowledgements per subscription.
reliable_dispatch = true
# The routing key: a header's value, or a dotted path into a JSON body.
# key_header = "X-Customer-Id"
# key_field = "customer.id"
# Headers copied into the record's attributes as http.header.<name>.
forward_headers = ["x-event-type"]
# This path's own limit, beside [rate_limit].
# rate_limit = { requests_per_second = 100, burst_size = 200 }
"#;

/// The connector's table: the `[[endpoints]]` (or `[[routes]]`) of the
/// file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[[endpoints]]`: one path each, published to one topic. With
    /// `routes`, at least one in all.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// `[[routes]]`: endpoints as danube-connect's newer files write them
    /// (`from` for `path`, `to` for `danube_topic`).
    #[serde(default)]
    pub routes: Vec<Endpoint>,
}

/// One path and the topic its requests go to.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The path senders post to, starting with `/` (required, or `from`).
    #[serde(default)]
    pub path: String,
    /// `path`, as `[[routes]]` write it.
    #[serde(default)]
    pub from: Option<String>,
    /// The topic each request's body is published to, `/namespace/name`
    /// (required, or `to`).
    #[serde(default)]
    pub danube_topic: String,
    /// `danube_topic`, as `[[routes]]` write it.
    #[serde(default)]
    pub to: Option<String>,
    /// 0: a plain topic (the default); N > 0: N partitions, chosen by the
    /// routing key.
    #[serde(default)]
    pub partitions: u32,
    /// Reliable dispatch: the broker stores messages and tracks
    /// acknowledgements per subscription. Default: false.
    #[serde(default)]
    pub reliable_dispatch: bool,
    /// This path's own rate limit, beside `[rate_limit]`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The routing key is this header's value.
    #[serde(default)]
    pub key_header: Option<String>,
    /// The routing key is the value at this dotted path of a JSON body
    /// (`"customer.id"`); a body without it is refused (400).
    #[serde(default)]
    pub key_field: Option<String>,
    /// Headers copied into the record's attributes as `http.header.<name>`.
    /// Default: none.
    #[serde(default)]
    pub forward_headers: Vec<String>,
}

/// A path's rate limit, with danube-connect's keys.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second the path takes (required).
    pub requests_per_second: u32,
    /// Requests that may come at once above that rate (required).
    pub burst_size: u32,
    /// Per-sender limits are the host's (`[rate_limit]`); must be false
    /// here.
    #[serde(default)]
    pub per_ip_enabled: bool,
    /// Per-sender limits are the host's (`[rate_limit]`); must be unset
    /// here.
    #[serde(default)]
    pub per_ip_requests_per_second: Option<u32>,
}

impl Config {
    /// Both lists as one, `from` and `to` read as `path` and
    /// `danube_topic`, checked.
    fn into_endpoints(self) -> Result<Vec<Endpoint>, ConnectorError> {
        let endpoints = self
            .endpoints
            .into_iter()
            .chain(self.routes)
            .map(|mut e| {
                e.path = either("path", e.path, "from", e.from.take())?;
                e.danube_topic = either("danube_topic", e.danube_topic, "to", e.to.take())?;
                Ok(e)
            })
            .collect::<Result<Vec<_>, ConnectorError>>()?;
        check(&endpoints)?;
        Ok(endpoints)
    }
}

/// The value of a key that has two names: exactly one must be set.
fn either(
    name: &str,
    value: String,
    other: &str,
    other_value: Option<String>,
) -> Result<String, ConnectorError> {
    match (value.is_empty(), other_value) {
        (false, None) => Ok(value),
        (true, Some(v)) if !v.is_empty() => Ok(v),
        (false, Some(_)) => Err(ConnectorError::config(format!(
            "an endpoint sets both `{name}` and `{other}`: keep one"
        ))),
        (true, _) => Err(ConnectorError::config(format!(
            "an endpoint has no `{name}` (or `{other}`)"
        ))),
    }
}

fn check(endpoints: &[Endpoint]) -> Result<(), ConnectorError> {
    if endpoints.is_empty() {
        return Err(ConnectorError::config(
            "`endpoints` (or `routes`) must list at least one path",
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        if !e.path.starts_with('/') {
            return Err(ConnectorError::config(format!(
                "endpoint path `{}` must start with `/`",
                e.path
            )));
        }
        if endpoints[..i].iter().any(|o| o.path == e.path) {
            return Err(ConnectorError::config(format!(
                "endpoint path `{}` is listed twice",
                e.path
            )));
        }
        if e.key_header.is_some() && e.key_field.is_some() {
            return Err(ConnectorError::config(format!(
                "endpoint `{}`: set `key_header` or `key_field`, not both",
                e.path
            )));
        }
        if let Some(limit) = &e.rate_limit {
            if limit.per_ip_enabled || limit.per_ip_requests_per_second.is_some() {
                return Err(ConnectorError::config(format!(
                    "endpoint `{}`: per-sender limits are set in [rate_limit] (per_ip_enabled, per_ip_requests_per_second), not per endpoint",
                    e.path
                )));
            }
            if limit.requests_per_second == 0 {
                return Err(ConnectorError::config(format!(
                    "endpoint `{}`: `rate_limit.requests_per_second` must be at least 1",
                    e.path
                )));
            }
        }
    }
    Ok(())
}

pub struct WebhookSource {
    /// Endpoints by path.
    endpoints: HashMap<String, Endpoint>,
}

impl WebhookSource {
    /// The routing key of `request` to `endpoint`, if it names one.
    fn key(endpoint: &Endpoint, request: &HttpRequest) -> Result<Option<String>, ConnectorError> {
        if let Some(header) = &endpoint.key_header {
            return Ok(request.header(header).map(str::to_string));
        }
        let Some(field) = &endpoint.key_field else {
            return Ok(None);
        };
        let body: serde_json::Value = request.body_json()?;
        let value = field
            .split('.')
            .try_fold(&body, |v, step| v.get(step))
            .ok_or_else(|| {
                ConnectorError::invalid_data(format!("the body has no `{field}` (the routing key)"))
            })?;
        Ok(Some(match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }
}

impl Ingress for WebhookSource {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Takes webhooks on the host's HTTP listener and publishes each request's body to \
             its endpoint's topic, with the method, path, sender and chosen headers as \
             attributes; the sender gets 200 only once Danube stored it.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, IngressSetup), ConnectorError> {
        let endpoints = config.into_endpoints()?;
        let producers = endpoints
            .iter()
            .map(|e| {
                ProducerConfig::new(&e.danube_topic)
                    .with_partitions(e.partitions)
                    .with_reliable(e.reliable_dispatch)
            })
            .collect();
        let routes = endpoints
            .iter()
            .map(|e| {
                let route = IngressRoute::new(&e.path);
                match &e.rate_limit {
                    Some(l) => route.with_rate_limit(l.requests_per_second, l.burst_size),
                    None => route,
                }
            })
            .collect();
        for e in &endpoints {
            info!("endpoint {} publishes to {}", e.path, e.danube_topic);
        }
        let endpoints = endpoints.into_iter().map(|e| (e.path.clone(), e)).collect();
        Ok((
            WebhookSource { endpoints },
            IngressSetup { producers, routes },
        ))
    }

    fn handle(&mut self, request: HttpRequest) -> Result<Vec<SourceRecord>, ConnectorError> {
        let Some(endpoint) = self.endpoints.get(&request.path) else {
            return Err(ConnectorError::invalid_data(format!(
                "no endpoint at {}",
                request.path
            )));
        };
        let key = Self::key(endpoint, &request)?;
        let mut request = request;
        let body = std::mem::take(&mut request.body);
        let mut record = SourceRecord::from_bytes(&endpoint.danube_topic, body)
            .with_attribute("http.method", &request.method)
            .with_attribute("http.path", &request.path)
            .with_attribute("http.remote_address", &request.remote_address);
        if let Some(content_type) = request.header("content-type") {
            record = record.with_attribute("http.content_type", content_type);
        }
        for name in &endpoint.forward_headers {
            if let Some(value) = request.header(name) {
                record = record
                    .with_attribute(format!("http.header.{}", name.to_ascii_lowercase()), value);
            }
        }
        if let Some(key) = key {
            record = record.with_key(key);
        }
        metrics::counter_add(
            "webhook_requests_total",
            1,
            &[("endpoint", endpoint.path.as_str())],
        );
        Ok(vec![record])
    }
}

danube_connect_sdk::export_ingress!(WebhookSource);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn open(json: &str) -> Result<WebhookSource, ConnectorError> {
        let config: Config = parse_config(json)?;
        WebhookSource::open(config).map(|(s, _)| s)
    }

    fn request(path: &str, body: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            remote_address: "10.0.0.1:5000".into(),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let example: toml::Table = CONFIG_EXAMPLE.parse().unwrap();
        let json = serde_json::to_string(&example).unwrap();
        let config: Config = parse_config(&json).unwrap();
        let (_, setup) = WebhookSource::open(config).unwrap();
        assert_eq!(setup.routes[0].path, "/webhooks/payments");
        assert_eq!(setup.producers[0].topic, "/default/payments");
    }

    #[test]
    fn a_request_becomes_a_record_with_its_attributes_and_key() {
        let mut source = open(
            r#"{"endpoints": [{"path": "/a", "danube_topic": "/default/a", "key_field": "customer.id", "forward_headers": ["X-Event"]}]}"#,
        )
        .unwrap();
        let records = source
            .handle(request(
                "/a",
                r#"{"customer": {"id": 42}}"#,
                &[("content-type", "application/json"), ("x-event", "paid")],
            ))
            .unwrap();
        let record = &records[0];
        assert_eq!(record.topic, "/default/a");
        assert_eq!(record.key.as_deref(), Some("42"));
        let attribute = |k: &str| {
            record
                .attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(attribute("http.header.x-event"), Some("paid"));
        assert_eq!(attribute("http.remote_address"), Some("10.0.0.1:5000"));
        assert_eq!(attribute("http.content_type"), Some("application/json"));
        let e = source
            .handle(request("/a", r#"{"other": 1}"#, &[]))
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
        assert!(e.message().contains("customer.id"), "{e}");
    }

    #[test]
    fn routes_are_read_as_endpoints() {
        let source = open(
            r#"{"routes": [{"from": "/w/a", "to": "/default/a", "partitions": 2, "reliable_dispatch": true}], "endpoints": [{"path": "/w/b", "danube_topic": "/default/b"}]}"#,
        )
        .unwrap();
        assert_eq!(source.endpoints["/w/a"].danube_topic, "/default/a");
        assert_eq!(source.endpoints["/w/a"].partitions, 2);
        assert!(source.endpoints.contains_key("/w/b"));
    }

    #[test]
    fn config_errors_name_the_problem() {
        let error = |json: &str| open(json).err().unwrap().message().to_string();
        assert!(error(r#"{"endpoints": []}"#).contains("at least one"));
        assert!(
            error(r#"{"endpoints": [{"path": "a", "danube_topic": "/d/a"}]}"#)
                .contains("start with `/`")
        );
        assert!(
            error(r#"{"endpoints": [{"path": "/a", "danube_topic": "/d/a"}, {"path": "/a", "danube_topic": "/d/b"}]}"#)
                .contains("listed twice")
        );
        assert!(
            error(r#"{"endpoints": [{"path": "/a", "danube_topic": "/d/a", "rate_limit": {"requests_per_second": 1, "burst_size": 1, "per_ip_enabled": true}}]}"#)
                .contains("[rate_limit]")
        );
        assert!(
            error(r#"{"endpoints": [{"path": "/a", "danube_topic": "/d/a", "topic": "x"}]}"#)
                .contains("topic")
        );
    }
}
