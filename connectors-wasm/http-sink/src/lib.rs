//! `http-sink`: a sink connector that sends the records it consumes to an
//! HTTP endpoint, batched as a JSON array or NDJSON, or one request per
//! record. See README.md.

mod body;
mod client;
mod config;

use std::collections::HashMap;
use std::time::Instant;

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord, debug, info,
    metrics, warn,
};

use body::{Element, Encoding};
use client::{Answer, Client};
use config::{Config, Format, shown};

const CONFIG_EXAMPLE: &str = r#"[http]
# Where records go, http:// or https:// (env HTTP_URL); a route may name its
# own. Grant the address with [sandbox] allow.
url = "http://127.0.0.1:8080/ingest"
# post | put
method = "post"
# json_array: one request per batch, a JSON array of the records;
# ndjson: one request per batch, one record per line;
# single: one request per record, the payload as the body (any bytes).
format = "json_array"
# Wrap each record with its Danube metadata: {"topic", "offset", "key",
# "publish_time", "producer", "attributes", "payload"}; needs JSON payloads.
envelope = false
# Default: application/json (application/x-ndjson for ndjson).
# content_type = "application/json"
# Sent with every request; values are never logged.
headers = { "X-Source" = "danube" }
# Authorization: Bearer (env HTTP_BEARER_TOKEN), or Basic with username and
# password (env HTTP_PASSWORD). Never logged.
bearer_token = ""
# username = "danube"
# password = ""
# For https://: a PEM CA bundle trusted instead of the built-in Mozilla roots,
# in a directory granted with [sandbox] dirs; and a client certificate, if
# the server asks for one.
# ca_file = "/etc/danube/http/ca.pem"
# client_cert_file = "/etc/danube/http/client.pem"
# client_key_file = "/etc/danube/http/client.key"
connect_timeout_secs = 10
# Bound on each step of a request: sending it, waiting for and reading the answer.
request_timeout_secs = 30
# A batch larger than this is sent as several requests.
max_request_bytes = 1048576
# Longest Retry-After honoured before the records are sent again.
max_retry_after_secs = 20

[[http.routes]]
topic = "/default/events"
subscription = "http-sink"
# exclusive | shared | failover | key_shared
subscription_type = "shared"
# This route's own endpoint, instead of [http] url.
# url = "http://127.0.0.1:8080/events"
"#;

pub struct HttpSink {
    client: Client,
    encoding: Encoding,
    max_request_bytes: usize,
    /// Each route's endpoint, in route order.
    endpoints: Vec<String>,
    /// Topic to index in `endpoints`.
    by_topic: HashMap<String, usize>,
    /// An endpoint's `Retry-After`: no request before this.
    not_before: Option<Instant>,
    /// Why the last request did not get through, for `health`; cleared by
    /// the next one that does.
    last_failure: Option<String>,
}

/// The headers a `single` request carries about its record. The key goes
/// only when a header can carry it.
fn record_headers(record: &SinkRecord) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("X-Danube-Topic", record.topic().to_string()),
        ("X-Danube-Offset", record.offset().to_string()),
        ("X-Danube-Publish-Time", record.publish_time().to_string()),
        // Retries of a record carry the same key, so an endpoint that
        // deduplicates on it writes the record once.
        (
            "Idempotency-Key",
            format!("{}/{}", record.topic(), record.offset()),
        ),
    ];
    if let Some(key) = record
        .key()
        .filter(|k| ureq::http::HeaderValue::from_str(k).is_ok())
    {
        headers.push(("X-Danube-Key", key.to_string()));
    }
    headers
}

impl HttpSink {
    /// Sends `elements` (records of `records`) to `url` in one request. A
    /// refused request of several records is halved until the refused
    /// records are found alone: they fail as invalid data, the others are
    /// written. Returns why the endpoint asked to try again, if it did; the
    /// records not written then fail as retryable.
    fn send(
        &mut self,
        url: &str,
        elements: &[Element],
        records: &[SinkRecord],
        outcome: &mut BatchOutcome,
    ) -> Result<Option<String>, ConnectorError> {
        let extra = match self.encoding.format {
            Format::Single => record_headers(&records[elements[0].record]),
            _ => Vec::new(),
        };
        let answer = self
            .client
            .send(url, &self.encoding.body(elements), &extra)?;
        let class = match &answer {
            Answer::Written => "written",
            Answer::Refused(_) => "refused",
            Answer::Retry { .. } => "retry",
        };
        metrics::counter_add("http_sink_requests_total", 1, &[("answer", class)]);
        match answer {
            Answer::Written => {
                self.last_failure = None;
                metrics::counter_add(
                    "http_sink_records_written_total",
                    elements.len() as u64,
                    &[],
                );
                Ok(None)
            }
            Answer::Refused(why) if elements.len() == 1 => {
                self.last_failure = None;
                outcome.fail(elements[0].record, ConnectorError::invalid_data(why));
                Ok(None)
            }
            Answer::Refused(why) => {
                debug!(
                    "the endpoint refused {} records, halving: {why}",
                    elements.len()
                );
                let (left, right) = elements.split_at(elements.len() / 2);
                match self.send(url, left, records, outcome)? {
                    Some(retry) => {
                        fail_retryable(right, &retry, outcome);
                        Ok(Some(retry))
                    }
                    None => self.send(url, right, records, outcome),
                }
            }
            Answer::Retry { why, after } => {
                if let Some(after) = after {
                    self.not_before = Some(Instant::now() + after);
                }
                self.last_failure = Some(why.clone());
                fail_retryable(elements, &why, outcome);
                Ok(Some(why))
            }
        }
    }

