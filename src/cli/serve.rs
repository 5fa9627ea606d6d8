//! `dalle serve`: the demo page and HTTP API over a loaded model.

use super::common::DeviceArgs;
use super::generate::parse_dtype;
use anyhow::Context;
use clap::Args;
use dalle_xla::generate::{load_dallebart, ImageScorer, Sampler, TextToImage};
use dalle_xla::models::clip::{Scorer, ScorerOptions};
use dalle_xla::models::vqgan::{open_vqgan, VqganCodec};
use dalle_xla::serve::{ServeOptions, Server};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// The DalleBart: a training run directory or URL (its newest committed checkpoint).
    #[arg(long)]
    pub model: String,
    /// Use the checkpoint of this step instead of the newest.
    #[arg(long)]
    pub step: Option<u64>,
    /// The VQGAN: a weights file, or a run directory / URL.
    #[arg(long)]
    pub vqgan: String,
    /// A CLIP model directory: each request's images are scored and ordered best first.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// The caption tokenizer (tokenizer.json); default: the one the model was trained with.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Address to listen on; loopback by default, another interface only when given.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// Compute dtype for inference: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
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
    /// Images per device per program call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
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
        rows_per_device: args.batch,
        preview_every: args.preview_every,
        body_limit: args.body_limit,
        warm_up: true,
        chunk_observer: None,
    };
    options.validate()?;
    // Bind before loading the models, so a taken port fails at once.
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding --addr {addr}"))?;
    listener.set_nonblocking(true).context("making the listener non-blocking")?;
    let dtype = parse_dtype(&args.dtype)?;
    let model = load_dallebart(&args.model, args.step)?;
    let text = model.text_encoder(args.tokenizer.as_deref())?;
    let client = args.device.client()?;
    let (vqgan_config, vqgan_weights, vqgan_origin) = open_vqgan(&args.vqgan).with_context(|| format!("loading --vqgan {}", args.vqgan))?;
    let replicas = client.device_count();
    let sampler = Sampler::new(&client, model.config.clone(), &model.weights, &model.origin, dtype, replicas)?;
    let codec = VqganCodec::new(&client, vqgan_config, &vqgan_weights, &vqgan_origin, 1, replicas)?;
    let t2i = TextToImage::new(sampler, text, codec)?;
    let scorer: Option<Box<dyn ImageScorer + Send>> = match &args.clip {
        Some(dir) => Some(Box::new(
            Scorer::load(dir, &client, &ScorerOptions { images_per_device: args.batch, ..Default::default() })
                .with_context(|| format!("loading the CLIP checkpoint --clip {}", dir.display()))?,
        )),
        None => None,
    };
    let server = Server::start(t2i, scorer, options, model.origin.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
        if !addr.ip().is_loopback() {
            tracing::warn!("listening on {addr}, reachable from other machines; the server has no authentication");
        }
        println!("serving {} on http://{}/ (Ctrl-C stops)", model.origin, listener.local_addr()?);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping: finishing running requests");
        };
        server.serve(listener, stop).await?;
        anyhow::Ok(())
    })
}
