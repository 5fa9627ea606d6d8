//! Primitives that move elements without arithmetic: reshape, transpose,
//! broadcast, slice, pad, concatenate, reverse.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic, i64_array, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use std::any::Any;

macro_rules! impl_any {
    () => {
        fn as_any(&self) -> &dyn Any {
            self
        }
    };
}

#[derive(Debug)]
pub struct Reshape(pub Vec<i64>);

impl Primitive for Reshape {
    fn name(&self) -> String {
        "reshape".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        if self.0.iter().any(|d| *d < 0) || self.0.iter().product::<i64>() != x.numel() {
            op_bail!("reshape", "cannot reshape {x} ({} elements) to {:?}", x.numel(), self.0);
        }
        Ok(vec![x.with_shape(self.0.clone())])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.reshape", args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![cts[0].as_ref().map(|ct| ct.reshape(ins[0].shape())).transpose()?])
    }
    impl_any!();
}

#[derive(Debug)]
pub struct Transpose(pub Vec<usize>);

impl Primitive for Transpose {
    fn name(&self) -> String {
        "transpose".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        let mut seen = vec![false; x.rank()];
        if self.0.len() != x.rank() || self.0.iter().any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true)) {
            op_bail!("transpose", "permutation {:?} is not a permutation of the {} axes of {x}", self.0, x.rank());
        }
        Ok(vec![x.with_shape(self.0.iter().map(|&p| x.shape[p]).collect())])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let perm: Vec<i64> = self.0.iter().map(|&p| p as i64).collect();
        Ok(generic("stablehlo.transpose", args, ins, outs, &format!("permutation = {}", i64_array(&perm))))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(vec![cts[0].as_ref().map(|ct| ct.transpose(&inverse)).transpose()?])
    }
    impl_any!();
}

/// Operand dimension `i` becomes output dimension `dims[i]` (size equal, or 1 to broadcast).
#[derive(Debug)]
pub struct BroadcastInDim {
    pub shape: Vec<i64>,
    pub dims: Vec<usize>,
}

impl Primitive for BroadcastInDim {
    fn name(&self) -> String {
        "broadcast_in_dim".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        if self.dims.len() != x.rank() {
            op_bail!("broadcast_in_dim", "{x} needs {} mapped dimensions, got {:?}", x.rank(), self.dims);
        }
        for (i, &d) in self.dims.iter().enumerate() {
            if d >= self.shape.len() || (i > 0 && d <= self.dims[i - 1]) {
                op_bail!("broadcast_in_dim", "dimensions {:?} must be increasing and inside {:?}", self.dims, self.shape);
            }
            if x.shape[i] != 1 && x.shape[i] != self.shape[d] {
                op_bail!("broadcast_in_dim", "cannot broadcast {x} to {:?}: dimension {i} has size {}", self.shape, x.shape[i]);
            }
        }
        Ok(vec![x.with_shape(self.shape.clone())])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let dims: Vec<i64> = self.dims.iter().map(|&d| d as i64).collect();
        Ok(generic("stablehlo.broadcast_in_dim", args, ins, outs, &format!("broadcast_dimensions = {}", i64_array(&dims))))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        let mut summed: Vec<i64> = (0..self.shape.len()).filter(|d| !self.dims.contains(d)).map(|d| d as i64).collect();
        for (i, &d) in self.dims.iter().enumerate() {
            if x.shape()[i] == 1 && self.shape[d] != 1 {
                summed.push(d as i64);
            }
        }
        summed.sort_unstable();
        Ok(vec![Some(ct.sum(&summed, false)?.reshape(x.shape())?)])
    }
    impl_any!();
}

#[derive(Debug)]
pub struct Slice {
    pub start: Vec<i64>,
    pub limit: Vec<i64>,
    pub strides: Vec<i64>,
}

