//! The ingress pipeline: the host's HTTP listener (`[server]`) takes
//! requests for the paths an ingress connector serves, the guest turns each
//! into records, and the sender is answered only once Danube acknowledged
//! every one of them. So a 2xx means stored; anything else means the sender
//! should try again (503, with `Retry-After`) or fix its request (4xx).
//!
//! The listener belongs to the host, not the guest: the worker may not
//! `listen()` (its seccomp filter refuses it), and body limits, timeouts and
//! TLS are enforced before a guest sees a byte. The listener outlives
//! workers: requests that come while a worker restarts wait in a bounded
//! queue (or are answered 503 when it is full).

mod auth;
mod limits;
mod listener;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot, watch};

use auth::Authenticator;
use limits::Limits;
use listener::{Front, listen};

use super::danube::Danube;
use super::publisher::{Published, Publisher, Sent};
use super::retry::RetryPolicy;
use super::worker::Guest;
use super::{Stop, new_trace_id, outcome_error};
use crate::config::ConnectorConfig;
use crate::contract::{Call, CallOutcome, ConnectorError, HttpRequest, IngressSetup};

/// Requests waiting for the guest beyond this are answered 503 at once.
const QUEUE: usize = 1024;

/// What a sender is told to wait before trying again after a 503.
const RETRY_AFTER_SECS: u32 = 5;

/// How a request ended, as the sender is told.
#[derive(Debug)]
enum Answer {
    /// 200: every record made from it is stored.
    Stored(usize),
    /// 400: the connector (or a topic's schema) refused it.
    Refused(String),
    /// 503: not stored; try again.
    Unavailable(String),
    /// 500: the connector failed for good.
    Failed(String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Stored(records) => {
                axum::Json(serde_json::json!({ "status": "stored", "records": records }))
                    .into_response()
            }
            Answer::Refused(why) => refusal(StatusCode::BAD_REQUEST, &why),
            Answer::Unavailable(why) => retry_after(
                refusal(StatusCode::SERVICE_UNAVAILABLE, &why),
                RETRY_AFTER_SECS.into(),
            ),
            Answer::Failed(why) => refusal(StatusCode::INTERNAL_SERVER_ERROR, &why),
        }
    }
}

/// A request answered `status`, with `why` as `{"error": why}`.
fn refusal(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// `response`, telling the sender to try again in `seconds`.
fn retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A request on its way to the guest, and where its answer goes.
struct Pending {
    request: HttpRequest,
    reply: oneshot::Sender<Answer>,
}

/// A request whose records are being published.
struct Waiting {
    /// Records not yet acknowledged.
    remaining: usize,
    records: usize,
    reply: oneshot::Sender<Answer>,
}

/// The Danube side of an ingress connector and its listener, which outlive
/// its workers.
pub struct IngressPipeline<'a, D: Danube> {
    config: &'a ConnectorConfig,
    policy: RetryPolicy,
    publisher: Publisher<D>,
    requests: mpsc::Receiver<Pending>,
    listener: tokio::task::JoinHandle<()>,
    /// The request of each record in flight, by record id.
    request_of: HashMap<u64, u64>,
    waiting: HashMap<u64, Waiting>,
    next_request: u64,
    /// Records acknowledged by the broker so far.
    acked: u64,
    /// A publish failed since the last acknowledgement.
    failing: bool,
}

