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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as TlsServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::danube::Danube;
use super::publisher::{Published, Publisher, Sent};
use super::retry::RetryPolicy;
use super::worker::Guest;
use super::{Stop, new_trace_id, outcome_error};
use crate::config::{ConnectorConfig, ServerConfig};
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
        let (status, body) = match self {
            Answer::Stored(records) => (
                StatusCode::OK,
                serde_json::json!({ "status": "stored", "records": records }),
            ),
            Answer::Refused(why) => (StatusCode::BAD_REQUEST, error_body(&why)),
            Answer::Unavailable(why) => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(error_body(&why)),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                return response;
            }
            Answer::Failed(why) => (StatusCode::INTERNAL_SERVER_ERROR, error_body(&why)),
        };
        (status, axum::Json(body)).into_response()
    }
}

fn error_body(why: &str) -> serde_json::Value {
    serde_json::json!({ "error": why })
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
    next_id: u64,
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
            next_id: 0,
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
            let id = self.next_id;
            self.next_id += 1;
            match self.publisher.send(id, record)? {
                Sent::Published => {
                    self.request_of.insert(id, request);
                }
                Sent::Refused { record, why } => {
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

    /// Closes the listener.
    pub fn finish(self) {
        self.listener.abort();
    }
}

/// What the listener's handler needs.
struct Front {
    paths: HashSet<String>,
    max_body: usize,
    timeout: Duration,
    queue: mpsc::Sender<Pending>,
}

/// Binds `[server]`'s address and serves `front` on it, over TLS when a
/// certificate is configured.
async fn listen(
    server: &ServerConfig,
    front: Arc<Front>,
) -> Result<tokio::task::JoinHandle<()>, Stop> {
    let addr = SocketAddr::new(server.host, server.port);
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Stop::Config(format!(
            "[server]: cannot listen on {addr}: {e}; set `host` and `port` to a free address"
        ))
    })?;
    let local = tcp.local_addr().map_err(|e| Stop::Fatal(e.to_string()))?;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(front)
        .into_make_service_with_connect_info::<Peer>();
    let tls = match (&server.tls_cert_path, &server.tls_key_path) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).map_err(Stop::Config)?),
        _ => {
            return Err(Stop::Config(
                "[server]: `tls_cert_path` and `tls_key_path` go together: set both or neither"
                    .into(),
            ));
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, scheme, "ingress listening");
    Ok(tokio::spawn(async move {
        let served = match tls {
            None => axum::serve(tcp, app).await,
            Some(acceptor) => axum::serve(TlsListener { tcp, acceptor }, app).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "the ingress listener stopped");
        }
    }))
}

/// One request: checked, queued for the guest, answered when its records
/// are stored (or not within `timeout_seconds`).
async fn handle(
    State(front): State<Arc<Front>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !front.paths.contains(uri.path()) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(error_body("no endpoint at this path")),
        )
            .into_response();
    }
    if method != Method::POST && method != Method::PUT {
        let mut response = (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(error_body("use POST or PUT")),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return response;
    }
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(error_body(&format!(
                "the body is larger than {} bytes",
                front.max_body
            ))),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > front.max_body) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, front.max_body).await else {
        return too_large();
    };
    let request = HttpRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        remote_address: remote.to_string(),
    };
    let (reply, answer) = oneshot::channel();
    if front.queue.try_send(Pending { request, reply }).is_err() {
        return Answer::Unavailable("the connector is busy or stopping".into()).into_response();
    }
    match tokio::time::timeout(front.timeout, answer).await {
        Ok(Ok(answer)) => answer.into_response(),
        Ok(Err(_)) => {
            Answer::Unavailable("the connector stopped before storing the request".into())
                .into_response()
        }
        Err(_) => Answer::Unavailable(format!(
            "not stored within {} s ([server] timeout_seconds)",
            front.timeout.as_secs()
        ))
        .into_response(),
    }
}

/// The acceptor for `[server]`'s certificate and key.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("[server] tls_cert_path {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "[server] tls_cert_path {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("[server] tls_key_path {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = TlsServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[server] TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("[server] tls_cert_path and tls_key_path: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The sender's address, over TCP or TLS alike.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// TLS over accepted connections; a client whose handshake fails is
/// dropped and the next one accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "ingress: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A slow handshake holds up only its own connection's accept
            // for this long.
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "ingress: TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %addr, "ingress: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
