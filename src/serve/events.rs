//! A job's status as server-sent events. Each event carries the newest
//! state when the client is ready for it, so a slow reader skips progress
//! instead of holding the worker back.

use super::queue::Status;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use tokio::sync::watch;

/// `queued {position}` always first, then `progress {tokens_done, tokens_total, preview?}`, then `done <response>` or `error {error, status}`.
pub fn event_stream(status: watch::Receiver<Status>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((status, true, false), |(mut status, first, finished)| async move {
        if finished {
            return None;
        }
        if !first && status.changed().await.is_err() {
            let event = Event::default().event("error").json_data(serde_json::json!({"error": "the model worker stopped", "status": 500})).ok()?;
            return Some((Ok(event), (status, false, true)));
        }
        // Every stream opens with `queued`, even when the worker picked the job
        // up before the client read anything: the newer state is left unseen
        // so the next turn delivers it at once.
        if first && !matches!(*status.borrow(), Status::Queued { .. }) {
            let event = Event::default().event("queued").json_data(serde_json::json!({ "position": 0 })).ok()?;
            return Some((Ok(event), (status, false, false)));
        }
        let current = status.borrow_and_update().clone();
        let event = match &current {
            Status::Queued { position } => Event::default().event("queued").json_data(serde_json::json!({ "position": position })),
            Status::Running { tokens_done, tokens_total, preview } => Event::default()
                .event("progress")
                .json_data(serde_json::json!({ "tokens_done": tokens_done, "tokens_total": tokens_total, "preview": preview.as_deref() })),
            Status::Done(response) => Event::default().event("done").json_data(response.as_ref()),
            Status::Failed(e) => Event::default().event("error").json_data(serde_json::json!({ "error": e.message, "status": e.status.as_u16() })),
        };
        let event = event.unwrap_or_else(|e| Event::default().event("error").data(format!("encoding an event failed: {e}")));
        Some((Ok(event), (status, false, current.is_final())))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
