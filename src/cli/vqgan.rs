//! The VQGAN commands: `dalle train-vqgan` (fine-tune or train the image
//! tokenizer), `dalle encode` (image+caption dataset to parquet shards of
//! tokens) and `dalle decode` (tokens back to PNG files).

use super::common::DeviceArgs;
use super::training::{finish, open_run, progress_bar, StopHandling};
use anyhow::Context;
use clap::Args;
use dalle_xla::data::images::{save_png, ImageIndex};
use dalle_xla::models::vqgan::{encode_dataset, open_vqgan, psnr, read_tokens, weights_file, VqganCodec, VqganTrainConfig, VqganTrainer, WEIGHTS_FILE};
use dalle_xla::train::{fit, FitOptions, StepMetrics};
use dalle_xla::HostTensor;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TrainVqganArgs {
    /// Training config (YAML).
    #[arg(long, default_value = "configs/vqgan/tiny.yaml")]
    pub config: PathBuf,
    /// Config overrides, `key.path=value` (repeatable), e.g. `--set loss.disc_start=5000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory: local path, gs://bucket/prefix, s3://bucket/prefix (overrides `train.run_dir`).
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn train(args: TrainVqganArgs) -> anyhow::Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(run) = &args.run {
        overrides.push(format!("train.run_dir={run}"));
    }
    let (config, tree) = VqganTrainConfig::load(&args.config, &overrides)?;
    let stop = StopHandling::install(&config.checkpoint)?;
    let client = args.device.client()?;
    let mut trainer = VqganTrainer::new(&client, config.clone())?;
    let mut run = open_run(&mut trainer, &config.train.run_dir, &config.storage, &serde_yaml::to_string(&tree)?, &config.checkpoint)?;
    tracing::info!(
        "training a {:.2}M-parameter VQGAN on {} {} device(s), global batch {}, steps {}..{}",
        trainer.parameter_count() as f64 / 1e6,
        trainer.replicas,
        client.platform(),
        config.train.batch_size,
        trainer.step,
        config.train.steps
    );
    let progress = progress_bar(config.train.steps, trainer.step);
    let on_log = |m: &StepMetrics| {
        progress.set_position(m.step);
        let eval = m.eval_loss.map(|e| format!(" eval PSNR {:.2} dB", psnr(e))).unwrap_or_default();
        let l1 = m.extra.get("l1").copied().unwrap_or(f64::NAN);
        progress.set_message(format!("loss {:.4} l1 {l1:.4}{eval} {:.1} images/s", m.loss, m.samples_per_sec));
        progress.suspend(|| tracing::info!(step = m.step, loss = m.loss, eval_mse = ?m.eval_loss, extra = ?m.extra, "progress"));
    };
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop.signal, title: format!("{} ({})", args.config.display(), run.location.url) };
    let outcome = fit(&mut trainer, &mut run, &options, on_log)?;
    progress.finish_and_clear();
    let skipped = trainer.skipped_images();
    if !skipped.skipped.is_empty() {
        tracing::warn!("{skipped}");
    }
    let weights: Vec<(String, HostTensor)> = trainer.parameters()?.into_iter().collect();
    run.location.put(WEIGHTS_FILE, weights_file(&config.model, &weights)?)?;
    finish(outcome, &run, &format!("{WEIGHTS_FILE}, config, metrics and checkpoints"), "lower optimizer.learning_rate")
}

#[derive(Args)]
pub struct EncodeArgs {
    /// The VQGAN: a model directory (converted or released flax), a weights file, or a run directory / URL (its vqgan.safetensors or newest checkpoint).
    #[arg(long)]
    pub vqgan: String,
    /// Images: a folder (caption `.txt` beside each image) or a CSV of `path,caption`.
    #[arg(long)]
    pub images: PathBuf,
    /// Output directory or storage URL for the parquet shards.
    #[arg(long)]
    pub out: String,
    /// Records per shard.
    #[arg(long, default_value_t = 10_000)]
    pub shard_size: usize,
    /// Images per device per program call.
    #[arg(long, default_value_t = 8)]
    pub batch_per_device: i64,
    /// Devices to use; 0 means all.
    #[arg(long, default_value_t = 0)]
    pub devices: usize,
    /// Threads decoding images.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let (config, weights, origin) = open_vqgan(&args.vqgan)?;
    let index = ImageIndex::open(&args.images)?;
    if !args.out.contains("://") {
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating the output directory {}", args.out))?;
    }
    let out = dalle_xla::storage::open(&args.out)?;
    let client = args.device.client()?;
    let devices = if args.devices == 0 { client.device_count() } else { args.devices };
    let codec = VqganCodec::new(&client, config.clone(), &weights, &origin, args.batch_per_device, devices)?;
    tracing::info!("encoding {} images with the VQGAN of {origin} ({} tokens each) on {devices} device(s)", index.records.len(), config.image_length());
    let progress = progress_bar(index.records.len() as u64, 0);
    let report = encode_dataset(&codec, index, &out, args.shard_size, args.workers, |done| progress.set_position(done as u64))?;
    progress.finish_and_clear();
    if !report.skipped.skipped.is_empty() {
        tracing::warn!("{}", report.skipped);
    }
    println!(
        "encoded {} images into {} new shard(s) in {} ({} of {} shards were already there); {} images skipped",
        report.images_encoded,
        report.shards_written,
        out.url,
        report.shards_skipped,
        report.shards_total,
        report.skipped.skipped.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct DecodeArgs {
    /// The VQGAN: a model directory (converted or released flax), a weights file, or a run directory / URL.
    #[arg(long)]
    pub vqgan: String,
    /// Token sequences: a .parquet/.jsonl dataset file (`encoding` column) or a text file, one sequence per line.
    #[arg(long)]
    pub tokens: String,
    /// Directory for the PNG files (`000000.png`, ...; a `.txt` caption beside each when the file has captions).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per program call.
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let (config, weights, origin) = open_vqgan(&args.vqgan)?;
    let rows = read_tokens(&args.tokens, config.image_length() as usize)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let client = args.device.client()?;
    let codec = VqganCodec::new(&client, config.clone(), &weights, &origin, args.batch, 1)?;
    let progress = progress_bar(rows.len() as u64, 0);
    let (l, r) = (config.image_length(), config.resolution);
    for (chunk_index, chunk) in rows.chunks(args.batch.max(1) as usize).enumerate() {
        let flat: Vec<i32> = chunk.iter().flat_map(|(_, t)| t.iter().map(|v| *v as i32)).collect();
        let tokens = HostTensor::new(&[chunk.len() as i64, l], &flat)?;
        let images = codec.decode(&tokens)?;
        let per_image = images.data.len() / chunk.len();
        for (i, (caption, _)) in chunk.iter().enumerate() {
            let n = chunk_index * args.batch.max(1) as usize + i;
            let image = HostTensor { dtype: images.dtype, shape: vec![r, r, 3], data: images.data[i * per_image..(i + 1) * per_image].to_vec() };
            save_png(&image, &args.out.join(format!("{n:06}.png")))?;
            if let Some(caption) = caption {
                let path = args.out.join(format!("{n:06}.txt"));
                std::fs::write(&path, caption).with_context(|| format!("writing {}", path.display()))?;
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    println!("decoded {} images into {}", rows.len(), Path::new(&args.out).display());
    Ok(())
}
