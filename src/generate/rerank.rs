//! Reranking generated candidates by how well they match their prompt, as
//! DALL·E mini's demo and notebook do with CLIP: generate many candidates per
//! prompt, score each with a scorer (CLIP's `logits_per_image`), keep the best.

use super::text_to_image::PromptImages;
use crate::error::{Error, Result};
use image::RgbImage;

/// Scores images against a prompt; higher is better.
pub trait ImageScorer {
    fn score(&self, prompt: &str, images: &[RgbImage]) -> Result<Vec<f32>>;
}

impl ImageScorer for crate::models::clip::Scorer {
    fn score(&self, prompt: &str, images: &[RgbImage]) -> Result<Vec<f32>> {
        crate::models::clip::Scorer::score(self, prompt, images)
    }
}

/// One prompt's kept candidates, best first.
pub struct Reranked {
    pub images: PromptImages,
    /// Scores of the kept images, in their (descending) order.
    pub scores: Vec<f32>,
    /// Index among the candidates of each kept image.
    pub candidate_index: Vec<usize>,
    /// Every candidate's score, in generation order.
    pub candidate_scores: Vec<f32>,
}

/// Scores `candidates` with `scorer` and keeps the `keep` best, ordered by
/// descending score (ties keep generation order).
pub fn rerank(candidates: PromptImages, scorer: &dyn ImageScorer, keep: usize) -> Result<Reranked> {
    let n = candidates.images.len();
    if keep == 0 || keep > n {
        return Err(Error::Invalid(format!("cannot keep {keep} of {n} candidates; keep must be in 1..={n}")));
    }
    let scores = scorer.score(&candidates.prompt, &candidates.images)?;
    if scores.len() != n {
        return Err(Error::Invalid(format!("the scorer returned {} scores for {n} images", scores.len())));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Invalid(format!("candidate {i} of '{}' scored {}", candidates.prompt, scores[i])));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(keep);
    let PromptImages { prompt, tokens, images, tokens_cut } = candidates;
    let kept = PromptImages {
        prompt,
        tokens: order.iter().map(|&i| tokens[i].clone()).collect(),
        images: order.iter().map(|&i| images[i].clone()).collect(),
        tokens_cut,
    };
    Ok(Reranked { images: kept, scores: order.iter().map(|&i| scores[i]).collect(), candidate_index: order, candidate_scores: scores })
}
