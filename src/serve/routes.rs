//! The HTTP routes: the page, `POST /generate` (JSON), `POST /generate/stream`
//! (server-sent events), `GET /health`, `GET /metrics`.

use super::error::ApiError;
use super::events::event_stream;
use super::metrics::{bump, Metrics};
use super::queue::{Job, Queue, Status};
use super::request;
use super::ServeOptions;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The demo page: one self-contained file, no external assets.
const PAGE: &str = include_str!("page.html");

pub struct AppState {
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    pub options: ServeOptions,
    pub image_vocab: i64,
    pub image_length: usize,
    pub devices: usize,
    pub model: String,
    /// Images are ordered by CLIP score.
    pub clip: bool,
    pub started: Instant,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.options.body_limit;
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/generate", post(generate))
        .route("/generate/stream", post(generate_stream))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; the API is POST /generate, POST /generate/stream, GET /health, GET /metrics".into())
}

async fn health(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "model": app.model,
        "devices": app.devices,
        "clip": app.clip,
        "image_tokens": app.image_length,
        "default_images": app.options.default_images,
        "max_images": app.options.max_images,
        "queue_length": app.queue.len(),
        "queue_capacity": app.queue.capacity(),
    }))
}

/// Prometheus text by default; `?format=json` for JSON.
async fn metrics(State(app): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let snapshot = app.metrics.snapshot(app.queue.len(), app.queue.capacity(), app.started);
    match query.as_deref() {
        Some("format=json") => Json(snapshot).into_response(),
        None | Some("") | Some("format=prometheus") => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], snapshot.prometheus()).into_response()
        }
        Some(other) => ApiError::bad_request(format!("unknown query '{other}'; use format=json or format=prometheus")).into_response(),
    }
}

/// Checks the body and queues the job; the receiver is the client's end of its status.
fn admit(app: &AppState, body: Result<Bytes, BytesRejection>, previews: bool) -> Result<watch::Receiver<Status>, ApiError> {
    bump(&app.metrics.requests);
    let refused = |e: ApiError| {
        bump(&app.metrics.rejected_invalid);
        e
    };
    let body = body.map_err(|r| {
        refused(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than the limit of {} bytes", app.options.body_limit))
        } else {
            ApiError::new(r.status(), format!("reading the body: {}", r.body_text()))
        })
    })?;
    let spec = request::parse(&body, &app.options, app.image_vocab).map_err(refused)?;
    let (status, receiver) = watch::channel(Status::Queued { position: 0 });
    let job = Arc::new(Job { id: app.next_id.fetch_add(1, Ordering::Relaxed), spec, previews, enqueued: Instant::now(), status });
    app.queue.push(job, app.metrics.typical_latency_secs()).inspect_err(|_| bump(&app.metrics.rejected_full))?;
    Ok(receiver)
}

/// dalle-mini's backend protocol: `{"prompt": ...}` in, `{"images": [base64 PNG...]}` out (plus our fields).
/// If the client disconnects, this future is dropped with its receiver, which cancels the job.
async fn generate(State(app): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let mut status = match admit(&app, body, false) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    loop {
        match &*status.borrow_and_update() {
            Status::Done(r) => return Json(r.as_ref()).into_response(),
            Status::Failed(e) => return e.clone().into_response(),
            _ => {}
        }
        if status.changed().await.is_err() {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the model worker stopped".into()).into_response();
        }
    }
}

/// The same request, answered as server-sent events: `queued`, `progress` (with previews), then `done` or `error`.
async fn generate_stream(State(app): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    match admit(&app, body, true) {
        Ok(status) => event_stream(status).into_response(),
        Err(e) => e.into_response(),
    }
}
