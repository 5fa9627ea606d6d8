//! From the decoder's logits to the next image token, inside the compiled
//! loop: super-conditioning, then (when sampling) temperature, top-k, top-p
//! and a per-row categorical draw, in the order of dalle-mini's (and
//! transformers') logits processors and warpers.

use super::settings::SettingsShape;
use crate::graph::{random, Result, Tensor};
use crate::DType;

/// Stands in for minus infinity: finite, so no NaN can come from it.
const REMOVED: f64 = f32::MIN as f64;

/// The run-time sampling inputs of the program (f32 scalars, u32 keys).
pub struct SamplingInputs<'a> {
    /// Per-row PRNG keys `u32[B, 2]`.
    pub keys: &'a Tensor,
    /// The image position being generated (i32 scalar), folded into the draw.
    pub position: &'a Tensor,
    pub temperature: &'a Tensor,
    pub condition_scale: &'a Tensor,
    pub top_p: &'a Tensor,
}

/// Combines conditional and unconditional logits: `uncond + scale * (cond - uncond)`.
/// `logits [2B, V]` hold the conditional rows first.
pub fn super_condition(logits: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let b = logits.dim(0)? / 2;
    let cond = logits.narrow(0, 0, b)?;
    let uncond = logits.narrow(0, b, b)?;
    uncond.add(&cond.sub(&uncond)?.mul(&scale.broadcast_to(cond.shape())?)?)
}

/// Logits below the `k`-th largest of their row are removed.
fn keep_top_k(logits: &Tensor, k: usize) -> Result<Tensor> {
    let (values, _) = logits.top_k(k as i64)?;
    let kth = values.narrow(-1, k as i64 - 1, 1)?.broadcast_to(logits.shape())?;
    Tensor::select(&logits.lt(&kth)?, &logits.full_like(REMOVED)?, logits)
}

/// Nucleus filtering: keeps the most likely tokens until their probability
/// reaches `p`, the token that crosses it included (so at least one).
fn keep_top_p(logits: &Tensor, p: &Tensor) -> Result<Tensor> {
    let (b, v) = (logits.dim(0)?, logits.dim(1)?);
    let (sorted, _) = logits.sort(-1, true)?;
    let probs = sorted.softmax(-1)?;
    let before = probs.cumsum(-1)?.sub(&probs)?; // probability of the more likely tokens
    let kept = before.lt(&p.broadcast_to(&[b, v])?)?.cast(DType::I32)?.sum(&[-1], true)?;
    let last = kept.add_scalar(-1.0)?.maximum(&kept.zeros_like()?)?;
    let cutoff = sorted.take_along_axis(&last, -1)?.broadcast_to(&[b, v])?;
    Tensor::select(&logits.lt(&cutoff)?, &logits.full_like(REMOVED)?, logits)
}

/// The next token `i32[B]` for combined logits `[B, V]` (V = the image
/// vocabulary: the decoder-start column is dropped before this).
pub fn next_token(logits: &Tensor, shape: SettingsShape, inputs: &SamplingInputs) -> Result<Tensor> {
    let logits = logits.cast(DType::F32)?;
    if !shape.sample {
        return logits.argmax(-1);
    }
    let mut logits = logits.div(&inputs.temperature.broadcast_to(logits.shape())?)?;
    if let Some(k) = shape.top_k {
        logits = keep_top_k(&logits, k)?;
    }
    if shape.top_p {
        logits = keep_top_p(&logits, inputs.top_p)?;
    }
    random::categorical_rows(inputs.keys, &logits, &inputs.position.cast(DType::U32)?)
}