impl<'a, D: Danube> IngressPipeline<'a, D> {
    /// Creates the producers of the connector's topics and starts the
    /// listener for its paths.
    pub async fn start(
        danube: &D,
        config: &'a ConnectorConfig,
        policy: RetryPolicy,
        setup: IngressSetup,
    ) -> Result<IngressPipeline<'a, D>, Stop> {
        let server = config.host.server.clone().unwrap_or_default();
        let paths: HashSet<String> = setup.routes.iter().map(|r| r.path.clone()).collect();
        if paths.is_empty() {
            return Err(Stop::Fatal(
                "the connector serves no path: its `open` returned no route".into(),
            ));
        }
        let publisher = Publisher::start(danube, config, &policy, &setup.producers).await?;
        let (queue, requests) = mpsc::channel(QUEUE);
        let front = Arc::new(Front {
            paths,
            max_body: server.max_body_size,
            timeout: Duration::from_secs(server.timeout_seconds),
            auth: Authenticator::new(config.host.auth.as_ref(), &|k| std::env::var(k).ok())
                .map_err(Stop::Config)?,
            limits: Limits::new(config.host.rate_limit.as_ref(), &setup.routes)
                .map_err(Stop::Config)?,
            queue,
        });
        let listener = listen(&server, front).await?;
        Ok(IngressPipeline {
            config,
            policy,
            publisher,
            requests,
            listener,
            request_of: HashMap::new(),
            waiting: HashMap::new(),
            next_request: 0,
            acked: 0,
            failing: false,
        })
    }

    /// Serves requests until `shutdown` turns true (then takes no more,
    /// answers those already taken once their records are stored) or
    /// something stops the pipeline.
    pub async fn run(
        &mut self,
        worker: &impl Guest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let mut stopping = *shutdown.borrow();
        if stopping {
            self.requests.close();
        }
        loop {
            if stopping && self.requests.is_empty() && self.waiting.is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    // Queued requests are still served; new ones are answered 503.
                    self.requests.close();
                    tracing::info!(waiting = self.waiting.len(), "draining: no more requests, answering those taken");
                }
                Some(pending) = self.requests.recv() => self.take(worker, pending).await?,
                Some(done) = self.publisher.next() => {
                    self.on_published(done);
                    while let Some(done) = self.publisher.try_next() {
                        self.on_published(done);
                    }
                }
            }
        }
    }

    /// Hands one request to the guest and its records to the publisher.
    async fn take(&mut self, worker: &impl Guest, pending: Pending) -> Result<(), Stop> {
        let Pending { request, reply } = pending;
        let max = self.config.host.processing.batch_size;
        let trace_id = new_trace_id();
        let outcome = match worker.call(trace_id, Call::Handle { request, max }).await {
            Ok(outcome) => outcome,
            Err(gone) => {
                let _ = reply.send(Answer::Unavailable(
                    "the connector restarted while handling the request".into(),
                ));
                return Err(Stop::WorkerGone(gone.to_string()));
            }
        };
        let records = match outcome {
            CallOutcome::Handled(records) => records,
            CallOutcome::Error(ConnectorError::InvalidData(why)) => {
                let _ = reply.send(Answer::Refused(why));
                return Ok(());
            }
            CallOutcome::Error(ConnectorError::Retryable(why)) => {
                let _ = reply.send(Answer::Unavailable(why));
                return Ok(());
            }
            other => {
                let _ = reply.send(Answer::Failed("the connector failed".into()));
                return Err(outcome_error("handle", other));
            }
        };
        self.policy.metrics.batch_size(records.len());
        if records.is_empty() {
            let _ = reply.send(Answer::Stored(0));
            return Ok(());
        }
        let request = self.next_request;
        self.next_request += 1;
        let count = records.len();
        for record in records {
            match self.publisher.send(record)? {
                (id, Sent::Published) => {
                    self.request_of.insert(id, request);
                }
                (_, Sent::Refused { record, why }) => {
                    // Records of it already sent are published all the same;
                    // the sender is told what to fix, and sends it again.
                    let _ = reply.send(Answer::Refused(format!(
                        "a record for {} does not fit the topic's schema: {why}",
                        record.topic
                    )));
                    return Ok(());
                }
            }
        }
        self.waiting.insert(
            request,
            Waiting {
                remaining: count,
                records: count,
                reply,
            },
        );
        self.policy.metrics.set_in_flight(self.request_of.len());
        Ok(())
    }

    fn on_published(&mut self, done: Published) {
        let request = self.request_of.remove(&done.id);
        self.policy.metrics.set_in_flight(self.request_of.len());
        match done.result {
            Ok(()) => {
                self.acked += 1;
                self.publisher.count(&done);
                if std::mem::take(&mut self.failing) {
                    self.policy.note_recovered();
                }
                let Some(request) = request else { return };
                if let Some(waiting) = self.waiting.get_mut(&request) {
                    waiting.remaining -= 1;
                    if waiting.remaining == 0
                        && let Some(waiting) = self.waiting.remove(&request)
                    {
                        let _ = waiting.reply.send(Answer::Stored(waiting.records));
                    }
                }
            }
            Err(e) => {
                self.failing = true;
                tracing::warn!(topic = %done.topic, error = %e, "a request's record was not stored; its sender is answered 503");
                if let Some(waiting) = request.and_then(|r| self.waiting.remove(&r)) {
                    let _ = waiting.reply.send(Answer::Unavailable(format!(
                        "Danube did not store the records: {}",
                        e.message
                    )));
                }
            }
        }
    }

    /// Records acknowledged so far: a worker whose records were acked made
    /// progress.
    pub fn progress(&self) -> u64 {
        self.acked
    }

    /// Closes the listener and waits until its socket is closed, so that
    /// the next version of the connector (a hot swap) can listen on the
    /// same port.
    pub async fn finish(self) {
        self.listener.abort();
        let _ = self.listener.await;
    }
}

/// What `validate` and every start check of the listener's tables before
/// the connector opens: the TLS files load, the secret is in the
/// environment, the algorithm and keys are known.
pub fn check(config: &ConnectorConfig) -> Result<(), String> {
    if let Some(server) = &config.host.server {
        listener::tls(server)?;
    }
    Authenticator::new(config.host.auth.as_ref(), &|k| std::env::var(k).ok())?;
    Limits::new(config.host.rate_limit.as_ref(), &[])?;
    Ok(())
}
