//! The listener: `[server]`'s address (TLS when configured), the checks a
//! request passes before any guest sees it (path, method, rate limits,
//! body size, authentication), and its wait for the pipeline's answer.

use std::collections::HashSet;
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
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as TlsServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::auth::Authenticator;
use super::limits::Limits;
use super::{Answer, Pending, refusal, retry_after};
use crate::config::ServerConfig;
use crate::contract::HttpRequest;
use crate::supervisor::Stop;

/// What the listener's handler needs.
pub(super) struct Front {
    pub paths: HashSet<String>,
    pub max_body: usize,
    pub timeout: Duration,
    pub auth: Authenticator,
    pub limits: Limits,
    pub queue: mpsc::Sender<Pending>,
}

/// Binds `[server]`'s address and serves `front` on it, over TLS when a
/// certificate is configured.
pub(super) async fn listen(
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
    let tls = tls(server).map_err(Stop::Config)?;
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
        return refusal(StatusCode::NOT_FOUND, "no endpoint at this path");
    }
    if method != Method::POST && method != Method::PUT {
        let mut response = refusal(StatusCode::METHOD_NOT_ALLOWED, "use POST or PUT");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return response;
    }
    if let Err(wait) = front.limits.check(uri.path(), remote.ip()) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        return retry_after(
            refusal(StatusCode::TOO_MANY_REQUESTS, "over the rate limit"),
            seconds,
        );
    }
    if let Err(why) = front.auth.check_headers(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, &why);
    }
    let too_large = || {
        let why = format!("the body is larger than {} bytes", front.max_body);
        refusal(StatusCode::PAYLOAD_TOO_LARGE, &why)
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seen = match front.auth.check_body(&headers, &body, now) {
        Ok(seen) => seen,
        Err(why) => return refusal(StatusCode::UNAUTHORIZED, &why),
    };
    let credential = front.auth.credential_header();
    let request = HttpRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .filter(|(k, _)| credential.as_ref() != Some(*k))
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
        Ok(Ok(answer)) => {
            // A signature is spent once its request is stored; one that
            // was not may be sent again.
            if let (Answer::Stored(_), Some(seen)) = (&answer, seen) {
                seen.keep();
            }
            answer.into_response()
        }
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

/// The acceptor for `[server]`'s certificate and key, if it has them; the
/// error names the key to fix.
pub(super) fn tls(server: &ServerConfig) -> Result<Option<TlsAcceptor>, String> {
    match (&server.tls_cert_path, &server.tls_key_path) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => tls_acceptor(cert, key).map(Some),
        _ => Err(
            "[server]: `tls_cert_path` and `tls_key_path` go together: set both or neither".into(),
        ),
    }
}

/// The acceptor for a certificate and key.
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
