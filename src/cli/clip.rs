//! The CLIP commands: `dalle clip score` (score images against prompts with a
//! Hugging Face CLIP checkpoint directory) and `dalle train-clip`.

use super::common::DeviceArgs;
use super::training::{finish, train_in_run, Trained, TrainingArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use dalle_xla::models::clip::{export_hf, ClipTrainConfig, ClipTrainer, Scorer, ScorerOptions};
use dalle_xla::train::{StepMetrics, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE};
use std::path::{Path, PathBuf};

/// Where `dalle train-clip` exports the trained model in a run directory.
pub const EXPORT_DIR: &str = "clip";

#[derive(Args)]
pub struct TrainClipArgs {
    /// Training config (YAML).
    #[arg(long, default_value = "configs/clip/tiny.yaml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub training: TrainingArgs,
}

pub fn train(args: TrainClipArgs) -> anyhow::Result<()> {
    let (config, tree) = ClipTrainConfig::load(&args.config, &args.training.overrides())?;
    let client = args.training.device.client()?;
    let status = |m: &StepMetrics| {
        let eval = m.eval_loss.map(|e| format!(" eval loss {e:.4}")).unwrap_or_default();
        let acc = m.extra.get("accuracy").copied().unwrap_or(f64::NAN);
        let scale = m.extra.get("logit_scale").copied().unwrap_or(f64::NAN);
        format!("loss {:.4} in-batch accuracy {acc:.3} temperature {:.4}{eval} {:.1} images/s", m.loss, (-scale).exp(), m.samples_per_sec)
    };
    let Trained { trainer, run, outcome } = train_in_run(&args.config, &config, &tree, &client, || ClipTrainer::new(&client, config.clone()), status)?;
    let skipped = trainer.skipped_images();
    if !skipped.skipped.is_empty() {
        tracing::warn!("{skipped}");
    }
    export_hf(&trainer, &run.location, EXPORT_DIR)?;
    // The exported transformers directory is what `dalle clip score --clip` reads.
    let exported = format!("{EXPORT_DIR}/model.safetensors");
    finish(outcome, &run, &[&exported, CONFIG_FILE, METRICS_FILE, LOSS_PLOT_FILE], "lower optimizer.learning_rate")
}

#[derive(Args)]
pub struct ClipArgs {
    #[command(subcommand)]
    pub command: ClipCommand,
}

#[derive(Subcommand)]
pub enum ClipCommand {
    /// Score images against prompts: prints a table and writes the scores as JSON.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    /// CLIP checkpoint directory (config.json, model.safetensors, tokenizer.json or vocab.json + merges.txt, preprocessor_config.json).
    #[arg(long)]
    pub clip: PathBuf,
    /// Prompt to score against (repeatable).
    #[arg(long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// Image files (PNG or JPEG).
    pub images: Vec<PathBuf>,
    /// Where to write the scores (JSON).
    #[arg(long, default_value = "clip_scores.json")]
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Images per device per program call.
    #[arg(long, default_value_t = 8)]
    pub batch_per_device: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: ClipArgs) -> anyhow::Result<()> {
    match args.command {
        ClipCommand::Score(a) => score(a),
    }
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    if args.images.is_empty() {
        bail!("no images given: pass one or more image files after the options");
    }
    if args.out.exists() && !args.overwrite {
        bail!("{} exists; pass --overwrite to replace it or --out to write elsewhere", args.out.display());
    }
    let mut images = Vec::new();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for path in &args.images {
        match image::open(path) {
            Ok(img) if img.width() > 0 && img.height() > 0 => {
                images.push(img.to_rgb8());
                kept.push(path.clone());
            }
            Ok(_) => skipped.push((path.clone(), "the image is empty".to_string())),
            Err(e) => skipped.push((path.clone(), e.to_string())),
        }
    }
    for (p, why) in &skipped {
        tracing::warn!("skipping {}: {why}", p.display());
    }
    if images.is_empty() {
        bail!("none of the {} image(s) could be decoded", args.images.len());
    }
    let client = args.device.client()?;
    let options = ScorerOptions { images_per_device: args.batch_per_device, ..Default::default() };
    let scorer = Scorer::load(&args.clip, &client, &options).with_context(|| format!("loading the CLIP checkpoint {}", args.clip.display()))?;
    let scores = scorer.score_many(&args.prompts, &images)?;

    println!("{}", table(&args.prompts, &kept, &scores));
    if !skipped.is_empty() {
        println!("skipped {} image(s) that could not be decoded", skipped.len());
    }
    let json = serde_json::json!({
        "clip": args.clip.display().to_string(),
        "prompts": args.prompts,
        "scores": kept.iter().zip(&scores).map(|(p, s)| serde_json::json!({"image": p.display().to_string(), "logits_per_image": s})).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(p, why)| serde_json::json!({"image": p.display().to_string(), "reason": why})).collect::<Vec<_>>(),
    });
    write_atomic(&args.out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// One row per image, one column per prompt, rows as given.
fn table(prompts: &[String], images: &[PathBuf], scores: &[Vec<f32>]) -> String {
    let name_width = images.iter().map(|p| p.display().to_string().len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<name_width$}", "image");
    for (i, p) in prompts.iter().enumerate() {
        let short: String = p.chars().take(24).collect();
        out += &format!("  {:>24}", if prompts.len() == 1 { short } else { format!("[{i}] {short}") }.chars().take(24).collect::<String>());
    }
    for (path, row) in images.iter().zip(scores) {
        out += &format!("\n{:<name_width$}", path.display().to_string());
        for s in row {
            out += &format!("  {s:>24.4}");
        }
    }
    out
}

/// Writes `bytes` to a temporary name beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
