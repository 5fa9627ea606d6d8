//! Sorting along an axis (`stablehlo.sort`), and what is built on it:
//! `sort` returning values and their original indices, `top_k`, and the
//! running sum `cumsum` used by nucleus (top-p) sampling.
//!
//! The primitive always sorts the keys together with an index operand, so the
//! permutation is at hand for the VJP (and XLA's CPU and GPU compilers turn a
//! sort-with-iota followed by a slice into their fast top-k kernels).

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, GraphError, Result};
use crate::graph::primitive::{generic_with_regions, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

/// Inputs: keys and i32 indices of the same shape. Outputs: both, permuted so
/// the keys are in order along `axis` (stable: ties keep their index order).
#[derive(Debug)]
pub struct Sort {
    pub axis: usize,
    pub descending: bool,
}

impl Primitive for Sort {
    fn name(&self) -> String {
        "sort".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let [keys, idx] = inputs else { op_bail!("sort", "takes keys and indices, got {} operands", inputs.len()) };
        if self.axis >= keys.rank() {
            op_bail!("sort", "axis {} is out of range for {keys}", self.axis);
        }
        if idx.dtype != DType::I32 || idx.shape != keys.shape {
            op_bail!("sort", "indices must be i32 of the keys' shape {keys}, got {idx}");
        }
        if keys.dtype == DType::Bool {
            op_bail!("sort", "cannot order bool keys {keys}");
        }
        Ok(vec![keys.clone(), idx.clone()])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let key = TensorType::scalar(ins[0].dtype).mlir();
        let index = TensorType::scalar(DType::I32).mlir();
        let (a, b, ia, ib, r) = (cx.fresh(), cx.fresh(), cx.fresh(), cx.fresh(), cx.fresh());
        let dir = if self.descending { "GT" } else { "LT" };
        let kind = if ins[0].dtype.is_float() {
            "FLOAT"
        } else if matches!(ins[0].dtype, DType::U8 | DType::U32) {
            "UNSIGNED"
        } else {
            "SIGNED"
        };
        let region = format!(
            "{{\n  ^bb0({a}: {key}, {b}: {key}, {ia}: {index}, {ib}: {index}):\n    {r} = \"stablehlo.compare\"({a}, {b}) {{comparison_direction = #stablehlo<comparison_direction {dir}>, compare_type = #stablehlo<comparison_type {kind}>}} : ({key}, {key}) -> tensor<i1>\n    \"stablehlo.return\"({r}) : (tensor<i1>) -> ()\n}}"
        );
        let attrs = format!("dimension = {} : i64, is_stable = true", self.axis);
        Ok(generic_with_regions("stablehlo.sort", args, ins, outs, &attrs, &[region]))
    }
    fn vjp(&self, _: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        if !outs[0].dtype().is_float() {
            return Ok(vec![None, None]);
        }
        // The sorted value at j came from perm[j]; the inverse permutation sends
        // each input position to where its value went.
        let perm = &outs[1];
        let (_, inverse) = sort_with_indices(perm, self.axis as i64, false)?;
        Ok(vec![Some(ct.take_along_axis(&inverse, self.axis as i64)?), None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn sort_with_indices(x: &Tensor, axis: i64, descending: bool) -> Result<(Tensor, Tensor)> {
    let a = x.axis(axis).map_err(|e| GraphError::op("sort", e.to_string()))?;
    let idx = x.graph().iota(DType::I32, x.shape(), a)?;
    let out = x.graph().apply(Sort { axis: a, descending }, &[x, &idx])?;
    Ok((out[0].clone(), out[1].clone()))
}

impl Tensor {
    /// Values sorted along `axis` and the i32 positions they came from. Stable:
    /// equal values keep their order.
    pub fn sort(&self, axis: i64, descending: bool) -> Result<(Tensor, Tensor)> {
        sort_with_indices(self, axis, descending)
    }

    /// The `k` largest values along the last axis, largest first, and their i32
    /// positions (ties: the lower position first, as `argmax`).
    pub fn top_k(&self, k: i64) -> Result<(Tensor, Tensor)> {
        let n = self.dim(-1)?;
        if k < 1 || k > n {
            return Err(GraphError::op("top_k", format!("k must be in 1..={n} for {:?}, got {k}", self.ty())));
        }
        let (values, indices) = self.sort(-1, true)?;
        Ok((values.narrow(-1, 0, k)?, indices.narrow(-1, 0, k)?))
    }

    /// Inclusive running sum along `axis`: `out[i] = x[0] + ... + x[i]`, by
    /// log2(n) shifted additions (Hillis-Steele), so it costs O(n log n) work
    /// and no quadratic window.
    pub fn cumsum(&self, axis: i64) -> Result<Tensor> {
        let a = self.axis(axis).map_err(|e| GraphError::op("cumsum", e.to_string()))?;
        let n = self.shape()[a];
        let zero = self.scalar_like(0.0);
        let mut acc = self.clone();
        let mut shift = 1;
        while shift < n {
            let mut low = vec![0; self.rank()];
            let mut high = vec![0; self.rank()];
            low[a] = shift;
            high[a] = -shift;
            let shifted = acc.pad(&zero, &low, &high, &vec![0; self.rank()])?;
            acc = acc.add(&shifted)?;
            shift *= 2;
        }
        Ok(acc)
    }
}
