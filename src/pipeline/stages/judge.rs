//! Stage `judge`: the shapes checker reads every image back and says whether
//! its caption holds, overall and attribute by attribute, for each row of
//! the report:
//! - `real`: the dataset's own images (the checker's ceiling),
//! - `vqgan`: their VQGAN reconstructions (the tokenizer's ceiling),
//! - `generated`: every sampled image (generation without reranking),
//! - `reranked`: the best-scored sample of each prompt (keep 1 of N),
//! - `best`: the sample of each prompt the checker likes best (what a perfect
//!   reranker would keep: the reranker's ceiling),
//! - `shuffled`: real images against another image's caption (the floor).
//!
//! Each on the held-out prompts and on as many training prompts.

use super::vqgan::path_string;
use super::generate::{best_candidate, image_name, read_scores};
use super::{Context, StageEnd};
use crate::data::images::{hwc_to_rgb, rgb_to_hwc, ImageIndex, ImageRecord};
use crate::data::shapes::{parse_caption, ShapeSpec};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::vqgan::{open_vqgan, VqganCodec};
use crate::pipeline::config::paths;
use crate::pipeline::run::write_atomically;
use crate::pipeline::stage::Stage;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The scores file the report reads.
pub const JUDGE_FILE: &str = "judge/scores.json";
/// One line per judged image.
const DETAILS_FILE: &str = "judge/details.jsonl";
/// Reconstructions of the judged real images, for the grid picture.
pub const RECONSTRUCTIONS: &str = "judge/reconstructions";

/// The checker's verdict on one image and caption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The whole caption holds (every object found, nothing else).
    pub holds: bool,
    /// As many objects as the caption names.
    pub count: bool,
    /// The objects' shapes, colours, sizes and positions, each compared as a
    /// multiset between the caption and the image.
    pub shape: bool,
    pub colour: bool,
    pub size: bool,
    pub position: bool,
}

/// Shares of images (0..1) whose caption holds, per attribute too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributeScores {
    pub shape: f64,
    pub colour: f64,
    pub position: f64,
    pub size: f64,
    pub count: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowScores {
    /// real, vqgan, generated, reranked or shuffled.
    pub row: String,
    /// heldout or train.
    pub split: String,
    pub images: usize,
    /// Share of images whose caption holds.
    pub fidelity: f64,
    pub attributes: AttributeScores,
}

/// Judges `image` against `caption`.
pub fn judge(image: &RgbImage, caption: &str) -> Result<Judgement> {
    let specs = parse_caption(caption)?;
    let report = crate::data::shapes::check_specs(image, &specs);
    let found = &report.found;
    let same = |a: Vec<String>, b: Vec<String>| {
        let (mut a, mut b) = (a, b);
        a.sort();
        b.sort();
        a == b
    };
    let wanted = |f: &dyn Fn(&ShapeSpec) -> Option<String>| specs.iter().map(|s| f(s).unwrap_or_default()).collect::<Vec<_>>();
    Ok(Judgement {
        holds: report.holds,
        count: found.len() == specs.len(),
        shape: same(wanted(&|s| Some(s.kind.to_string())), found.iter().map(|d| d.kind.to_string()).collect()),
        colour: same(wanted(&|s| s.color.map(|c| c.to_string())), found.iter().map(|d| d.color.to_string()).collect()),
        size: same(wanted(&|s| s.size.map(|c| c.to_string())), found.iter().map(|d| d.size.to_string()).collect()),
        position: same(wanted(&|s| s.position.map(|c| c.to_string())), found.iter().map(|d| d.position.to_string()).collect()),
    })
}

/// The candidate the checker likes best: one whose caption holds, else one
/// with the most attributes right (the first of equals).
pub fn best_judged(candidates: &[Judgement]) -> usize {
    let merit = |j: &Judgement| (j.holds as usize * 10 + [j.shape, j.colour, j.position, j.size, j.count].iter().filter(|a| **a).count()) as f32;
    best_candidate(&candidates.iter().map(merit).collect::<Vec<_>>())
}

