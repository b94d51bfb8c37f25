//! The `[http]` table and the checks `open` runs on it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use danube_connect_sdk::{ConnectorError, SubscriptionType};
use danube_connector_tls::TlsFiles;
use danube_connector_tls::http::check_url;
use serde::Deserialize;
use ureq::http::{HeaderName, HeaderValue};

/// The `[http]` table.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The endpoint records are sent to, `http://` or `https://` (env
    /// `HTTP_URL`); a route may name its own. Grant its address with
    /// `[sandbox] allow`. Required unless every route has a `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// `post` (the default) or `put`.
    #[serde(default)]
    pub method: Method,
    /// How records become requests: `json_array` (the default; one request
    /// per batch, a JSON array of the records), `ndjson` (one request per
    /// batch, one JSON record per line) or `single` (one request per
    /// record, its payload as the body).
    #[serde(default)]
    pub format: Format,
    /// Wrap each record in an object with its Danube metadata: `{"topic",
    /// "offset", "key", "publish_time", "producer", "attributes",
    /// "payload"}`. Needs JSON payloads. Default: false (the payload alone).
    #[serde(default)]
    pub envelope: bool,
    /// `Content-Type` of the requests. Default: `application/json`, or
    /// `application/x-ndjson` for `ndjson`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Headers sent with every request, `{ "X-Api-Key" = "..." }`; values
    /// are never logged. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>` (env `HTTP_BEARER_TOKEN`);
    /// never logged nor put in errors. Default: empty, none sent.
    #[serde(default)]
    pub bearer_token: String,
    /// With `password`, sent as `Authorization: Basic`. Default: empty, none
    /// sent.
    #[serde(default)]
    pub username: String,
    /// The password of `username` (env `HTTP_PASSWORD`); never logged nor
    /// put in errors. Default: empty.
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
    /// the answer, reading the answer. Default: 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes, for `json_array` and `ndjson`: a
    /// batch that encodes to more is sent as several requests. Default:
    /// 1048576 (1 MiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Longest wait, in seconds, a `Retry-After` answer can ask for before
    /// the records are sent again; keep it below `[sandbox]
    /// call_timeout_ms`. Default: 20.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_secs: u64,
    /// `[[http.routes]]`, one per topic (required, at least one).
    pub routes: Vec<Route>,
}

/// One topic sent to one endpoint.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Topic to consume (required), `/namespace/name`; a partitioned topic's
    /// partitions all go to this route. One route per topic.
    pub topic: String,
    /// Subscription name; it keeps its position across restarts. Default:
    /// `http-sink`.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// Subscription type: `exclusive`, `shared` (the default), `failover` or
    /// `key_shared`.
    #[serde(default)]
    pub subscription_type: SubscriptionType,
    /// This route's endpoint, instead of the table's `url`.
    #[serde(default)]
    pub url: Option<String>,
}

/// The HTTP method of every request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    #[serde(alias = "POST")]
    Post,
    #[serde(alias = "PUT")]
    Put,
}

/// How records become request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    JsonArray,
    Ndjson,
    Single,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    30
}

fn default_max_request_bytes() -> usize {
    1 << 20
}

fn default_max_retry_after() -> u64 {
    20
}

fn default_subscription() -> String {
    "http-sink".to_string()
}

/// Headers the connector sets itself, which `headers` may not override.
const OWN_HEADERS: [&str; 4] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

