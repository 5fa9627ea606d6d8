//! Primitives that shape differentiation or optimisation, not values.

use crate::graph::emit::LowerCx;
use crate::graph::error::Result;
use crate::graph::primitive::{generic, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use std::any::Any;

/// Identity whose VJP is zero.
#[derive(Debug)]
pub struct StopGradient;

impl Primitive for StopGradient {
    fn name(&self) -> String {
        "stop_gradient".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        Ok(vec![inputs[0].clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        // A same-shape reshape is the identity; XLA's simplifier removes it.
        Ok(generic("stablehlo.reshape", args, ins, outs, ""))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
