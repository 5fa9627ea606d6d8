//! Global-norm gradient clipping.

use crate::graph::{Result, Tensor};

/// Scales all gradients by `min(1, max_norm / norm)`; returns them and the norm before clipping.
pub fn clip_by_global_norm(grads: &[Tensor], max_norm: f64) -> Result<(Vec<Tensor>, Tensor)> {
    let Some(first) = grads.first() else {
        return Err(crate::graph::GraphError::Invalid("no gradients to clip".into()));
    };
    let mut total = first.graph().scalar(0.0, crate::DType::F32);
    for g in grads {
        total = total.add(&g.cast(crate::DType::F32)?.square()?.sum_all()?)?;
    }
    let norm = total.sqrt()?;
    if max_norm <= 0.0 {
        return Ok((grads.to_vec(), norm));
    }
    let scale = norm.scalar_like(max_norm).div(&norm.add_scalar(1e-6)?)?.minimum(&norm.scalar_like(1.0))?;
    let clipped = grads.iter().map(|g| g.mul(&scale.cast(g.dtype())?)).collect::<Result<Vec<_>>>()?;
    Ok((clipped, norm))
}