/// The shares of `judged` whose caption holds, overall and per attribute.
pub fn row_scores(row: &str, split: &str, judged: &[Judgement]) -> RowScores {
    let share = |f: &dyn Fn(&Judgement) -> bool| judged.iter().filter(|j| f(j)).count() as f64 / judged.len().max(1) as f64;
    RowScores {
        row: row.into(),
        split: split.into(),
        images: judged.len(),
        fidelity: share(&|j| j.holds),
        attributes: AttributeScores {
            shape: share(&|j| j.shape),
            colour: share(&|j| j.colour),
            position: share(&|j| j.position),
            size: share(&|j| j.size),
            count: share(&|j| j.count),
        },
    }
}

fn open_rgb(path: &Path) -> Result<RgbImage> {
    Ok(image::open(path).map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))?.to_rgb8())
}

/// The first `n` records of a split folder (index order).
pub fn prompts(dir: &Path, n: usize) -> Result<Vec<ImageRecord>> {
    let index = ImageIndex::open(dir)?;
    if index.records.len() < n {
        return Err(Error::Invalid(format!("{} holds {} captioned images, {n} are judged", dir.display(), index.records.len())));
    }
    Ok(index.records.into_iter().take(n).collect())
}

struct Detail<'a> {
    row: &'a str,
    split: &'a str,
    index: usize,
    caption: &'a str,
    judgement: Judgement,
}

pub fn run(cx: &Context) -> Result<StageEnd> {
    let g = &cx.config.generate;
    let splits = [
        ("heldout", cx.run.input(Stage::Judge, paths::SHAPES_HELDOUT, Stage::Shapes)?, g.heldout_prompts),
        ("train", cx.run.input(Stage::Judge, paths::SHAPES_TRAIN, Stage::Shapes)?, g.train_prompts),
    ];
    let vqgan_run = cx.run.input(Stage::Judge, paths::VQGAN_RUN, Stage::Vqgan)?;
    let generated = cx.run.input(Stage::Judge, paths::GENERATED, Stage::Generate)?;
    let (config, weights, origin) = open_vqgan(&path_string(&vqgan_run))?;
    let codec = VqganCodec::new(cx.client, config, &weights, &origin, 8, cx.client.device_count())?;

    let mut rows = Vec::new();
    let mut details = String::new();
    let mut note = |d: Detail| {
        details.push_str(&serde_json::json!({"row": d.row, "split": d.split, "index": d.index, "caption": d.caption, "judgement": d.judgement}).to_string());
        details.push('\n');
    };
    for (split, dir, n) in &splits {
        if *n == 0 {
            continue;
        }
        if let Some(reason) = cx.stop.reason() {
            return Ok(StageEnd::Stopped(reason));
        }
        let records = prompts(dir, *n)?;
        let images: Vec<RgbImage> = records.iter().map(|r| open_rgb(&r.path)).collect::<Result<_>>()?;

        let real: Vec<Judgement> = records.iter().zip(&images).map(|(r, im)| judge(im, &r.caption)).collect::<Result<_>>()?;
        for (i, (r, j)) in records.iter().zip(&real).enumerate() {
            note(Detail { row: "real", split, index: i, caption: &r.caption, judgement: *j });
        }
        rows.push(row_scores("real", split, &real));

        let reconstructed = reconstruct(&codec, &images)?;
        let recon_dir = cx.run.path(RECONSTRUCTIONS).join(split);
        std::fs::create_dir_all(&recon_dir).map_err(|e| Error::io(format!("creating {}", recon_dir.display()), e))?;
        let mut vq = Vec::new();
        for (i, (r, im)) in records.iter().zip(&reconstructed).enumerate() {
            im.save_with_format(recon_dir.join(format!("{i:06}.png")), image::ImageFormat::Png)
                .map_err(|e| Error::Invalid(format!("writing a reconstruction into {}: {e}", recon_dir.display())))?;
            let j = judge(im, &r.caption)?;
            note(Detail { row: "vqgan", split, index: i, caption: &r.caption, judgement: j });
            vq.push(j);
        }
        rows.push(row_scores("vqgan", split, &vq));

        let mut sampled = Vec::new();
        let mut reranked = Vec::new();
        let mut best_judged_rows = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let dir = generated.join(split);
            let mut candidates = Vec::with_capacity(g.images_per_prompt);
            for k in 0..g.images_per_prompt {
                let j = judge(&open_rgb(&dir.join(image_name(i, k)))?, &r.caption)?;
                note(Detail { row: "generated", split, index: i * g.images_per_prompt + k, caption: &r.caption, judgement: j });
                candidates.push(j);
            }
            let best = candidates[best_candidate(&read_scores(&dir, i, g.images_per_prompt)?)];
            note(Detail { row: "reranked", split, index: i, caption: &r.caption, judgement: best });
            reranked.push(best);
            let ideal = candidates[best_judged(&candidates)];
            note(Detail { row: "best", split, index: i, caption: &r.caption, judgement: ideal });
            best_judged_rows.push(ideal);
            sampled.extend(candidates);
        }
        rows.push(row_scores("generated", split, &sampled));
        rows.push(row_scores("reranked", split, &reranked));
        rows.push(row_scores("best", split, &best_judged_rows));

        // Each image against the next one's caption: deterministic, and
        // (with distinct neighbours) never its own.
        let mut shuffled = Vec::new();
        for (i, im) in images.iter().enumerate() {
            let other = &records[(i + 1) % records.len()].caption;
            let j = judge(im, other)?;
            note(Detail { row: "shuffled", split, index: i, caption: other, judgement: j });
            shuffled.push(j);
        }
        rows.push(row_scores("shuffled", split, &shuffled));
    }
    let bytes = serde_json::to_vec_pretty(&rows).map_err(|e| Error::Invalid(format!("serialising the scores: {e}")))?;
    write_atomically(&cx.run.path(DETAILS_FILE), details.as_bytes())?;
    write_atomically(&cx.run.path(JUDGE_FILE), &bytes)?;
    let summary: serde_json::Map<String, serde_json::Value> =
        rows.iter().map(|r| (format!("{}_{}_fidelity", r.row, r.split), r.fidelity.into())).collect();
    Ok(StageEnd::Completed(serde_json::Value::Object(summary)))
}