impl Primitive for Slice {
    fn name(&self) -> String {
        "slice".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        let r = x.rank();
        if self.start.len() != r || self.limit.len() != r || self.strides.len() != r {
            op_bail!("slice", "start {:?}, limit {:?}, strides {:?} must each have {r} entries for {x}", self.start, self.limit, self.strides);
        }
        let mut shape = Vec::with_capacity(r);
        for d in 0..r {
            let (s, l, st) = (self.start[d], self.limit[d], self.strides[d]);
            if s < 0 || l > x.shape[d] || s > l || st < 1 {
                op_bail!("slice", "[{s}:{l}:{st}] is not a valid range of dimension {d} (size {}) of {x}", x.shape[d]);
            }
            shape.push((l - s + st - 1) / st);
        }
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let attrs = format!(
            "start_indices = {}, limit_indices = {}, strides = {}",
            i64_array(&self.start),
            i64_array(&self.limit),
            i64_array(&self.strides)
        );
        Ok(generic("stablehlo.slice", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        let out = outs[0].shape();
        let interior: Vec<i64> = self.strides.iter().map(|s| s - 1).collect();
        let high: Vec<i64> = (0..x.rank())
            .map(|d| if out[d] == 0 { x.shape()[d] - self.start[d] } else { x.shape()[d] - (self.start[d] + (out[d] - 1) * self.strides[d] + 1) })
            .collect();
        let zero = ct.graph().scalar(0.0, ct.dtype());
        Ok(vec![Some(ct.pad(&zero, &self.start, &high, &interior)?)])
    }
    impl_any!();
}

/// Inputs: operand and a scalar padding value. Negative low/high padding crops.
#[derive(Debug)]
pub struct Pad {
    pub low: Vec<i64>,
    pub high: Vec<i64>,
    pub interior: Vec<i64>,
}

impl Primitive for Pad {
    fn name(&self) -> String {
        "pad".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, v) = (&inputs[0], &inputs[1]);
        let r = x.rank();
        if v.rank() != 0 || v.dtype != x.dtype {
            op_bail!("pad", "the padding value must be a {} scalar, got {v}", x.dtype);
        }
        if self.low.len() != r || self.high.len() != r || self.interior.len() != r {
            op_bail!("pad", "low {:?}, high {:?}, interior {:?} must each have {r} entries for {x}", self.low, self.high, self.interior);
        }
        let mut shape = Vec::with_capacity(r);
        for d in 0..r {
            if self.interior[d] < 0 {
                op_bail!("pad", "interior padding {} of dimension {d} is negative", self.interior[d]);
            }
            let n = x.shape[d];
            let size = self.low[d] + self.high[d] + n + (n - 1).max(0) * self.interior[d];
            if size < 0 {
                op_bail!("pad", "padding low {:?} high {:?} leaves dimension {d} of {x} with negative size", self.low, self.high);
            }
            shape.push(size);
        }
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let attrs = format!(
            "edge_padding_low = {}, edge_padding_high = {}, interior_padding = {}",
            i64_array(&self.low),
            i64_array(&self.high),
            i64_array(&self.interior)
        );
        Ok(generic("stablehlo.pad", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None, None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        let r = x.rank();
        // Undo cropping first, then take every (interior+1)-th element after `low`.
        let zero = ct.graph().scalar(0.0, ct.dtype());
        let grow_low: Vec<i64> = self.low.iter().map(|l| (-l).max(0)).collect();
        let grow_high: Vec<i64> = self.high.iter().map(|h| (-h).max(0)).collect();
        let ct2 = ct.pad(&zero, &grow_low, &grow_high, &vec![0; r])?;
        let start: Vec<i64> = self.low.iter().map(|l| (*l).max(0)).collect();
        let strides: Vec<i64> = self.interior.iter().map(|i| i + 1).collect();
        let limit: Vec<i64> =
            (0..r).map(|d| if x.shape()[d] == 0 { start[d] } else { start[d] + (x.shape()[d] - 1) * strides[d] + 1 }).collect();
        let dx = ct2.slice(&start, &limit, &strides)?;
        let dv = ct.sum_all()?.sub(&dx.sum_all()?)?;
        Ok(vec![Some(dx), Some(dv)])
    }
    impl_any!();
}

#[derive(Debug)]
pub struct Concatenate(pub usize);

impl Primitive for Concatenate {
    fn name(&self) -> String {
        "concatenate".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let Some(first) = inputs.first() else { op_bail!("concatenate", "needs at least one operand") };
        let axis = self.0;
        if axis >= first.rank() {
            op_bail!("concatenate", "axis {axis} is out of range for {first}");
        }
        let mut shape = first.shape.clone();
        for t in &inputs[1..] {
            let mut same = t.rank() == first.rank() && t.dtype == first.dtype;
            same &= (0..first.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
            if !same {
                op_bail!("concatenate", "cannot join {first} and {t} along axis {axis}");
            }
            shape[axis] += t.shape[axis];
        }
        Ok(vec![first.with_shape(shape)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.concatenate", args, ins, outs, &format!("dimension = {} : i64", self.0)))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let Some(ct) = &cts[0] else { return Ok(vec![None; ins.len()]) };
        let mut offset = 0;
        let mut out = Vec::with_capacity(ins.len());
        for x in ins {
            let n = x.shape()[self.0];
            out.push(if x.dtype().is_float() { Some(ct.narrow(self.0 as i64, offset, n)?) } else { None });
            offset += n;
        }
        Ok(out)
    }
    impl_any!();
}

#[derive(Debug)]
pub struct Reverse(pub Vec<usize>);

impl Primitive for Reverse {
    fn name(&self) -> String {
        "reverse".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        if let Some(d) = self.0.iter().find(|&&d| d >= x.rank()) {
            op_bail!("reverse", "axis {d} is out of range for {x}");
        }
        Ok(vec![x.clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let dims: Vec<i64> = self.0.iter().map(|&d| d as i64).collect();
        Ok(generic("stablehlo.reverse", args, ins, outs, &format!("dimensions = {}", i64_array(&dims))))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let dims: Vec<i64> = self.0.iter().map(|&d| d as i64).collect();
        Ok(vec![cts[0].as_ref().map(|ct| ct.reverse(&dims)).transpose()?])
    }
    impl_any!();
}
