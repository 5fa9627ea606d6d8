//! Sampling settings with dalle-mini's meaning, and the part of them that
//! shapes the compiled program.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the next image token is chosen from the decoder's logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingSettings {
    /// Sample from the distribution (true) or take the most likely token (greedy).
    pub sample: bool,
    /// Logits are divided by this before sampling (> 0).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (0 < p <= 1).
    pub top_p: Option<f32>,
    /// Super-conditioning: logits `uncond + scale * (cond - uncond)`, the
    /// unconditional pass reading the empty caption. 1 turns it off.
    pub condition_scale: f32,
}

impl Default for SamplingSettings {
    /// dalle-mini's inference notebook: sampling, condition scale 10, no top-k/top-p, temperature 1.
    fn default() -> Self {
        SamplingSettings { sample: true, temperature: 1.0, top_k: None, top_p: None, condition_scale: 10.0 }
    }
}

impl SamplingSettings {
    /// Greedy decoding without super-conditioning.
    pub fn greedy() -> Self {
        SamplingSettings { sample: false, condition_scale: 1.0, ..Default::default() }
    }

    /// Checks every value against `image_vocab` (the codebook size); errors name the option.
    pub fn validate(&self, image_vocab: i64) -> Result<()> {
        let bad = |what: String| Err(Error::Invalid(what));
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("temperature must be a positive number, got {}", self.temperature));
        }
        if let Some(k) = self.top_k {
            if k == 0 || k as i64 > image_vocab {
                return bad(format!("top-k must be in 1..={image_vocab} (the image vocabulary), got {k}"));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        if !self.condition_scale.is_finite() || self.condition_scale < 0.0 {
            return bad(format!("condition scale must be a finite number >= 0, got {}", self.condition_scale));
        }
        if !self.sample && (self.top_k.is_some() || self.top_p.is_some()) {
            return bad("top-k and top-p apply to sampling; they cannot be combined with greedy decoding".into());
        }
        Ok(())
    }

    /// What the compiled program depends on; temperature, scale and top-p are run-time inputs.
    pub fn shape(&self) -> SettingsShape {
        SettingsShape {
            sample: self.sample,
            super_conditioning: self.condition_scale != 1.0,
            top_k: if self.sample { self.top_k } else { None },
            top_p: self.sample && self.top_p.is_some_and(|p| p < 1.0),
        }
    }
}

/// The settings that change the sampler's program (one compile each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SettingsShape {
    pub sample: bool,
    /// Runs the unconditional pass beside the conditional one.
    pub super_conditioning: bool,
    pub top_k: Option<usize>,
    pub top_p: bool,
}
