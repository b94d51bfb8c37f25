//! An HTTP endpoint for http-sink's tests: a real axum server on a loopback
//! port (HTTPS through rustls when given a certificate), on a thread of its
//! own so that plain and async tests can use it alike. It keeps every
//! request it gets and answers as the test says.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::server::free_port;

/// One request the endpoint got, and the status it answered.
pub struct Request {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Request {
    /// The value of header `name`, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The JSON values of the body: the elements of a JSON array, the lines
    /// of NDJSON, or the one value of a single record.
    pub fn json_values(&self) -> Vec<Value> {
        if self.header("content-type") == "application/x-ndjson" {
            return self
                .body
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_json::from_slice(line).expect("an NDJSON line"))
                .collect();
        }
        match serde_json::from_slice(&self.body).expect("a JSON body") {
            Value::Array(values) => values,
            value => vec![value],
        }
    }
}

/// What the endpoint answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer::status(200, "")
    }

    pub fn status(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// Decides the answer to a request, given how many came before it.
type Answerer = dyn Fn(&Request, usize) -> Answer + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Request>>,
    answer: Box<Answerer>,
}

/// A running endpoint; dropping it closes it at once, connections included.
pub struct Endpoint {
    pub port: u16,
    https: bool,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// An HTTP endpoint on a free port.
    pub fn start(answer: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) -> Endpoint {
        Endpoint::start_on(free_port(), None, answer)
    }

    /// An endpoint on `port`; with `certs`, HTTPS with `server.pem` and
    /// `server.key` from that directory (`tls::make_server_certificate`).
    pub fn start_on(
        port: u16,
        certs: Option<&Path>,
        answer: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static,
    ) -> Endpoint {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        });
        let acceptor = certs.map(tls_acceptor);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let tcp = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async move {
                    match acceptor {
                        None => axum::serve(tcp, app).await,
                        Some(acceptor) => axum::serve(TlsListener { tcp, acceptor }, app).await,
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every open connection.
        });
        Endpoint {
            port,
            https: certs.is_some(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The URL of `path` on this endpoint.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> MutexGuard<'_, Vec<Request>> {
        self.shared.requests.lock().unwrap()
    }

    /// The JSON values of every request answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(Request::json_values)
            .collect()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = Request {
        at: Instant::now(),
        method,
        path: uri.path().to_string(),
        headers,
        body,
        status: 0,
    };
    let mut requests = shared.requests.lock().unwrap();
    let answer = (shared.answer)(&request, requests.len());
    request.status = answer.status;
    requests.push(request);
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut response = (status, answer.body).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn tls_acceptor(certs: &Path) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// TLS over accepted connections; a client whose handshake fails (one
/// that does not trust the certificate) is dropped and the next accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}