impl Config {
    /// Checks what serde cannot: URLs, headers, credentials, one route per
    /// topic.
    pub fn check(&self) -> Result<(), ConnectorError> {
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
            let (key, url) = match (&route.url, &self.url) {
                (Some(url), _) => (format!("url` of the route for `{}", route.topic), url),
                (None, Some(url)) => ("url".to_string(), url),
                (None, None) => {
                    return Err(ConnectorError::config(format!(
                        "the route for `{}` has no endpoint: set `url` in [http] or in the route",
                        route.topic
                    )));
                }
            };
            check_url(&key, url, &self.tls_files()).map_err(ConnectorError::config)?;
        }
        let authorization = !self.bearer_token.is_empty() || !self.username.is_empty();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConnectorError::config(format!("`headers`: `{name}` is not a header name"))
            })?;
            if OWN_HEADERS.contains(&header.as_str()) {
                return Err(ConnectorError::config(format!(
                    "`headers`: `{name}` is set by the connector{}",
                    if header == "content-type" {
                        "; use `content_type`"
                    } else {
                        ""
                    }
                )));
            }
            if header == "authorization" && authorization {
                return Err(ConnectorError::config(
                    "`headers` has `Authorization` and `bearer_token` or `username` is set too: keep one",
                ));
            }
            // The value is never shown: it may be a key.
            HeaderValue::from_str(value).map_err(|_| {
                ConnectorError::config(format!(
                    "`headers`: the value of `{name}` has characters a header cannot carry"
                ))
            })?;
        }
        if !self.bearer_token.is_empty() && !self.username.is_empty() {
            return Err(ConnectorError::config(
                "`bearer_token` and `username` are both set: use one way to authenticate",
            ));
        }
        if self.username.is_empty() && !self.password.is_empty() {
            return Err(ConnectorError::config(
                "`password` is set without `username`",
            ));
        }
        if let Some(content_type) = &self.content_type {
            HeaderValue::from_str(content_type).map_err(|_| {
                ConnectorError::config(format!(
                    "`content_type` `{content_type}` is not a header value"
                ))
            })?;
        }
        if self.max_request_bytes == 0 {
            return Err(ConnectorError::config(
                "`max_request_bytes` must be at least 1",
            ));
        }
        Ok(())
    }

    /// The TLS keys, for `https://` URLs.
    pub fn tls_files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
            // ureq verifies the host of the URL.
            server_name: None,
        }
    }

    /// The endpoint of `route`: its own `url`, or the table's (checked).
    pub fn endpoint<'a>(&'a self, route: &'a Route) -> &'a str {
        route
            .url
            .as_deref()
            .or(self.url.as_deref())
            .unwrap_or_default()
    }

    /// The `Content-Type` of every request.
    pub fn content_type(&self) -> &str {
        match (&self.content_type, self.format) {
            (Some(content_type), _) => content_type,
            (None, Format::Ndjson) => "application/x-ndjson",
            (None, _) => "application/json",
        }
    }
}

/// `url` as it may be shown: without credentials (`user:pass@`) or query
/// string, which can carry keys.
pub fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    fn check(json: &str) -> String {
        parse_config::<Config>(json)
            .and_then(|c| c.check())
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn config_errors_name_the_problem() {
        let route = r#""routes": [{"topic": "/a/b"}]"#;
        let with = |extra: &str| format!(r#"{{"url": "http://x:1", {extra} {route}}}"#);
        assert!(check(r#"{"url": "http://x:1", "routes": []}"#).contains("at least one"));
        assert!(check(r#"{"routes": [{"topic": "/a/b"}]}"#).contains("has no endpoint"));
        assert!(
            check(r#"{"url": "ftp://x", "routes": [{"topic": "/a/b"}]}"#)
                .contains("`url` must start with http:// or https://")
        );
        assert!(
            check(r#"{"routes": [{"topic": "/a/b", "url": "x"}]}"#)
                .contains("`url` of the route for `/a/b` must start with")
        );
        assert!(check(&with(r#""ca_file": "/ca.pem","#)).contains("`ca_file` is set but `url`"));
        assert!(check(&with(r#""headers": {"bad name": "x"},"#)).contains("not a header name"));
        assert!(
            check(&with(r#""headers": {"Content-Type": "x"},"#)).contains("use `content_type`")
        );
        let e = check(&with(r#""headers": {"X-Key": "se\ncret"},"#));
        assert!(e.contains("`X-Key`") && !e.contains("cret"), "{e}");
        assert!(
            check(&with(
                r#""headers": {"Authorization": "x"}, "bearer_token": "t","#
            ))
            .contains("keep one")
        );
        assert!(check(&with(r#""bearer_token": "t", "username": "u","#)).contains("one way"));
        assert!(check(&with(r#""password": "p","#)).contains("without `username`"));
        assert!(check(&with(r#""format": "xml","#)).contains("xml"));
        assert!(check(&with(r#""max_request_bytes": 0,"#)).contains("at least 1"));
        assert!(
            check(r#"{"url": "http://x:1", "routes": [{"topic": "/a/b"}, {"topic": "/a/b"}]}"#)
                .contains("more than one route")
        );
    }

    #[test]
    fn defaults_and_spellings() {
        let config: Config = parse_config(
            r#"{"url": "http://x:1", "method": "PUT", "routes": [{"topic": "/a/b"}]}"#,
        )
        .unwrap();
        config.check().unwrap();
        assert_eq!(config.method, Method::Put);
        assert_eq!(config.format, Format::JsonArray);
        assert_eq!(config.content_type(), "application/json");
        assert_eq!(config.routes[0].subscription, "http-sink");
        assert_eq!(config.endpoint(&config.routes[0]), "http://x:1");
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            shown("https://user:pw@example.com:8443/in/x?key=secret#f"),
            "https://example.com:8443/in/x"
        );
        assert_eq!(shown("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }
}
