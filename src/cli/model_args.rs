//! The models behind `dalle generate` and `dalle serve`: which DalleBart,
//! VQGAN and (optionally) CLIP, and how they are loaded onto the devices.

use anyhow::Context;
use clap::Args;
use dalle_xla::data::TextEncoder;
use dalle_xla::generate::{load_dallebart, LoadedDalleBart, Sampler, TextToImage};
use dalle_xla::models::clip::{Scorer, ScorerOptions};
use dalle_xla::models::vqgan::{open_vqgan, VqganCodec};
use dalle_xla::pjrt::Client;
use dalle_xla::DType;
use std::path::PathBuf;

#[derive(Args)]
pub struct ModelArgs {
    /// The DalleBart: a training run directory or URL (its newest committed checkpoint), or a model directory (dalle convert output or a released flax one).
    #[arg(long)]
    pub model: String,
    /// Use the checkpoint of this step instead of the newest.
    #[arg(long)]
    pub step: Option<u64>,
    /// The VQGAN: a model directory (converted or released flax), a weights file, or a run directory / URL.
    #[arg(long)]
    pub vqgan: String,
    /// A CLIP checkpoint directory (transformers layout, converted or released flax) to score and order images.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// The caption tokenizer (tokenizer.json); default: the one the model was trained with.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Compute dtype for inference: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Images per device per sampler (and CLIP) call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

/// What the host reads before any device work: the DalleBart, its caption encoder and the dtype.
pub struct HostModel {
    pub dallebart: LoadedDalleBart,
    pub text: TextEncoder,
    pub dtype: DType,
}

pub fn parse_dtype(name: &str) -> anyhow::Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => anyhow::bail!("--dtype must be f32, bf16 or f16, got '{other}'"),
    }
}

impl ModelArgs {
    /// Reads the DalleBart and its tokenizer (no device work yet, so bad paths fail fast).
    pub fn load_host(&self) -> anyhow::Result<HostModel> {
        let dtype = parse_dtype(&self.dtype)?;
        let dallebart = load_dallebart(&self.model, self.step)?;
        let text = dallebart.text_encoder(self.tokenizer.as_deref())?;
        Ok(HostModel { dallebart, text, dtype })
    }

    /// Puts the sampler, the VQGAN decoder and the CLIP scorer (with `--clip`) on every device of `client`.
    pub fn build(&self, client: &Client, host: HostModel) -> anyhow::Result<(TextToImage, Option<Scorer>)> {
        let (vqgan_config, vqgan_weights, vqgan_origin) = open_vqgan(&self.vqgan).with_context(|| format!("loading --vqgan {}", self.vqgan))?;
        let replicas = client.device_count();
        let m = &host.dallebart;
        let sampler = Sampler::new(client, m.config.clone(), &m.weights, &m.origin, host.dtype, replicas)?;
        let codec = VqganCodec::new(client, vqgan_config, &vqgan_weights, &vqgan_origin, 1, replicas)?;
        let t2i = TextToImage::new(sampler, host.text, codec)?;
        let scorer = match &self.clip {
            Some(dir) => Some(
                Scorer::load(dir, client, &ScorerOptions { images_per_device: self.batch, ..Default::default() })
                    .with_context(|| format!("loading the CLIP checkpoint --clip {}", dir.display()))?,
            ),
            None => None,
        };
        Ok((t2i, scorer))
    }
}
