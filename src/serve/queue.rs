//! The bounded queue between the HTTP handlers and the model worker, and the
//! jobs in it. A job's status is a `watch` channel: the worker writes the
//! newest state, each client reads it at its own pace (a slow client only
//! skips intermediate progress), and when every receiver is gone the client
//! has disconnected and the job is cancelled.

use super::error::ApiError;
use super::request::JobSpec;
use super::response::GenerateResponse;
use axum::http::StatusCode;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// What a client sees of its job.
#[derive(Clone, Debug)]
pub enum Status {
    /// Waiting; `position` 1 is next.
    Queued { position: usize },
    Running {
        tokens_done: u64,
        tokens_total: u64,
        /// Base64 PNGs of the partial images, when previews were asked for.
        preview: Option<Arc<Vec<String>>>,
    },
    Done(Arc<GenerateResponse>),
    Failed(ApiError),
}

impl Status {
    pub fn is_final(&self) -> bool {
        matches!(self, Status::Done(_) | Status::Failed(_))
    }
}

pub struct Job {
    pub id: u64,
    pub spec: JobSpec,
    /// Decode partial grids for this job (a streaming client).
    pub previews: bool,
    pub enqueued: Instant,
    pub status: watch::Sender<Status>,
}

impl Job {
    /// Every receiver is gone: the client disconnected.
    pub fn abandoned(&self) -> bool {
        self.status.is_closed()
    }
}

struct State {
    waiting: VecDeque<Arc<Job>>,
    closed: bool,
}

pub struct Queue {
    capacity: usize,
    state: Mutex<State>,
    ready: Condvar,
}

/// The jobs of one sampler call (same sampling settings) and the jobs found abandoned while waiting.
pub struct Taken {
    pub batch: Vec<Arc<Job>>,
    pub abandoned: Vec<Arc<Job>>,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue { capacity, state: Mutex::new(State { waiting: VecDeque::new(), closed: false }), ready: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent VecDeque; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a job, or refuses it with 429 when `capacity` jobs are waiting
    /// (`retry_after` seconds suggested) or 503 when shutting down.
    pub fn push(&self, job: Arc<Job>, retry_after: u64) -> Result<(), ApiError> {
        let mut s = self.lock();
        if s.closed {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down".into()));
        }
        // Jobs whose clients left do not count against the limit (the worker drops them).
        let waiting = s.waiting.iter().filter(|j| !j.abandoned()).count();
        if waiting >= self.capacity {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the queue is full ({waiting} requests waiting); retry in {retry_after} s"),
            );
            e.retry_after = Some(retry_after);
            return Err(e);
        }
        job.status.send_replace(Status::Queued { position: waiting + 1 });
        s.waiting.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Blocks until a job waits, then takes it and every waiting job with the
    /// same sampling settings while their images fit in `max_images`; `None`
    /// once the queue is closed.
    pub fn take(&self, max_images: usize) -> Option<Taken> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            let (abandoned, waiting): (Vec<_>, Vec<_>) = s.waiting.drain(..).partition(|j| j.abandoned());
            s.waiting = waiting.into();
            if let Some(first) = s.waiting.pop_front() {
                let mut images = first.spec.n;
                let mut batch = vec![first];
                let mut rest = VecDeque::with_capacity(s.waiting.len());
                for job in s.waiting.drain(..) {
                    if job.spec.settings == batch[0].spec.settings && images + job.spec.n <= max_images {
                        images += job.spec.n;
                        batch.push(job);
                    } else {
                        rest.push_back(job);
                    }
                }
                for (i, job) in rest.iter().enumerate() {
                    job.status.send_replace(Status::Queued { position: i + 1 });
                }
                s.waiting = rest;
                return Some(Taken { batch, abandoned });
            }
            if !abandoned.is_empty() {
                return Some(Taken { batch: Vec::new(), abandoned });
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wakes the worker to stop; waiting jobs are answered 503.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        for job in s.waiting.drain(..) {
            job.status.send_replace(Status::Failed(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down".into())));
        }
        drop(s);
        self.ready.notify_all();
    }
}
