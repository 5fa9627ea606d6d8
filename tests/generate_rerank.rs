//! Reranking candidates: with a scorer that prefers a known image (closeness
//! to it), exactly the k best candidates come back, best first, each with its
//! own tokens; bad `keep` values are refused.
use dalle_xla::generate::{rerank, ImageScorer, PromptImages};
use image::{Rgb, RgbImage};

/// Prefers images close to `target`: minus the mean absolute pixel difference.
struct PrefersImage {
    target: RgbImage,
}

impl ImageScorer for PrefersImage {
    fn score(&self, _prompt: &str, images: &[RgbImage]) -> dalle_xla::error::Result<Vec<f32>> {
        Ok(images
            .iter()
            .map(|img| {
                let diff: f64 = img.as_raw().iter().zip(self.target.as_raw()).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum();
                -(diff / img.as_raw().len() as f64) as f32
            })
            .collect())
    }
}

fn candidates() -> PromptImages {
    let levels = [10u8, 200, 90, 140, 60, 250, 120, 30];
    PromptImages {
        prompt: "a grey square".into(),
        tokens: levels.iter().map(|&l| vec![l as i32; 4]).collect(),
        images: levels.iter().map(|&l| RgbImage::from_pixel(4, 4, Rgb([l, l, l]))).collect(),
        tokens_cut: 0,
    }
}

#[test]
fn keeps_exactly_the_k_best_candidates_in_order() {
    let scorer = PrefersImage { target: RgbImage::from_pixel(4, 4, Rgb([128, 128, 128])) };
    let ranked = rerank(candidates(), &scorer, 3).unwrap();
    // Distances to 128: 120 -> 8, 140 -> 12, 90 -> 38; the rest are farther.
    let kept: Vec<u8> = ranked.images.images.iter().map(|i| i.get_pixel(0, 0)[0]).collect();
    assert_eq!(kept, vec![120, 140, 90]);
    assert_eq!(ranked.candidate_index, vec![6, 3, 2]);
    assert_eq!(ranked.scores, vec![-8.0, -12.0, -38.0]);
    assert_eq!(ranked.candidate_scores.len(), 8);
    assert_eq!(ranked.images.tokens, vec![vec![120; 4], vec![140; 4], vec![90; 4]], "tokens follow their images");
    assert!(ranked.scores.windows(2).all(|w| w[0] >= w[1]));

    // The known image itself among the candidates comes first.
    let mut with_target = candidates();
    with_target.images.push(scorer.target.clone());
    with_target.tokens.push(vec![-1; 4]);
    let ranked = rerank(with_target, &scorer, 1).unwrap();
    assert_eq!(ranked.candidate_index, vec![8]);
    assert_eq!(ranked.images.images[0], scorer.target);
}

#[test]
fn keep_must_be_between_one_and_the_candidate_count() {
    let scorer = PrefersImage { target: RgbImage::new(4, 4) };
    for keep in [0, 9] {
        let err = rerank(candidates(), &scorer, keep).err().expect("refused").to_string();
        assert!(err.contains(&format!("keep {keep}")), "{err}");
    }
}
