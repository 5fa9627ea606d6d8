//! Global-norm gradient clipping.

use crate::graph::{optimization_barrier, GraphError, Result, Tensor};
use crate::DType;

/// Gradients up to this many elements share one concatenated sum of squares.
/// On a CPU every separate reduction is a kernel launch, which costs more than
/// a small tensor's arithmetic; large ones are reduced where they are, as a
/// concatenation would copy them. The barrier keeps XLA from splitting the
/// sum of the concatenation back into one reduction per operand.
const SHARED_REDUCTION_MAX_ELEMENTS: i64 = 1 << 16;

/// The L2 norm of all gradients together, in f32.
pub fn global_norm(grads: &[Tensor]) -> Result<Tensor> {
    let Some(first) = grads.first() else {
        return Err(GraphError::Invalid("no gradients to take the norm of".into()));
    };
    let (small, large): (Vec<&Tensor>, Vec<&Tensor>) = grads.iter().partition(|g| g.ty().numel() <= SHARED_REDUCTION_MAX_ELEMENTS);
    let mut total = first.graph().scalar(0.0, DType::F32);
    if !small.is_empty() {
        let flat = small.iter().map(|g| g.cast(DType::F32)?.reshape(&[g.ty().numel()])).collect::<Result<Vec<_>>>()?;
        let joined = Tensor::concat(&flat.iter().collect::<Vec<_>>(), 0)?;
        total = optimization_barrier(&[&joined])?.remove(0).square()?.sum_all()?;
    }
    for g in large {
        total = total.add(&g.cast(DType::F32)?.square()?.sum_all()?)?;
    }
    total.sqrt()
}

/// Scales all gradients by `min(1, max_norm / norm)`; returns them and the norm before clipping.
pub fn clip_by_global_norm(grads: &[Tensor], max_norm: f64) -> Result<(Vec<Tensor>, Tensor)> {
    let norm = global_norm(grads)?;
    if max_norm <= 0.0 {
        // The updates wait for every gradient, as clipping's scale makes them
        // do: otherwise XLA may schedule a parameter's update before the
        // backward pass last reads that parameter, and then copies each
        // donated parameter to keep its old value.
        let mut fenced: Vec<&Tensor> = grads.iter().collect();
        fenced.push(&norm);
        let mut out = optimization_barrier(&fenced)?;
        let norm = out.pop().expect("the barrier returns each operand");
        return Ok((out, norm));
    }
    let scale = norm.scalar_like(max_norm).div(&norm.add_scalar(1e-6)?)?.minimum(&norm.scalar_like(1.0))?;
    let clipped = grads.iter().map(|g| g.mul(&scale.cast(g.dtype())?)).collect::<Result<Vec<_>>>()?;
    Ok((clipped, norm))
}
