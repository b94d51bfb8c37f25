//! The HTTP endpoint: `/metrics`, `/health`, `/ready`, and the management
//! API's routes when it is on.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Observability, Status};

/// A running endpoint. Dropping it stops the server (in the background);
/// [`ServerHandle::stop`] stops it and waits.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish, and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the endpoint on `addr`, with `api`'s routes (the management
/// API) beside the observability ones when given.
pub async fn serve(
    observability: Observability,
    addr: SocketAddr,
    api: Option<Router>,
) -> anyhow::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another process uses it: choose another port ([processing] metrics_port)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot serve metrics and health on {addr}: {e}{hint}")
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot serve metrics and health on {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(observability)
        .merge(api.unwrap_or_default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "the metrics and health endpoint stopped");
        }
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

async fn metrics(State(o): State<Observability>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        o.render_metrics(),
    )
        .into_response()
}

async fn health(State(o): State<Observability>) -> Response {
    let report = o.health();
    let code = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report)).into_response()
}

async fn ready(State(o): State<Observability>) -> Response {
    let ready = o.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::json!({ "ready": ready }))).into_response()
}
