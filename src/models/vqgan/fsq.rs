//! Finite scalar quantization (Mentzer et al., "Finite Scalar Quantization:
//! VQ-VAE Made Simple", 2023), the alternative to the learnt codebook: each
//! of the latent's `levels.len()` channels is squashed into a bounded range
//! and rounded to one of `levels[i]` values, and the token is the
//! mixed-radix number of those digits. There is no codebook to collapse, so
//! every code stays reachable even in short trainings (the learnt codebook of
//! a small model left most object patches on one code in the shapes
//! pipeline), and no codebook loss beyond an optional commitment term.

use crate::graph::{Result, Tensor};
use crate::host::HostTensor;
use crate::DType;

/// Per-channel constants of the squashing, as `[D]` f32 tensors.
struct Levels {
    /// `(L - 1) / 2`, slightly shrunk so `tanh` never reaches a rounding boundary.
    half_range: Vec<f32>,
    /// 0.5 for even `L` (whose grid is not centred on 0), else 0.
    offset: Vec<f32>,
    /// `tan(offset / half_range)`, the reference implementation's shift of
    /// even grids (finite for every `L >= 2`, unlike `atanh` at `L = 2`).
    shift: Vec<f32>,
    /// `L / 2` (integer division): digit = value + half_width.
    half_width: Vec<f32>,
    /// Place value of each digit in the token: `prod(L[..i])`.
    basis: Vec<f32>,
}

impl Levels {
    fn new(levels: &[i64]) -> Levels {
        let half_range: Vec<f32> = levels.iter().map(|&l| (l as f32 - 1.0) * (1.0 - 1e-3) / 2.0).collect();
        let offset: Vec<f32> = levels.iter().map(|&l| if l % 2 == 0 { 0.5 } else { 0.0 }).collect();
        let shift = offset.iter().zip(&half_range).map(|(o, h)| (o / h).tan()).collect();
        let half_width = levels.iter().map(|&l| (l / 2) as f32).collect();
        let basis = levels.iter().scan(1i64, |place, &l| {
            let p = *place;
            *place *= l;
            Some(p as f32)
        });
        Levels { half_range, offset, shift, half_width, basis: basis.collect() }
    }
}

fn vector(like: &Tensor, values: &[f32]) -> Result<Tensor> {
    let host = HostTensor::new(&[values.len() as i64], values).map_err(|e| crate::graph::GraphError::op("fsq", e.to_string()))?;
    Ok(like.graph.constant(host))
}

/// Latents snapped to the grid of `prod(levels)` codes.
pub struct Snapped {
    /// The quantized latents `[..., D]` scaled to [-1, 1], with the
    /// straight-through gradient.
    pub z_q: Tensor,
    /// `[...]` (i32).
    pub tokens: Tensor,
    /// `mean |z - sg(z_q)|^2` on the same [-1, 1] scale: how far the latents
    /// sit from the middle of their grid cells.
    pub commitment: Tensor,
}

/// Codes of `prod(levels)` for latents `z [..., D]` (`D = levels.len()`).
pub fn quantize(z: &Tensor, levels: &[i64]) -> Result<Snapped> {
    let l = Levels::new(levels);
    let z = z.cast(DType::F32)?;
    let bounded = z.add(&vector(&z, &l.shift)?)?.tanh()?.mul(&vector(&z, &l.half_range)?)?.sub(&vector(&z, &l.offset)?)?;
    let grid_point = bounded.round()?.stop_gradient()?;
    let rounded = bounded.add(&grid_point.sub(&bounded)?.stop_gradient()?)?;
    let half_width = vector(&z, &l.half_width)?;
    let digits = rounded.add(&half_width)?.stop_gradient()?;
    let last = z.rank() as i64 - 1;
    let tokens = digits.mul(&vector(&z, &l.basis)?)?.sum(&[last], false)?.round()?.cast(DType::I32)?;
    let commitment = bounded.sub(&grid_point)?.div(&half_width)?.square()?.mean_all()?;
    Ok(Snapped { z_q: rounded.div(&half_width)?, tokens, commitment })
}

/// The quantized latents `[..., D]` in [-1, 1] of tokens `[...]` (i32).
pub fn lookup(tokens: &Tensor, levels: &[i64]) -> Result<Tensor> {
    let l = Levels::new(levels);
    let t = tokens.cast(DType::F32)?.unsqueeze(tokens.rank() as i64)?;
    let lv: Vec<f32> = levels.iter().map(|&v| v as f32).collect();
    let digits = t.div(&vector(&t, &l.basis)?)?.floor()?.rem(&vector(&t, &lv)?)?;
    let half_width = vector(&t, &l.half_width)?;
    digits.sub(&half_width)?.div(&half_width)
}