/// Each image after a round trip through the VQGAN's tokens.
pub fn reconstruct(codec: &VqganCodec, images: &[RgbImage]) -> Result<Vec<RgbImage>> {
    let r = codec.config.resolution;
    let mut data = Vec::new();
    for im in images {
        if im.dimensions() != (r as u32, r as u32) {
            return Err(Error::Invalid(format!("an image is {}x{} but the VQGAN takes {r}x{r}", im.width(), im.height())));
        }
        data.extend(rgb_to_hwc(im).data);
    }
    let batch = HostTensor { dtype: crate::DType::F32, shape: vec![images.len() as i64, r, r, 3], data };
    let out = codec.reconstruct(&batch)?;
    let per = out.data.len() / images.len().max(1);
    (0..images.len())
        .map(|i| hwc_to_rgb(&HostTensor { dtype: out.dtype, shape: vec![r, r, 3], data: out.data[i * per..(i + 1) * per].to_vec() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkers_pick_is_a_holding_candidate_else_the_one_with_most_attributes_right() {
        let all = Judgement { holds: true, count: true, shape: true, colour: true, size: true, position: true };
        let shape_wrong = Judgement { holds: false, shape: false, ..all };
        let two_wrong = Judgement { colour: false, ..shape_wrong };
        assert_eq!(best_judged(&[two_wrong, shape_wrong, all, all]), 2);
        assert_eq!(best_judged(&[two_wrong, shape_wrong, two_wrong]), 1);
        assert_eq!(best_judged(&[two_wrong]), 0);
    }
}
