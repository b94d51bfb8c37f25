//! The trait an ingress connector implements, and the request it handles.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{ConnectorError, ConnectorInfo, ProducerConfig, SourceRecord};

/// An ingress connector turns HTTP requests into records. The host owns the
/// listener, authentication, body size and rate limits; the connector sees
/// only requests it accepted, and the sender gets its answer once the
/// broker acknowledged every record the connector made from the request.
///
/// Export the implementing type with [`export_ingress!`](crate::export_ingress).
pub trait Ingress: Sized + 'static {
    /// The connector's configuration table (see [`Source::Config`](crate::Source::Config)).
    type Config: DeserializeOwned + JsonSchema;

    /// Describes the connector for `danube-host inspect`; called without
    /// `open`. Empty fields are filled from the connector crate's
    /// `Cargo.toml`.
    fn describe() -> ConnectorInfo {
        ConnectorInfo::default()
    }

    /// Starts the connector and returns it with the topics it publishes to
    /// and the paths it serves.
    fn open(config: Self::Config) -> Result<(Self, IngressSetup), ConnectorError>;

    /// Turns one request into records. [`ConnectorError::InvalidData`]
    /// answers the sender 400 with its message, `Retryable` 503, `Fatal`
    /// 500 (and stops the connector).
    fn handle(&mut self, request: HttpRequest) -> Result<Vec<SourceRecord>, ConnectorError>;

    /// Whether the connector can serve. `Ok` by default.
    fn health(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Stops the connector; no call follows. Does nothing by default.
    fn close(&mut self) {}
}

/// What an ingress connector serves and publishes to.
#[derive(Debug, Clone, Default)]
pub struct IngressSetup {
    pub producers: Vec<ProducerConfig>,
    pub routes: Vec<IngressRoute>,
}

/// A path the connector serves.
#[derive(Debug, Clone)]
pub struct IngressRoute {
    pub path: String,
    /// Requests per second this path takes, beside the host's own limits.
    pub requests_per_second: Option<u32>,
    /// How many requests may come at once above that rate.
    pub burst: Option<u32>,
}

impl IngressRoute {
    pub fn new(path: impl Into<String>) -> Self {
        IngressRoute {
            path: path.into(),
            requests_per_second: None,
            burst: None,
        }
    }

    /// Limits this path to `requests_per_second`, with `burst` requests at
    /// once above it.
    pub fn with_rate_limit(mut self, requests_per_second: u32, burst: u32) -> Self {
        self.requests_per_second = Some(requests_per_second);
        self.burst = Some(burst);
        self
    }
}

/// One HTTP request the host accepted.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string, without the `?`.
    pub query: String,
    /// Header names in lower case, in the order they came.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The sender's address, `ip:port`.
    pub remote_address: String,
}

impl HttpRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON into `T`; a body that does not parse is
    /// invalid data (the sender gets 400 with the reason).
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ConnectorError::invalid_data(format!("the body is not valid JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_in_any_case_and_bodies_parsed() {
        let request = HttpRequest {
            headers: vec![("x-event".into(), "paid".into())],
            body: br#"{"id": 1}"#.to_vec(),
            ..HttpRequest::default()
        };
        assert_eq!(request.header("X-Event"), Some("paid"));
        assert_eq!(request.header("x-other"), None);
        let value: serde_json::Value = request.body_json().unwrap();
        assert_eq!(value["id"], 1);
        let bad = HttpRequest {
            body: b"{".to_vec(),
            ..HttpRequest::default()
        };
        let e = bad.body_json::<serde_json::Value>().unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
    }
}
