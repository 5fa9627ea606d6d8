//! Starting the worker, serving the routes on a listener, stopping cleanly.

use super::metrics::Metrics;
use super::queue::Queue;
use super::routes::{router, AppState};
use super::ServeOptions;
use crate::error::{Error, Result};
use crate::generate::{ImageScorer, TextToImage};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// The worker thread and the state the routes share.
pub struct Server {
    state: Arc<AppState>,
    worker: Option<JoinHandle<()>>,
}

impl Server {
    /// Moves the models to the worker thread (which warms the sampler up
    /// when asked) and prepares the routes. With a `scorer` (CLIP) each
    /// request's images are ordered by score. `model` names the model in `/health`.
    pub fn start(t2i: TextToImage, scorer: Option<Box<dyn ImageScorer + Send>>, options: ServeOptions, model: String) -> Result<Server> {
        options.validate()?;
        let c = t2i.sampler.config();
        let state = Arc::new(AppState {
            queue: Arc::new(Queue::new(options.queue_capacity)),
            metrics: Arc::new(Metrics::default()),
            image_vocab: c.image_vocab_size,
            image_length: c.image_length as usize,
            devices: t2i.sampler.replicas(),
            model,
            clip: scorer.is_some(),
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            options: options.clone(),
        });
        let (queue, metrics) = (state.queue.clone(), state.metrics.clone());
        let worker = std::thread::Builder::new()
            .name("dalle-serve-model".into())
            .spawn(move || super::worker::run(t2i, scorer, queue, metrics, options))
            .map_err(|e| Error::io("starting the model worker thread", e))?;
        Ok(Server { state, worker: Some(worker) })
    }

    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` resolves: the queue then closes (waiting
    /// requests are answered 503), running ones finish, the worker stops.
    pub async fn serve(mut self, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let queue = self.state.queue.clone();
        let app = self.router();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                queue.close();
            })
            .await;
        self.stop();
        served.map_err(|e| Error::io("serving HTTP", e))
    }

    /// Closes the queue and waits for the worker to finish its batch.
    pub fn stop(&mut self) {
        self.state.queue.close();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the model worker thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