    /// Waits out the last `Retry-After`, if it has not passed.
    fn wait_retry_after(&mut self) {
        if let Some(at) = self.not_before.take() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
    }
}

/// Marks the records of `elements` retryable: the host sends them again.
fn fail_retryable(elements: &[Element], why: &str, outcome: &mut BatchOutcome) {
    for element in elements {
        outcome.fail(element.record, ConnectorError::retryable(why));
    }
}

impl Sink for HttpSink {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Sends records to an HTTP endpoint: a batch as one JSON array or NDJSON request, or \
             one request per record; 2xx is written, 408/429/5xx are retried (honouring \
             Retry-After), other 4xx send the record to the dead-letter topic.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        config.check()?;
        let client = Client::new(&config)?;
        let consumers = config
            .routes
            .iter()
            .map(|r| {
                ConsumerConfig::new(&r.topic, &r.subscription)
                    .with_subscription_type(r.subscription_type)
            })
            .collect();
        let endpoints: Vec<String> = config
            .routes
            .iter()
            .map(|r| config.endpoint(r).to_string())
            .collect();
        let by_topic = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.topic.clone(), i))
            .collect();
        let mut shown_endpoints: Vec<String> = endpoints.iter().map(|u| shown(u)).collect();
        shown_endpoints.dedup();
        info!("sending records to {}", shown_endpoints.join(", "));
        Ok((
            HttpSink {
                client,
                encoding: Encoding {
                    format: config.format,
                    envelope: config.envelope,
                },
                max_request_bytes: config.max_request_bytes,
                endpoints,
                by_topic,
                not_before: None,
                last_failure: None,
            },
            consumers,
        ))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        self.wait_retry_after();
        let mut outcome = BatchOutcome::new();
        let mut elements: Vec<Vec<Element>> = self.endpoints.iter().map(|_| Vec::new()).collect();
        for (index, record) in records.iter().enumerate() {
            let Some(&route) = self.by_topic.get(record.base_topic()) else {
                outcome.fail(
                    index,
                    ConnectorError::invalid_data(format!(
                        "no route for topic `{}`",
                        record.topic()
                    )),
                );
                continue;
            };
            match self.encoding.element(index, record) {
                Ok(element) => elements[route].push(element),
                Err(e) => outcome.fail(index, e),
            }
        }
        // Once the endpoint asks to try again, the rest of the batch waits
        // for the retry rather than being sent into the same refusal.
        let mut retrying: Option<String> = None;
        for (route, elements) in elements.iter().enumerate() {
            let url = self.endpoints[route].clone();
            for run in self.encoding.requests(elements, self.max_request_bytes) {
                let elements = &elements[run];
                match &retrying {
                    Some(why) => fail_retryable(elements, why, &mut outcome),
                    None => retrying = self.send(&url, elements, &records, &mut outcome)?,
                }
            }
        }
        if let Some(why) = &retrying {
            warn!("{why}");
        }
        debug!(
            "sent {} of {} records",
            records.len() - outcome.failures().len(),
            records.len()
        );
        Ok(outcome)
    }

    fn health(&mut self) -> Result<(), String> {
        match &self.last_failure {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

danube_connect_sdk::export_sink!(HttpSink);

#[cfg(test)]
mod tests {
    use super::*;
    use danube_connect_sdk::parse_config;

    #[test]
    fn the_example_config_is_valid() {
        let example: toml::Table = CONFIG_EXAMPLE.parse().unwrap();
        let json = serde_json::to_string(&example["http"]).unwrap();
        let config: Config = parse_config(&json).unwrap();
        config.check().unwrap();
        assert!(Client::new(&config).is_ok());
    }

    #[test]
    fn single_requests_name_their_record() {
        let record = SinkRecord::new("/default/a-part-2", b"x".to_vec())
            .with_offset(41)
            .with_key("dev\n1");
        let headers = record_headers(&record);
        assert!(headers.contains(&("Idempotency-Key", "/default/a-part-2/41".to_string())));
        assert!(headers.contains(&("X-Danube-Offset", "41".to_string())));
        // A key a header cannot carry is left out rather than refused.
        assert!(headers.iter().all(|(name, _)| *name != "X-Danube-Key"));
        let keyed = record_headers(&SinkRecord::new("/default/a", vec![]).with_key("dev-1"));
        assert!(keyed.contains(&("X-Danube-Key", "dev-1".to_string())));
    }
}
