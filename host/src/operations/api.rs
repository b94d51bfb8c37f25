//! The management API: `/connectors` on the host's endpoint, beside
//! `/metrics`, when `--api` is given. `/openapi.json` describes it.
//!
//! Bound to loopback, it needs no token; bound elsewhere, every request
//! needs `Authorization: Bearer <token>` (`--api-token-file`), and the host
//! refuses to start without one.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use super::{Loaded, Member, Operations};
use crate::observability::tap::{Direction, TappedRecord};
use crate::observability::{Counters, Observability};

/// The OpenAPI description of the routes below.
const OPENAPI: &str = include_str!("openapi.json");
/// Largest state store a `PUT /offsets` takes.
const MAX_STATE_BODY: usize = 1 << 20;
/// Records a tap sends a second unless asked otherwise, and at most.
const TAP_RATE: u32 = 10;
const TAP_RATE_MAX: u32 = 1000;

#[derive(Clone)]
struct Api {
    operations: Operations,
    observability: Observability,
    /// SHA-256 of the token every request must bear, when one is needed.
    token: Option<[u8; 32]>,
}

/// The API's routes, for the endpoint's router.
pub fn router(
    operations: Operations,
    observability: Observability,
    token: Option<String>,
) -> Router {
    let api = Api {
        operations,
        observability,
        token: token.map(|t| Sha256::digest(t.trim().as_bytes()).into()),
    };
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/connectors", get(list))
        .route("/connectors/{name}", get(detail))
        .route("/connectors/{name}/pause", post(pause))
        .route("/connectors/{name}/resume", post(resume))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/tap", get(tap))
        .route(
            "/connectors/{name}/offsets",
            get(offsets).put(reset_offsets),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_STATE_BODY))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    if let Some(expected) = api.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        if given != Some(expected) {
            return error(
                StatusCode::UNAUTHORIZED,
                "send the API token: Authorization: Bearer <token> (--api-token-file)",
            );
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn unknown(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no connector named {}",
            crate::guest_text::printable(&name.chars().take(100).collect::<String>())
        ),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A connector in `GET /connectors`.
#[derive(Serialize)]
struct Summary {
    name: String,
    /// `starting`, `running`, `paused` or `failed`.
    state: &'static str,
    paused: bool,
    module: String,
    module_sha256: String,
    #[serde(flatten)]
    loaded: Option<Loaded>,
    health: Json,
    counters: Counters,
}

impl Api {
    fn summary(&self, name: &str, member: &Member) -> Summary {
        let health = self.observability.connector_health(name);
        let paused = member.control.is_paused();
        let state = match &health {
            _ if paused => "paused",
            Some(h) if h.ready => "running",
            Some(h) if h.status == crate::observability::Status::Unhealthy => "failed",
            _ => "starting",
        };
        Summary {
            name: name.to_string(),
            state,
            paused,
            module: member.module.display().to_string(),
            module_sha256: member.module_sha256.clone(),
            loaded: member.loaded.clone(),
            health: serde_json::to_value(&health).unwrap_or(Json::Null),
            counters: self.observability.counters(name),
        }
    }
}

async fn list(State(api): State<Api>) -> Response {
    let connectors: Vec<Summary> = api
        .operations
        .members()
        .iter()
        .map(|(name, member)| api.summary(name, member))
        .collect();
    axum::Json(json!({ "connectors": connectors })).into_response()
}

async fn detail(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let Some(member) = api.operations.member(&name) else {
        return unknown(&name);
    };
    let mut shown = serde_json::to_value(api.summary(&name, &member)).unwrap_or(Json::Null);
    shown["config"] = member.config.clone();
    shown["recent_errors"] =
        serde_json::to_value(api.observability.recent_errors(&name)).unwrap_or(Json::Null);
    axum::Json(shown).into_response()
}

async fn pause(state: State<Api>, name: Path<String>) -> Response {
    set_paused(state, name, true)
}

async fn resume(state: State<Api>, name: Path<String>) -> Response {
    set_paused(state, name, false)
}

fn set_paused(State(api): State<Api>, Path(name): Path<String>, paused: bool) -> Response {
    let Some(member) = api.operations.member(&name) else {
        return unknown(&name);
    };
    if member.loaded.as_ref().is_some_and(|l| l.world == "ingress") {
        return error(
            StatusCode::CONFLICT,
            "an ingress connector cannot be paused: its senders would get errors; stop it instead",
        );
    }
    if let Err(e) = member.control.set_paused(paused) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the pause beside the state store: {e}"),
        );
    }
    tracing::info!(connector = %name, paused, "{} through the management API", if paused { "paused" } else { "resumed" });
    axum::Json(json!({ "name": name, "paused": paused })).into_response()
}

