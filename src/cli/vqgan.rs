//! The VQGAN commands: `dalle train-vqgan` (fine-tune or train the image
//! tokenizer), `dalle encode` (image+caption dataset to parquet shards of
//! tokens) and `dalle decode` (tokens back to PNG files).

use super::common::DeviceArgs;
use super::training::{finish, progress_bar, train_in_run, Trained, TrainingArgs};
use anyhow::Context;
use clap::Args;
use dalle_xla::data::images::{save_png, ImageIndex};
use dalle_xla::models::vqgan::{encode_dataset, open_vqgan, psnr, read_tokens, weights_file, weights_sha256, EncodeOptions, VqganCodec, VqganTrainConfig, VqganTrainer, WEIGHTS_FILE};
use dalle_xla::train::{StepMetrics, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE};
use dalle_xla::HostTensor;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TrainVqganArgs {
    /// Training config (YAML).
    #[arg(long, default_value = "configs/vqgan/tiny.yaml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub training: TrainingArgs,
}

pub fn train(args: TrainVqganArgs) -> anyhow::Result<()> {
    let (config, tree) = VqganTrainConfig::load(&args.config, &args.training.overrides())?;
    let client = args.training.device.client()?;
    let status = |m: &StepMetrics| {
        // The VQGAN's evaluation loss is the held-out pixels' mean squared error.
        let eval = m.eval_loss.map(|e| format!(" eval PSNR {:.2} dB", psnr(e))).unwrap_or_default();
        let pixel = m.extra.get("pixel").copied().unwrap_or(f64::NAN);
        format!("loss {:.4} pixel {pixel:.4}{eval} {:.1} images/s", m.loss, m.samples_per_sec)
    };
    let Trained { trainer, run, outcome } = train_in_run(&args.config, &config, &tree, &client, || VqganTrainer::new(&client, config.clone()), status)?;
    let skipped = trainer.skipped_images();
    if !skipped.skipped.is_empty() {
        tracing::warn!("{skipped}");
    }
    let weights: Vec<(String, HostTensor)> = trainer.parameters()?.into_iter().collect();
    run.location.put(WEIGHTS_FILE, weights_file(&config.model, &weights)?)?;
    finish(outcome, &run, &[WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, LOSS_PLOT_FILE], "lower optimizer.learning_rate")
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
    /// When --out holds an encoding of other inputs or another VQGAN (or shards without a
    /// manifest), delete those shards and start over instead of refusing.
    #[arg(long)]
    pub restart: bool,
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
    let options = EncodeOptions { shard_size: args.shard_size, workers: args.workers, restart: args.restart, vqgan: origin.clone(), vqgan_sha256: weights_sha256(&weights) };
    let report = encode_dataset(&codec, index, &out, &options, |done| progress.set_position(done as u64))?;
    progress.finish_and_clear();
    if !report.skipped.skipped.is_empty() {
        tracing::warn!("{}", report.skipped);
    }
    let repaired = if report.shards_repaired > 0 { format!(", {} damaged or missing shard(s) encoded again", report.shards_repaired) } else { String::new() };
    let empty = if report.shards_empty > 0 { format!(", {} shard(s) with no readable image not written", report.shards_empty) } else { String::new() };
    println!(
        "encoded {} images into {} new shard(s) in {} ({} of {} shards were already there and verified{repaired}{empty}); {} images skipped",
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
    /// Replace `NNNNNN.png` / `.txt` files already in --out (refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let (config, weights, origin) = open_vqgan(&args.vqgan)?;
    let rows = read_tokens(&args.tokens, config.image_length() as usize)?;
    if !args.overwrite {
        refuse_existing(&args.out, &rows)?;
    }
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
            // Written under a temporary name and renamed, so a file is never half there.
            let png = args.out.join(format!("{n:06}.png"));
            let partial = args.out.join(format!(".{n:06}.png.partial"));
            save_png(&image, &partial)?;
            std::fs::rename(&partial, &png).with_context(|| format!("renaming {} to {}", partial.display(), png.display()))?;
            if let Some(caption) = caption {
                let path = args.out.join(format!("{n:06}.txt"));
                let partial = args.out.join(format!(".{n:06}.txt.partial"));
                std::fs::write(&partial, caption).with_context(|| format!("writing {}", partial.display()))?;
                std::fs::rename(&partial, &path).with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    println!("decoded {} images into {}", rows.len(), Path::new(&args.out).display());
    Ok(())
}

/// The files decoding `rows` would write that already exist in `out`.
fn refuse_existing(out: &Path, rows: &[(Option<String>, Vec<i64>)]) -> anyhow::Result<()> {
    let mut existing = Vec::new();
    for (n, (caption, _)) in rows.iter().enumerate() {
        let mut names = vec![format!("{n:06}.png")];
        if caption.is_some() {
            names.push(format!("{n:06}.txt"));
        }
        existing.extend(names.into_iter().map(|name| out.join(name)).filter(|p| p.exists()));
    }
    if let Some(first) = existing.first() {
        anyhow::bail!(
            "{} already holds {} of the files decoding would write (e.g. {}); pass --overwrite to replace them or choose another --out",
            out.display(),
            existing.len(),
            first.display()
        );
    }
    Ok(())
}
