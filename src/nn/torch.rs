//! Layers with PyTorch's parameter names and layouts (`Linear.weight` is
//! `[out, in]`, `LayerNorm.weight`/`bias`, `Embedding.weight`), so checkpoints
//! saved from PyTorch models load without renaming or transposing.

use super::init::Init;
use super::layers::Precision;
use super::vars::VarBuilder;
use crate::graph::{Result, Tensor};
use crate::DType;

/// `x @ weight.T (+ bias)` with a PyTorch `[out, in]` weight.
pub fn torch_linear(vb: &VarBuilder, x: &Tensor, d_in: i64, d_out: i64, bias: bool, std: f64, p: Precision) -> Result<Tensor> {
    let w = vb.get("weight", &[d_out, d_in], Init::Normal(std))?;
    // Contract x's last axis with the weight's `in` axis: no transpose is materialised.
    let y = x.dot_general(&p.weight(&w)?, &[], &[], &[x.rank() - 1], &[1])?;
    if !bias {
        return Ok(y);
    }
    y.add(&p.weight(&vb.get("bias", &[d_out], Init::Zeros)?)?)
}

/// Layer normalisation over the last axis with `weight` and `bias`, computed in f32.
pub fn torch_layer_norm(vb: &VarBuilder, x: &Tensor, dim: i64, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.cast(DType::F32)?;
    let mean = x32.mean(&[-1], true)?;
    let centered = x32.sub(&mean)?;
    let var = centered.square()?.mean(&[-1], true)?;
    let y = centered.mul(&var.add_scalar(eps)?.rsqrt()?)?;
    let y = y.mul(&vb.get("weight", &[dim], Init::Ones)?.cast(DType::F32)?)?;
    y.add(&vb.get("bias", &[dim], Init::Zeros)?.cast(DType::F32)?)?.cast(dtype)
}

/// Rows of the `[vocab, dim]` table `weight` for integer `ids`.
pub fn torch_embedding(vb: &VarBuilder, ids: &Tensor, vocab: i64, dim: i64, std: f64, p: Precision) -> Result<Tensor> {
    let table = vb.get("weight", &[vocab, dim], Init::Normal(std))?;
    p.weight(&table)?.take(ids, 0)
}

/// OpenAI CLIP's GELU approximation `x * sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.mul(&x.scale(1.702)?.sigmoid()?)
}
