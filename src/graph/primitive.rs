//! The primitive interface: each primitive holds its shape rule, its lowering
//! to StableHLO and its vector-Jacobian product in one place.

use super::emit::LowerCx;
use super::error::Result;
use super::tensor::Tensor;
use super::types::TensorType;
use std::any::Any;
use std::fmt::Debug;

pub trait Primitive: Debug + Any {
    /// Name used in error messages and graph dumps.
    fn name(&self) -> String;

    /// Shape rule: output types for these input types, or an error naming the op and shapes.
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>>;

    /// Lowering: the StableHLO operation (right-hand side, generic form) computing
    /// the outputs from operands named `args`.
    fn lower(&self, cx: &mut LowerCx, args: &[String], inputs: &[TensorType], outputs: &[TensorType]) -> Result<String>;

    /// Reverse-mode rule: cotangents of the inputs given those of the outputs
    /// (`None` where an output has no cotangent). Returns `None` for inputs that
    /// are not differentiable. Built from primitives, so it is differentiable too.
    fn vjp(&self, inputs: &[Tensor], outputs: &[Tensor], cotangents: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>>;

    fn as_any(&self) -> &dyn Any;
}

/// `"stablehlo.NAME"(%a, %b) {attrs} : (ta, tb) -> tr` in MLIR's generic form.
pub fn generic(name: &str, args: &[String], inputs: &[TensorType], outputs: &[TensorType], attrs: &str) -> String {
    generic_with_regions(name, args, inputs, outputs, attrs, &[])
}

pub fn generic_with_regions(
    name: &str,
    args: &[String],
    inputs: &[TensorType],
    outputs: &[TensorType],
    attrs: &str,
    regions: &[String],
) -> String {
    let ins: Vec<String> = inputs.iter().map(|t| t.mlir()).collect();
    let outs: Vec<String> = outputs.iter().map(|t| t.mlir()).collect();
    let out_sig = if outs.len() == 1 { outs[0].clone() } else { format!("({})", outs.join(", ")) };
    let regions = if regions.is_empty() { String::new() } else { format!(" ({})", regions.join(", ")) };
    let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{attrs}}}") };
    format!("\"{name}\"({}){regions}{attrs} : ({}) -> {out_sig}", args.join(", "), ins.join(", "))
}

/// `array<i64: 0, 1>`.
pub fn i64_array(v: &[i64]) -> String {
    if v.is_empty() {
        "array<i64>".to_string()
    } else {
        format!("array<i64: {}>", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
    }
}

/// `[0, 1]`.
pub fn i64_list(v: &[i64]) -> String {
    format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
}
