//! Reductions over a set of axes with an identity value (`stablehlo.reduce`).

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic_with_regions, i64_array, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Prod,
    Max,
    Min,
    And,
    Or,
}

impl ReduceKind {
    /// The scalar combiner, also used by `all_reduce` and `scatter`.
    pub fn combiner(self) -> &'static str {
        match self {
            ReduceKind::Sum => "stablehlo.add",
            ReduceKind::Prod => "stablehlo.multiply",
            ReduceKind::Max => "stablehlo.maximum",
            ReduceKind::Min => "stablehlo.minimum",
            ReduceKind::And => "stablehlo.and",
            ReduceKind::Or => "stablehlo.or",
        }
    }

    /// The identity element for `dtype`.
    pub fn identity(self, dtype: DType) -> f64 {
        match self {
            ReduceKind::Sum | ReduceKind::Or => 0.0,
            ReduceKind::Prod | ReduceKind::And => 1.0,
            ReduceKind::Max => lowest(dtype),
            ReduceKind::Min => -lowest(dtype),
        }
    }
}

fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::Bool | DType::U8 | DType::U32 => 0.0,
        DType::I32 => i32::MIN as f64,
        DType::I64 => i64::MIN as f64,
        _ => f64::NEG_INFINITY,
    }
}

/// Inputs: the operand and a scalar init value (the identity).
#[derive(Debug)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Vec<usize>,
}

impl Primitive for Reduce {
    fn name(&self) -> String {
        format!("reduce_{:?}", self.kind).to_lowercase()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, init) = (&inputs[0], &inputs[1]);
        if init.rank() != 0 || init.dtype != x.dtype {
            op_bail!(self.name(), "init must be a {} scalar, got {init}", x.dtype);
        }
        for (i, a) in self.axes.iter().enumerate() {
            if *a >= x.rank() || self.axes[..i].contains(a) {
                op_bail!(self.name(), "axis {a} is out of range or repeated for {x}");
            }
        }
        if matches!(self.kind, ReduceKind::And | ReduceKind::Or) && x.dtype.is_float() {
            op_bail!(self.name(), "needs bool or integer operands, got {x}");
        }
        let shape = (0..x.rank()).filter(|d| !self.axes.contains(d)).map(|d| x.shape[d]).collect();
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let region = cx.scalar_region(self.kind.combiner(), &ins[1]);
        let mut dims: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        dims.sort_unstable();
        Ok(generic_with_regions("stablehlo.reduce", args, ins, outs, &format!("dimensions = {}", i64_array(&dims)), &[region]))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (x, y) = (&ins[0], &outs[0]);
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        let kept: Vec<usize> = (0..x.rank()).filter(|d| !self.axes.contains(d)).collect();
        let ct_b = ct.broadcast_in_dim(x.shape(), &kept)?;
        let g = match self.kind {
            ReduceKind::Sum => ct_b,
            ReduceKind::Prod => ct_b.mul(&y.broadcast_in_dim(x.shape(), &kept)?)?.div(x)?,
            ReduceKind::Max | ReduceKind::Min => {
                // Split the cotangent evenly between tied extremes.
                let hit = x.eq(&y.broadcast_in_dim(x.shape(), &kept)?)?.cast(x.dtype())?;
                let count = hit.sum(&self.axes.iter().map(|&a| a as i64).collect::<Vec<_>>(), false)?;
                ct_b.mul(&hit)?.div(&count.broadcast_in_dim(x.shape(), &kept)?)?
            }
            ReduceKind::And | ReduceKind::Or => return Ok(vec![None, None]),
        };
        Ok(vec![Some(g), None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
