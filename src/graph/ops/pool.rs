//! `reduce_window` with addition: the windowed sum behind average pooling.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::ops::conv::{dilated, window_output_size};
use crate::graph::primitive::{generic_with_regions, i64_array, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use std::any::Any;

/// Inputs: the operand and a scalar init value (zero). Every field holds one
/// entry per operand dimension.
#[derive(Clone, Debug)]
pub struct ReduceWindowSum {
    pub window: Vec<i64>,
    pub strides: Vec<i64>,
    pub padding: Vec<(i64, i64)>,
    pub base_dilation: Vec<i64>,
    pub window_dilation: Vec<i64>,
}

impl Primitive for ReduceWindowSum {
    fn name(&self) -> String {
        "reduce_window_sum".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (x, init) = (&inputs[0], &inputs[1]);
        let name = self.name();
        if init.rank() != 0 || init.dtype != x.dtype {
            op_bail!(name, "init must be a {} scalar, got {init}", x.dtype);
        }
        if !x.dtype.is_float() && !x.dtype.is_int() {
            op_bail!(name, "needs a numeric operand, got {x}");
        }
        let r = x.rank();
        for (v, what) in [
            (&self.window, "window"),
            (&self.strides, "strides"),
            (&self.base_dilation, "base_dilation"),
            (&self.window_dilation, "window_dilation"),
        ] {
            if v.len() != r || v.iter().any(|&s| s < 1) {
                op_bail!(name, "{what} {v:?} must hold {r} positive values for {x}");
            }
        }
        if self.padding.len() != r {
            op_bail!(name, "padding {:?} must hold {r} (low, high) pairs for {x}", self.padding);
        }
        let shape = (0..r)
            .map(|d| {
                window_output_size(
                    x.shape[d],
                    self.window[d],
                    self.strides[d],
                    self.padding[d],
                    self.base_dilation[d],
                    self.window_dilation[d],
                )
            })
            .collect();
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let region = cx.scalar_region("stablehlo.add", &ins[1]);
        let pads: Vec<String> = self.padding.iter().map(|(l, h)| format!("[{l}, {h}]")).collect();
        let attrs = format!(
            "base_dilations = {}, padding = dense<[{}]> : tensor<{}x2xi64>, window_dilations = {}, \
             window_dimensions = {}, window_strides = {}",
            i64_array(&self.base_dilation),
            pads.join(", "),
            self.padding.len(),
            i64_array(&self.window_dilation),
            i64_array(&self.window),
            i64_array(&self.strides),
        );
        Ok(generic_with_regions("stablehlo.reduce_window", args, ins, outs, &attrs, &[region]))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None, None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        // Each input element receives the sum of the cotangents of the windows
        // covering it: spread the cotangent back to input spacing, then sum it
        // over the same (all-ones, hence symmetric) window.
        let r = x.rank();
        let mut low = Vec::with_capacity(r);
        let mut high = Vec::with_capacity(r);
        for d in 0..r {
            let in_d = dilated(x.shape()[d], self.base_dilation[d]);
            let win_d = dilated(self.window[d], self.window_dilation[d]);
            let out_d = dilated(ct.shape()[d], self.strides[d]);
            let before = win_d - self.padding[d].0 - 1;
            low.push(before);
            high.push(in_d + win_d - 1 - out_d - before);
        }
        let interior: Vec<i64> = self.strides.iter().map(|s| s - 1).collect();
        let zero = ct.scalar_like(0.0);
        let spread = ct.pad(&zero, &low, &high, &interior)?;
        let back = ReduceWindowSum {
            window: self.window.clone(),
            strides: self.base_dilation.clone(),
            padding: vec![(0, 0); r],
            base_dilation: vec![1; r],
            window_dilation: self.window_dilation.clone(),
        };
        Ok(vec![Some(ct.graph().apply1(back, &[&spread, &zero])?), None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
