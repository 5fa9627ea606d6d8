//! `dalle serve`: the demo page and HTTP API over a loaded model.

use super::common::DeviceArgs;
use super::model_args::ModelArgs;
use anyhow::Context;
use clap::Args;
use dalle_xla::generate::ImageScorer;
use dalle_xla::serve::{ServeOptions, Server};
use std::net::SocketAddr;

#[derive(Args)]
pub struct ServeArgs {
    /// The models; with `--clip`, each request's images are scored and ordered best first.
    #[command(flatten)]
    pub models: ModelArgs,
    /// Address to listen on; loopback by default, another interface only when given.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// Requests that may wait; one more is answered 429 with Retry-After.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Images per request when the request does not say.
    #[arg(long, default_value_t = 9)]
    pub default_images: usize,
    /// Most images one request may ask for.
    #[arg(long, default_value_t = 16)]
    pub max_images: usize,
    /// Most images per sampler call; compatible concurrent requests are batched up to this.
    #[arg(long, default_value_t = 32)]
    pub batch_images: usize,
    /// Image positions between progress events and previews.
    #[arg(long, default_value_t = 32)]
    pub preview_every: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 16 * 1024)]
    pub body_limit: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.addr.parse().with_context(|| format!("--addr '{}' is not an address like 127.0.0.1:8000", args.addr))?;
    let options = ServeOptions {
        queue_capacity: args.queue,
        default_images: args.default_images,
        max_images: args.max_images,
        batch_images: args.batch_images,
        rows_per_device: args.models.batch,
        preview_every: args.preview_every,
        body_limit: args.body_limit,
        warm_up: true,
        chunk_observer: None,
    };
    options.validate()?;
    // Bind before loading the models, so a taken port fails at once.
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding --addr {addr}"))?;
    listener.set_nonblocking(true).context("making the listener non-blocking")?;
    let host = args.models.load_host()?;
    let origin = host.dallebart.origin.clone();
    let client = args.device.client()?;
    let (t2i, scorer) = args.models.build(&client, host)?;
    let scorer = scorer.map(|s| Box::new(s) as Box<dyn ImageScorer + Send>);
    let server = Server::start(t2i, scorer, options, origin.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
        if !addr.ip().is_loopback() {
            tracing::warn!("listening on {addr}, reachable from other machines; the server has no authentication");
        }
        println!("serving {} on http://{}/ (Ctrl-C stops)", origin, listener.local_addr()?);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping: finishing running requests");
        };
        server.serve(listener, stop).await?;
        anyhow::Ok(())
    })
}
