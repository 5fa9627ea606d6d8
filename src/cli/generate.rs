//! `dalle generate`: prompts to PNG images with a trained DalleBart and VQGAN.

use super::common::DeviceArgs;
use super::training::progress_bar;
use anyhow::Context;
use clap::Args;
use dalle_xla::generate::output::{grid, grid_file, image_file, OutputDir, RESULTS_FILE};
use super::model_args::ModelArgs;
use dalle_xla::generate::{rerank, Flow, RunOptions, SamplingSettings};
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    /// The models; with `--clip`, `--candidates` images are generated per prompt and the `--keep` best by CLIP score written.
    #[command(flatten)]
    pub models: ModelArgs,
    /// A prompt (repeatable).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A text file with one prompt per line (blank lines are skipped).
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Images per prompt (with --clip, the default of --candidates).
    #[arg(long, default_value_t = 9)]
    pub n: usize,
    /// Output directory: one PNG per image, a grid per prompt, results.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace files already in the output directory.
    #[arg(long)]
    pub overwrite: bool,
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
    /// Candidates generated per prompt when reranking (default: --n).
    #[arg(long, requires = "clip")]
    pub candidates: Option<usize>,
    /// Images kept per prompt when reranking, best first (default: all candidates, reordered).
    #[arg(long, requires = "clip")]
    pub keep: Option<usize>,
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

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let prompts = read_prompts(&args)?;
    if args.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    // Without --clip every generated image is written; with it, `candidates`
    // are generated and the `keep` best written, best first.
    let candidates = args.candidates.unwrap_or(args.n);
    let keep = if args.models.clip.is_some() { args.keep.unwrap_or(candidates) } else { args.n };
    if candidates == 0 || keep == 0 {
        anyhow::bail!("--candidates and --keep must be at least 1");
    }
    if keep > candidates {
        anyhow::bail!("--keep {keep} is more than the {candidates} candidates generated per prompt (--candidates)");
    }
    let settings = SamplingSettings {
        sample: !args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        condition_scale: args.condition_scale,
    };
    let host = args.models.load_host()?;
    let model_config = host.dallebart.config.clone();
    let origin = host.dallebart.origin.clone();
    settings.validate(model_config.image_vocab_size)?;

    let mut names = vec![RESULTS_FILE.to_string()];
    for p in 0..prompts.len() {
        names.push(grid_file(p));
        names.extend((0..keep).map(|c| image_file(p, c)));
    }
    let out = OutputDir::prepare(&args.out, &names, args.overwrite)?;

    let client = args.device.client()?;
    let replicas = client.device_count();
    let (t2i, scorer) = args.models.build(&client, host)?;
    tracing::info!("generating {} image(s) for {} prompt(s) with {} on {replicas} device(s)", candidates * prompts.len(), prompts.len(), origin);

    let total = (prompts.len() * candidates) as u64 * model_config.image_length as u64;
    let bar = progress_bar(total, 0);
    bar.set_message("image tokens");
    // Report progress every 32 positions (a sixteenth of a 16x16 grid) without slowing small models down.
    let run_options = RunOptions { rows_per_device: args.models.batch, chunk: 32, partial_tokens: false };
    let (results, timing) = t2i.generate(&prompts, candidates, args.seed, 0, &settings, &run_options, |p| {
        bar.set_position(p.tokens_done);
        Flow::Continue
    })?;
    bar.finish_and_clear();

    // With --clip: each prompt's candidates scored on device, the best `keep` kept in score order.
    let mut ranking = Vec::with_capacity(results.len());
    let mut kept_results = Vec::with_capacity(results.len());
    let rerank_started = std::time::Instant::now();
    for r in results {
        match &scorer {
            Some(s) => {
                let ranked = rerank(r, s, keep)?;
                ranking.push(Some((ranked.scores, ranked.candidate_index, ranked.candidate_scores)));
                kept_results.push(ranked.images);
            }
            None => {
                ranking.push(None);
                kept_results.push(r);
            }
        }
    }
    let rerank_secs = rerank_started.elapsed().as_secs_f64();
    let results = kept_results;

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
            "model": origin,
            "settings": settings,
            "dtype": args.models.dtype,
            "images": files,
            "grid": grid_file(p),
            "tokens": r.tokens,
            "caption_tokens_cut": r.tokens_cut,
            "timing": timing,
        });
        let mut line = line;
        if let (Some(dir), Some((scores, index, all))) = (&args.models.clip, &ranking[p]) {
            line["clip"] = dir.display().to_string().into();
            line["candidates"] = candidates.into();
            line["scores"] = serde_json::json!(scores);
            line["candidate_index"] = serde_json::json!(index);
            line["candidate_scores"] = serde_json::json!(all);
            line["rerank_secs"] = rerank_secs.into();
        }
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    out.write(RESULTS_FILE, lines.as_bytes())?;
    let images = prompts.len() * keep;
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
