//! Stage `generate`: `images_per_prompt` images for each judged prompt
//! (held-out and training captions) with super-conditioning, through the
//! library's text-to-image API, each scored by the pipeline's CLIP against
//! its prompt. Written prompt by prompt as
//! `generated/<split>/<prompt>_<candidate>.png` and
//! `generated/<split>/<prompt>_scores.json`; a rerun skips prompts whose
//! images and scores are all there. Prompt `i` of a split always samples with the same
//! keys, so how the work was cut into sessions changes no image.

use super::judge::prompts;
use super::vqgan::path_string;
use super::{Context, StageEnd};
use crate::data::TextEncoder;
use crate::error::{Error, Result};
use crate::generate::{load_dallebart, Flow, RunOptions, SamplingSettings, Sampler, TextToImage};
use crate::models::clip::{Scorer, ScorerOptions};
use crate::models::vqgan::{open_vqgan, VqganCodec};
use crate::pipeline::config::paths;
use crate::pipeline::run::write_atomically;
use crate::pipeline::stage::Stage;
use crate::DType;
use std::path::Path;

/// Prompts sampled per library call (and so per progress save).
const PROMPTS_PER_CALL: usize = 8;
/// Sampling keys of the training prompts start here, apart from the held-out ones.
const TRAIN_KEY_OFFSET: u64 = 1 << 32;

/// File name of candidate `k` of prompt `i`.
pub fn image_name(i: usize, k: usize) -> String {
    format!("{i:06}_{k:02}.png")
}

/// File of prompt `i`'s CLIP scores, one per candidate in candidate order.
pub fn scores_name(i: usize) -> String {
    format!("{i:06}_scores.json")
}

/// Prompt `i`'s CLIP scores as the generate stage wrote them (`n` of them).
pub fn read_scores(dir: &Path, i: usize, n: usize) -> Result<Vec<f32>> {
    let path = dir.join(scores_name(i));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let scores: Vec<f32> = serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{} is not a list of scores: {e}", path.display())))?;
    if scores.len() != n {
        return Err(Error::Invalid(format!("{} holds {} scores for {n} images; rerun the generate stage with --restart", path.display(), scores.len())));
    }
    Ok(scores)
}

/// The candidate CLIP scores best (the first of equals).
pub fn best_candidate(scores: &[f32]) -> usize {
    scores.iter().enumerate().fold(0, |best, (k, s)| if *s > scores[best] { k } else { best })
}

pub fn run(cx: &Context) -> Result<StageEnd> {
    let g = &cx.config.generate;
    let heldout = cx.run.input(Stage::Generate, paths::SHAPES_HELDOUT, Stage::Shapes)?;
    let train = cx.run.input(Stage::Generate, paths::SHAPES_TRAIN, Stage::Shapes)?;
    let vqgan_run = cx.run.input(Stage::Generate, paths::VQGAN_RUN, Stage::Vqgan)?;
    let tokenizer = cx.run.input(Stage::Generate, paths::TOKENIZER, Stage::Encode)?;
    let model_run = cx.run.input(Stage::Generate, paths::DALLEBART_RUN, Stage::Dallebart)?;
    let clip_model = cx.run.input(Stage::Generate, paths::CLIP_MODEL, Stage::Clip)?;

    let model = load_dallebart(&path_string(&model_run), None)?;
    let devices = cx.client.device_count();
    let sampler = Sampler::new(cx.client, model.config.clone(), &model.weights, &model.origin, DType::F32, devices)?;
    let text = TextEncoder::load(&path_string(&tokenizer), model.config.max_text_length as usize)?;
    let (vq_config, vq_weights, vq_origin) = open_vqgan(&path_string(&vqgan_run))?;
    let codec = VqganCodec::new(cx.client, vq_config, &vq_weights, &vq_origin, 8, devices)?;
    let t2i = TextToImage::new(sampler, text, codec)?;
    let scorer = Scorer::load(&clip_model, cx.client, &ScorerOptions { devices: 1, ..ScorerOptions::default() })?;
    let settings = SamplingSettings {
        sample: true,
        temperature: g.temperature as f32,
        top_k: (g.top_k > 0).then_some(g.top_k),
        top_p: (g.top_p < 1.0).then_some(g.top_p as f32),
        condition_scale: g.condition_scale as f32,
    };
    settings.validate(model.config.image_vocab_size)?;


    for (split, dir, n, first_key) in [("heldout", heldout, g.heldout_prompts, 0u64), ("train", train, g.train_prompts, TRAIN_KEY_OFFSET)] {
        let records = prompts(&dir, n)?;
        let out = cx.run.path(paths::GENERATED).join(split);
        std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
        let done = |i: usize| out.join(scores_name(i)).exists() && (0..g.images_per_prompt).all(|k| out.join(image_name(i, k)).exists());
        let missing: Vec<usize> = (0..records.len()).filter(|&i| !done(i)).collect();
        for chunk in missing.chunks(PROMPTS_PER_CALL) {
            if let Some(reason) = cx.stop.reason() {
                return Ok(StageEnd::Stopped(reason));
            }
            // Consecutive prompts share one call; each keeps its own keys.
            for run_of in consecutive(chunk) {
                let texts: Vec<String> = run_of.iter().map(|&i| records[i].caption.clone()).collect();
                let stop = cx.stop;
                let (images, _) = t2i.generate(&texts, g.images_per_prompt, g.seed, first_key + run_of[0] as u64, &settings, &RunOptions::default(), |_| {
                    if stop.is_set() {
                        Flow::Cancel
                    } else {
                        Flow::Continue
                    }
                })?;
                for (&i, prompt) in run_of.iter().zip(images) {
                    for (k, image) in prompt.images.iter().enumerate() {
                        save_png(image, &out.join(image_name(i, k)))?;
                    }
                    // Written last: its presence marks the prompt done.
                    let scores = scorer.score(&records[i].caption, &prompt.images)?;
                    let json = serde_json::to_vec(&scores).map_err(|e| Error::Invalid(format!("serialising CLIP scores: {e}")))?;
                    write_atomically(&out.join(scores_name(i)), &json)?;
                }
            }
            tracing::info!("generate {split}: {} of {} prompts done", missing.iter().position(|&m| m == chunk[chunk.len() - 1]).map_or(0, |p| p + 1) + records.len() - missing.len(), records.len());
        }
    }
    Ok(StageEnd::Completed(serde_json::json!({
        "images_per_prompt": g.images_per_prompt,
        "condition_scale": g.condition_scale,
        "temperature": g.temperature,
        "reranked_by": "the pipeline's CLIP (clip/model)",
    })))
}

/// Splits sorted indices into runs of consecutive ones.
fn consecutive(indices: &[usize]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &i in indices {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|&l| l + 1 == i) => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    runs
}

fn save_png(image: &image::RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("encoding {}: {e}", path.display())))?;
    write_atomically(path, &bytes)
}
