//! Layers as plain functions over graph tensors and named parameters.

use super::init::Init;
use super::vars::VarBuilder;
use crate::graph::{Result, Tensor};
use crate::DType;

/// Compute dtype and the dtype of the stored (master) weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    pub compute: DType,
}

impl Precision {
    pub fn f32() -> Self {
        Precision { compute: DType::F32 }
    }
    /// Casts a stored weight to the compute dtype.
    pub fn weight(&self, w: &Tensor) -> Result<Tensor> {
        w.cast(self.compute)
    }
}

/// `x @ kernel` with a flax-style `[in, out]` kernel, no bias.
pub fn linear(vb: &VarBuilder, x: &Tensor, d_in: i64, d_out: i64, std: f64, p: Precision) -> Result<Tensor> {
    let w = vb.get("kernel", &[d_in, d_out], Init::Normal(std))?;
    x.matmul(&p.weight(&w)?)
}

/// Layer normalisation over the last axis, optional scale and bias, computed in f32.
pub fn layer_norm(vb: &VarBuilder, x: &Tensor, dim: i64, use_scale: bool, use_bias: bool, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.cast(DType::F32)?;
    let mean = x32.mean(&[-1], true)?;
    let centered = x32.sub(&mean)?;
    let var = centered.square()?.mean(&[-1], true)?;
    let mut y = centered.mul(&var.add_scalar(eps)?.rsqrt()?)?;
    if use_scale {
        y = y.mul(&vb.get("scale", &[dim], Init::Ones)?.cast(DType::F32)?)?;
    }
    if use_bias {
        y = y.add(&vb.get("bias", &[dim], Init::Zeros)?.cast(DType::F32)?)?;
    }
    y.cast(dtype)
}

/// Rows of the `[vocab, dim]` table `embedding` for integer `ids`.
pub fn embedding(vb: &VarBuilder, ids: &Tensor, vocab: i64, dim: i64, std: f64, p: Precision) -> Result<Tensor> {
    let table = vb.get("embedding", &[vocab, dim], Init::Normal(std))?;
    p.weight(&table)?.take(ids, 0)
}

/// Exact GELU: `x * Φ(x)` with the error function.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let half = x.scale(0.5)?;
    half.mul(&x.scale(std::f64::consts::FRAC_1_SQRT_2)?.erf()?.add_scalar(1.0)?)
}

/// Softmax cross-entropy of `logits [..., V]` against integer `labels [...]`
/// (each in `0..V`), averaged: `logsumexp(logits) - logits[label]`. Gathering
/// the label's logit instead of multiplying the log-softmax by a one-hot
/// keeps the `[..., V]` one-hot and log-softmax (16385 wide for DalleBart)
/// out of the program.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = logits.cast(DType::F32)?;
    let picked = logits.take_along_axis(&labels.unsqueeze(labels.rank() as i64)?, -1)?;
    logits.logsumexp(-1)?.sub(&picked)?.mean_all()
}