async fn restart(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let Some(member) = api.operations.member(&name) else {
        return unknown(&name);
    };
    tracing::info!(connector = %name, "restart asked through the management API");
    member.control.restart();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "name": name, "restarting": true })),
    )
        .into_response()
}

/// A sink's or an ingress's position is not the host's to move: say why.
fn no_offsets(member: &Member) -> Option<Response> {
    match member.loaded.as_ref().map(|l| l.world.as_str()) {
        Some("source") => None,
        Some("sink") => Some(error(
            StatusCode::CONFLICT,
            "a sink's position is its subscription's cursor in the broker, and Danube has no \
             API to move it; a new subscription name starts at the latest message",
        )),
        Some(_) => Some(error(
            StatusCode::CONFLICT,
            "an ingress connector has no position: it takes what is sent to it",
        )),
        None => Some(error(
            StatusCode::CONFLICT,
            "the connector's module is not loaded yet; try again",
        )),
    }
}

/// `GET /connectors/{name}/offsets`: a source's position, its state store
/// as the state file holds it (text values as strings, others as
/// `{"base64": ...}`).
async fn offsets(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let Some(member) = api.operations.member(&name) else {
        return unknown(&name);
    };
    if let Some(refused) = no_offsets(&member) {
        return refused;
    }
    let file = member.control.state_file();
    let state: Json = match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the state file {} is not JSON: {e}", file.display()),
                );
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", file.display()),
            );
        }
    };
    axum::Json(json!({ "name": name, "state": state })).into_response()
}

/// `PUT /connectors/{name}/offsets`: a paused source restarts from the
/// state store in the body (the form `GET` gives); it stays paused until
/// resumed.
async fn reset_offsets(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(member) = api.operations.member(&name) else {
        return unknown(&name);
    };
    if let Some(refused) = no_offsets(&member) {
        return refused;
    }
    if !member.control.is_paused() {
        return error(
            StatusCode::CONFLICT,
            "pause the connector first (POST /connectors/{name}/pause): its position moves while it runs",
        );
    }
    let text: Json = match serde_json::from_slice(&body) {
        Ok(text) => text,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let state = text.get("state").unwrap_or(&text).to_string();
    let entries = match crate::capability::state::StateStore::parse(state.as_bytes()) {
        Ok(entries) => entries,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "give the state as GET shows it: an object of keys to strings or \
                     {{\"base64\": ...}} ({e})"
                ),
            );
        }
    };
    tracing::info!(connector = %name, keys = entries.len(), "state store reset asked through the management API");
    member.control.reset_state(entries);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "name": name, "restarting": true, "paused": true })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TapQuery {
    /// Records a second at most (the rest are counted, not sent).
    rate: Option<u32>,
}

/// One line of a tap's stream.
#[derive(Serialize)]
struct TapLine<'a> {
    direction: &'static str,
    topic: &'a str,
    key: Option<&'a str>,
    /// The first 16 attributes, each name and value cut to 100 bytes.
    attributes: std::collections::BTreeMap<&'a str, &'a str>,
    /// The first bytes of the payload, as text (invalid UTF-8 replaced).
    payload: String,
    payload_len: usize,
    truncated: bool,
    /// Records not sent since the last line (over the rate, or lost to a
    /// listener that fell behind).
    skipped: u64,
}

fn tap_line(record: &TappedRecord, skipped: u64) -> String {
    let line = TapLine {
        direction: match record.direction {
            Direction::Produced => "produced",
            Direction::Consumed => "consumed",
        },
        topic: &record.topic,
        key: record.key.as_deref(),
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        payload: String::from_utf8_lossy(&record.payload).into_owned(),
        payload_len: record.payload_len,
        truncated: record.payload_len > record.payload.len(),
        skipped,
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /connectors/{name}/tap`: NDJSON, one line per record sampled, as
/// long as the client reads. Records are made for the tap only while
/// someone listens.
async fn tap(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(query): Query<TapQuery>,
) -> Response {
    if api.operations.member(&name).is_none() {
        return unknown(&name);
    }
    let rate = query.rate.unwrap_or(TAP_RATE).clamp(1, TAP_RATE_MAX);
    let gap = Duration::from_secs(1) / rate;
    let listener = api.observability.tap(&name).listen();
    let state = (listener, tokio::time::Instant::now(), 0u64);
    let lines = futures::stream::unfold(
        state,
        move |(mut listener, next_at, mut skipped)| async move {
            loop {
                match listener.recv().await {
                    Ok(record) => {
                        let now = tokio::time::Instant::now();
                        if now < next_at {
                            skipped += 1;
                            continue;
                        }
                        let line = tap_line(&record, skipped);
                        return Some((
                            Ok::<_, std::convert::Infallible>(line),
                            (listener, now + gap, 0),
                        ));
                    }
                    Err(RecvError::Lagged(n)) => skipped += n,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines.boxed()),
    )
        .into_response()
}
