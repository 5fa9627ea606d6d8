//! `dalle generate`: prompts to PNG images with a trained DalleBart and VQGAN.

use super::common::DeviceArgs;
use super::training::progress_bar;
use anyhow::Context;
use clap::Args;
use dalle_xla::generate::output::{grid, grid_file, image_file, OutputDir, RESULTS_FILE};
use dalle_xla::generate::{load_dallebart, Flow, RunOptions, Sampler, SamplingSettings, TextToImage};
use dalle_xla::models::vqgan::{open_vqgan, VqganCodec};
use dalle_xla::DType;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    /// The DalleBart: a training run directory or URL (its newest committed checkpoint), or a model directory (dalle convert output or a released flax one).
    #[arg(long)]
    pub model: String,
    /// Use the checkpoint of this step instead of the newest.
    #[arg(long)]
    pub step: Option<u64>,
    /// The VQGAN: a model directory (converted or released flax), a weights file, or a run directory / URL.
    #[arg(long)]
    pub vqgan: String,
    /// A prompt (repeatable).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A text file with one prompt per line (blank lines are skipped).
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Images per prompt.
    #[arg(long, default_value_t = 9)]
    pub n: usize,
    /// Output directory: one PNG per image, a grid per prompt, results.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace files already in the output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// The caption tokenizer (tokenizer.json); default: the one the model was trained with.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Softmax temperature (> 0).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probability reaches p, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Super-conditioning scale (1 turns it off).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub condition_scale: f32,
    /// Take the most likely token at every position instead of sampling.
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute dtype for inference: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Images per device per sampler call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn read_prompts(args: &GenerateArgs) -> anyhow::Result<Vec<String>> {
    let mut prompts = args.prompt.clone();
    if let Some(file) = &args.prompts_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading --prompts-file {}", file.display()))?;
        prompts.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    if prompts.is_empty() {
        anyhow::bail!("no prompts: give --prompt \"...\" (repeatable) or --prompts-file FILE");
    }
    if let Some(i) = prompts.iter().position(|p| p.trim().is_empty()) {
        anyhow::bail!("prompt {i} is empty; write what the image should show");
    }
    Ok(prompts)
}

pub fn parse_dtype(name: &str) -> anyhow::Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => anyhow::bail!("--dtype must be f32, bf16 or f16, got '{other}'"),
    }
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let prompts = read_prompts(&args)?;
    if args.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    let settings = SamplingSettings {
        sample: !args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        condition_scale: args.condition_scale,
    };
    let dtype = parse_dtype(&args.dtype)?;
    let model = load_dallebart(&args.model, args.step)?;
    settings.validate(model.config.image_vocab_size)?;
    let text = model.text_encoder(args.tokenizer.as_deref())?;

    let mut names = vec![RESULTS_FILE.to_string()];
    for p in 0..prompts.len() {
        names.push(grid_file(p));
        names.extend((0..args.n).map(|c| image_file(p, c)));
    }
    let out = OutputDir::prepare(&args.out, &names, args.overwrite)?;

    let client = args.device.client()?;
    let (vqgan_config, vqgan_weights, vqgan_origin) = open_vqgan(&args.vqgan).with_context(|| format!("loading --vqgan {}", args.vqgan))?;
    let replicas = client.device_count();
    let sampler = Sampler::new(&client, model.config.clone(), &model.weights, &model.origin, dtype, replicas)?;
    let codec = VqganCodec::new(&client, vqgan_config, &vqgan_weights, &vqgan_origin, 1, replicas)?;
    let t2i = TextToImage::new(sampler, text, codec)?;
    tracing::info!("generating {} image(s) for {} prompt(s) with {} on {replicas} device(s)", args.n * prompts.len(), prompts.len(), model.origin);

    let total = (prompts.len() * args.n) as u64 * model.config.image_length as u64;
    let bar = progress_bar(total, 0);
    bar.set_message("image tokens");
    // Report progress every 32 positions (a sixteenth of a 16x16 grid) without slowing small models down.
    let run_options = RunOptions { rows_per_device: args.batch, chunk: 32, partial_tokens: false };
    let (results, timing) = t2i.generate(&prompts, args.n, args.seed, 0, &settings, &run_options, |p| {
        bar.set_position(p.tokens_done);
        Flow::Continue
    })?;
    bar.finish_and_clear();

    let mut lines = String::new();
    for (p, r) in results.iter().enumerate() {
        let files: Vec<String> = (0..r.images.len()).map(|c| image_file(p, c)).collect();
        for (img, name) in r.images.iter().zip(&files) {
            out.write_png(name, img)?;
        }
        out.write_png(&grid_file(p), &grid(&r.images, None)?)?;
        let line = serde_json::json!({
            "prompt": r.prompt,
            "prompt_index": p,
            "seed": args.seed,
            "model": model.origin,
            "settings": settings,
            "dtype": args.dtype,
            "images": files,
            "grid": grid_file(p),
            "tokens": r.tokens,
            "caption_tokens_cut": r.tokens_cut,
            "timing": timing,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    out.write(RESULTS_FILE, lines.as_bytes())?;
    let images = prompts.len() * args.n;
    println!(
        "wrote {images} image(s) and {} grid(s) to {} (sampling {:.2} s, {:.0} tokens/s; compile {:.2} s; decode {:.2} s)",
        prompts.len(),
        args.out.display(),
        timing.sample_secs,
        total as f64 / timing.sample_secs.max(1e-9),
        timing.compile_secs,
        timing.decode_secs
    );
    Ok(())
}
