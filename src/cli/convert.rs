//! `dalle convert`: a released flax model directory (DalleBart, VQGAN, CLIP)
//! to safetensors + our config + tokenizer files; `dalle export`: a run's
//! DalleBart weights back to a dalle-mini model directory.

use anyhow::Context;
use clap::Args;
use dalle_xla::models::convert::{convert_dir, export_dallebart, ConvertOptions, ExportOptions};
use dalle_xla::models::dallebart::{load_weights_dir, parameter_specs};
use dalle_xla::models::dallebart::TrainConfig;
use dalle_xla::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(format!("'{other}' is not one of f32, f16, bf16")),
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// A released model directory: config.json + flax_model.msgpack (+ tokenizer files).
    pub src: PathBuf,
    /// The directory to write (must not exist unless --overwrite).
    pub out: PathBuf,
    /// Store the weights as f32, f16 or bf16 (default: as in the checkpoint).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Split the safetensors into shards of at most this many GB.
    #[arg(long, default_value_t = 2.0)]
    pub shard_size_gb: f64,
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    if !(args.shard_size_gb > 0.0) {
        anyhow::bail!("--shard-size-gb must be positive, got {}", args.shard_size_gb);
    }
    let options = ConvertOptions { dtype: args.dtype, overwrite: args.overwrite, shard_bytes: (args.shard_size_gb * 1e9) as u64 };
    let report = convert_dir(&args.src, &args.out, &options).with_context(|| format!("converting {}", args.src.display()))?;
    println!("converted a {} model: {} tensors, {:.2}M parameters", report.kind, report.tensors, report.parameters as f64 / 1e6);
    for (name, size) in &report.files {
        println!("  wrote {}/{name} ({})", report.out.display(), human_bytes(*size));
    }
    if report.unused.is_empty() {
        println!("every array of the checkpoint was used");
    } else {
        println!("{} arrays of the checkpoint were not used:", report.unused.len());
        for name in &report.unused {
            println!("  {name}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// A training run (directory or storage URL; its newest checkpoint is exported) or a model directory.
    pub run: String,
    /// The dalle-mini model directory to write (must not exist unless --overwrite).
    pub out: PathBuf,
    /// Store the weights as f32, f16 or bf16 (default: as they are).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let local = Path::new(&args.run);
    let options = ExportOptions { dtype: args.dtype, overwrite: args.overwrite };
    let (files, what) = if local.is_dir() && dalle_xla::models::vqgan::flax::is_model_dir(local) {
        let m = load_weights_dir(local)?;
        let dir = m.tokenizer.parent().map(Path::to_path_buf);
        (export_dallebart(&m.config, &m.weights, m.normalize_text, dir.as_deref(), &args.out, &options)?, format!("the model in {}", args.run))
    } else {
        let (config, weights, step) = run_weights(&args.run)?;
        let tokenizer_dir = tokenizer_dir(&config);
        if tokenizer_dir.is_none() {
            eprintln!("note: the run's tokenizer is not a local file; {} gets no tokenizer files", args.out.display());
        }
        let normalize = match &config.model.init_from {
            Some(dir) if !dir.contains("://") => load_manifest_normalize(Path::new(dir)),
            _ => true,
        };
        let mut model = config.model.clone();
        model.init_from = None;
        (export_dallebart(&model, &weights, normalize, tokenizer_dir.as_deref(), &args.out, &options)?, format!("step {step} of {}", args.run))
    };
    println!("exported {what}:");
    for (name, size) in &files {
        println!("  wrote {}/{name} ({})", args.out.display(), human_bytes(*size));
    }
    Ok(())
}

/// The newest committed checkpoint of a DalleBart run: its config, parameters and step.
fn run_weights(url: &str) -> anyhow::Result<(TrainConfig, BTreeMap<String, dalle_xla::HostTensor>, u64)> {
    let location = dalle_xla::storage::open(url)?;
    let manager = dalle_xla::checkpoint::CheckpointManager::open(&location, dalle_xla::checkpoint::CheckpointConfig::default().retention())
        .with_context(|| format!("opening the checkpoints of {url}"))?;
    let checkpoint = manager.restore_latest()?.with_context(|| format!("{url} has no committed checkpoint to export"))?;
    let config: TrainConfig = serde_yaml::from_str(&checkpoint.meta.config_yaml)
        .with_context(|| format!("{url}: the checkpoint's config is not a DalleBart training config"))?;
    let by_name: BTreeMap<String, dalle_xla::HostTensor> = checkpoint.tensors.into_iter().collect();
    let mut weights = BTreeMap::new();
    for spec in parameter_specs(&config.model)? {
        let t = by_name.get(&spec.name).with_context(|| format!("{url}: the checkpoint of step {} has no parameter '{}'", checkpoint.step, spec.name))?;
        weights.insert(spec.name, t.clone());
    }
    Ok((config, weights, checkpoint.step))
}

/// The local directory holding the run's tokenizer.json.
fn tokenizer_dir(config: &TrainConfig) -> Option<PathBuf> {
    let from_data = config.data.tokenizer.as_deref().filter(|t| !t.contains("://")).map(PathBuf::from);
    let from_init = config.model.init_from.as_deref().filter(|t| !t.contains("://")).map(|d| Path::new(d).join("tokenizer.json"));
    from_data.or(from_init).filter(|p| p.is_file()).and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The release's `normalize_text`, true when unknown (dalle-mini's releases normalise).
fn load_manifest_normalize(dir: &Path) -> bool {
    release_normalizes(dir).unwrap_or(true)
}

fn release_normalizes(dir: &Path) -> Option<bool> {
    match dalle_xla::weights::find_weights(dir).ok()? {
        dalle_xla::weights::WeightsSource::Converted(m) => Some(m.normalize_text),
        dalle_xla::weights::WeightsSource::Flax { config, .. } => config.get("normalize_text").and_then(|v| v.as_bool()),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
