//! The VQGAN building blocks (taming-transformers' `diffusionmodules/model.py`),
//! NHWC activations and flax-named HWIO kernels as in vqgan-jax.

use crate::graph::{Result, Tensor};
use crate::nn::{Init, VarBuilder};
use crate::DType;

/// vqgan-jax's GroupNorm epsilon.
const NORM_EPS: f64 = 1e-6;

/// `x * sigmoid(x)`.
pub fn swish(x: &Tensor) -> Result<Tensor> {
    x.mul(&x.sigmoid()?)
}

/// A `k x k` convolution with bias (`kernel [k, k, c_in, c_out]`, `bias [c_out]`).
/// Weights start LeCun-normal, flax's default for `nn.Conv`.
pub fn conv(vb: &VarBuilder, x: &Tensor, c_in: i64, c_out: i64, k: i64, stride: i64, padding: [(i64, i64); 2]) -> Result<Tensor> {
    let std = 1.0 / ((k * k * c_in) as f64).sqrt();
    let kernel = vb.get("kernel", &[k, k, c_in, c_out], Init::Normal(std))?;
    let bias = vb.get("bias", &[c_out], Init::Zeros)?;
    x.conv2d(&kernel, &[stride, stride], &padding, &[1, 1], &[1, 1], 1)?.add(&bias)
}

/// 3x3 convolution, stride 1, one pixel of zero padding.
pub fn conv3(vb: &VarBuilder, x: &Tensor, c_in: i64, c_out: i64) -> Result<Tensor> {
    conv(vb, x, c_in, c_out, 3, 1, [(1, 1), (1, 1)])
}

/// 1x1 convolution.
pub fn conv1(vb: &VarBuilder, x: &Tensor, c_in: i64, c_out: i64) -> Result<Tensor> {
    conv(vb, x, c_in, c_out, 1, 1, [(0, 0), (0, 0)])
}

/// GroupNorm over `groups` channel groups of NHWC `x`, with `scale` and `bias`.
pub fn group_norm(vb: &VarBuilder, x: &Tensor, channels: i64, groups: i64) -> Result<Tensor> {
    let s = x.shape().to_vec();
    let (n, h, w) = (s[0], s[1], s[2]);
    let grouped = x.cast(DType::F32)?.reshape(&[n, h, w, groups, channels / groups])?;
    let mean = grouped.mean(&[1, 2, 4], true)?;
    let centered = grouped.sub(&mean)?;
    let var = centered.square()?.mean(&[1, 2, 4], true)?;
    let normed = centered.mul(&var.add_scalar(NORM_EPS)?.rsqrt()?)?.reshape(&[n, h, w, channels])?;
    let scale = vb.get("scale", &[channels], Init::Ones)?;
    let bias = vb.get("bias", &[channels], Init::Zeros)?;
    normed.mul(&scale)?.add(&bias)?.cast(x.dtype())
}

/// Pre-activation residual block: norm, swish, conv, norm, swish, conv, plus a
/// 1x1 `nin_shortcut` of the input when the channel count changes.
pub fn resnet_block(vb: &VarBuilder, x: &Tensor, c_in: i64, c_out: i64, groups: i64) -> Result<Tensor> {
    let h = swish(&group_norm(&vb.pp("norm1"), x, c_in, groups)?)?;
    let h = conv3(&vb.pp("conv1"), &h, c_in, c_out)?;
    let h = swish(&group_norm(&vb.pp("norm2"), &h, c_out, groups)?)?;
    let h = conv3(&vb.pp("conv2"), &h, c_out, c_out)?;
    let residual = if c_in == c_out { x.clone() } else { conv1(&vb.pp("nin_shortcut"), x, c_in, c_out)? };
    h.add(&residual)
}

/// Single-head self-attention over all pixels, with 1x1-conv projections.
pub fn attn_block(vb: &VarBuilder, x: &Tensor, c: i64, groups: i64) -> Result<Tensor> {
    let s = x.shape().to_vec();
    let (n, hw) = (s[0], s[1] * s[2]);
    let h = group_norm(&vb.pp("norm"), x, c, groups)?;
    let q = conv1(&vb.pp("q"), &h, c, c)?.reshape(&[n, hw, c])?;
    let k = conv1(&vb.pp("k"), &h, c, c)?.reshape(&[n, hw, c])?;
    let v = conv1(&vb.pp("v"), &h, c, c)?.reshape(&[n, hw, c])?;
    let scores = q.dot_general(&k, &[0], &[0], &[2], &[2])?.scale(1.0 / (c as f64).sqrt())?; // [N, q, k]
    let weights = scores.softmax(2)?;
    let out = weights.dot_general(&v, &[0], &[0], &[2], &[1])?.reshape(&s)?; // [N, q, c]
    conv1(&vb.pp("proj_out"), &out, c, c)?.add(x)
}

/// Halves H and W: taming pads one zero row and column at the bottom/right,
/// then applies a 3x3 stride-2 convolution without further padding.
pub fn downsample(vb: &VarBuilder, x: &Tensor, c: i64) -> Result<Tensor> {
    conv(&vb.pp("conv"), x, c, c, 3, 2, [(0, 1), (0, 1)])
}

/// Doubles H and W by nearest-neighbour repetition, then a 3x3 convolution.
pub fn upsample(vb: &VarBuilder, x: &Tensor, c: i64) -> Result<Tensor> {
    conv3(&vb.pp("conv"), &x.upsample_nearest2x()?, c, c)
}
