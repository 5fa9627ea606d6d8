//! `dalle serve`: a text-to-image HTTP server and demo page.
//!
//! - [`request`]: the `POST /generate` body (dalle-mini's `{"prompt": ...}` plus options), checked;
//! - [`queue`]: the bounded queue of jobs and their status channels;
//! - [`worker`]: the thread that owns the models and runs one sampler call per batch of compatible jobs;
//! - [`routes`] and [`events`]: the HTTP API (JSON and server-sent events) and the embedded page;
//! - [`metrics`]: counters and latency percentiles for `GET /metrics`;
//! - [`server`]: starting and stopping it all.

pub mod error;
pub mod events;
pub mod metrics;
pub mod queue;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod worker;

pub use error::ApiError;
pub use response::{GenerateResponse, Timings};
pub use server::Server;
pub use worker::{ChunkObserver, ChunkReport};

use crate::error::{Error, Result};

/// How the server queues, batches and limits requests.
#[derive(Clone)]
pub struct ServeOptions {
    /// Requests that may wait for the model; one more is answered 429.
    pub queue_capacity: usize,
    /// Images per request when the request does not say.
    pub default_images: usize,
    /// Most images one request may ask for.
    pub max_images: usize,
    /// Most images of one sampler call (compatible requests are batched up to this).
    pub batch_images: usize,
    /// Images per device per sampler program call.
    pub rows_per_device: usize,
    /// Positions between progress events (and previews for streaming clients).
    pub preview_every: usize,
    /// Largest accepted request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// Compile the sampler for the default request before serving.
    pub warm_up: bool,
    pub chunk_observer: Option<ChunkObserver>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            queue_capacity: 32,
            default_images: 9,
            max_images: 16,
            batch_images: 32,
            rows_per_device: 8,
            preview_every: 32,
            body_limit: 16 * 1024,
            warm_up: true,
            chunk_observer: None,
        }
    }
}

impl ServeOptions {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("queue capacity", self.queue_capacity),
            ("default images", self.default_images),
            ("max images", self.max_images),
            ("batch images", self.batch_images),
            ("rows per device", self.rows_per_device),
            ("preview every", self.preview_every),
            ("body limit", self.body_limit),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Invalid(format!("the server's {name} must be at least 1")));
        }
        if self.default_images > self.max_images {
            return Err(Error::Invalid(format!("default images ({}) exceeds max images ({})", self.default_images, self.max_images)));
        }
        if self.batch_images < self.max_images {
            return Err(Error::Invalid(format!(
                "batch images ({}) must hold the largest request (max images {})",
                self.batch_images, self.max_images
            )));
        }
        Ok(())
    }
}
