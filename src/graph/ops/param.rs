//! Leaves of a graph: parameters, constants, iota.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, GraphError, Result};
use crate::graph::primitive::{generic, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::host::HostTensor;
use crate::DType;
use std::any::Any;

/// A program argument; the emitter binds it to `%argN`.
#[derive(Debug)]
pub struct Parameter {
    pub index: usize,
    pub name: String,
    pub ty: TensorType,
}

impl Primitive for Parameter {
    fn name(&self) -> String {
        format!("parameter '{}'", self.name)
    }
    fn infer(&self, _: &[TensorType]) -> Result<Vec<TensorType>> {
        Ok(vec![self.ty.clone()])
    }
    fn lower(&self, _: &mut LowerCx, _: &[String], _: &[TensorType], _: &[TensorType]) -> Result<String> {
        Err(GraphError::Invalid("parameters are bound by the emitter, never lowered".into()))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A literal array, written as raw little-endian bytes (a single element is a splat).
#[derive(Debug)]
pub struct Constant {
    pub value: HostTensor,
}

fn dense_literal(v: &HostTensor) -> String {
    let w = v.dtype.size_in_bytes();
    let splat = v.numel() > 0 && v.data.chunks_exact(w).all(|c| c == &v.data[..w]);
    let bytes = if splat { &v.data[..w] } else { &v.data[..] };
    if v.dtype == DType::Bool {
        let items: Vec<&str> = bytes.iter().map(|b| if *b != 0 { "true" } else { "false" }).collect();
        return if splat || items.len() == 1 { items[0].to_string() } else { format!("[{}]", items.join(", ")) };
    }
    let mut hex = String::with_capacity(2 + 2 * bytes.len());
    hex.push_str("\"0x");
    for b in bytes {
        hex.push_str(&format!("{b:02X}"));
    }
    hex.push('"');
    hex
}

impl Primitive for Constant {
    fn name(&self) -> String {
        "constant".into()
    }
    fn infer(&self, _: &[TensorType]) -> Result<Vec<TensorType>> {
        Ok(vec![TensorType::new(self.value.dtype, &self.value.shape)])
    }
    fn lower(&self, _: &mut LowerCx, _: &[String], _: &[TensorType], out: &[TensorType]) -> Result<String> {
        if self.value.numel() == 0 {
            return Ok(generic("stablehlo.constant", &[], &[], out, &format!("value = dense<> : {}", out[0].mlir())));
        }
        let attr = format!("value = dense<{}> : {}", dense_literal(&self.value), out[0].mlir());
        Ok(generic("stablehlo.constant", &[], &[], out, &attr))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `0, 1, 2, ...` along `dim`, broadcast over the other dimensions.
#[derive(Debug)]
pub struct Iota {
    pub ty: TensorType,
    pub dim: usize,
}

impl Primitive for Iota {
    fn name(&self) -> String {
        "iota".into()
    }
    fn infer(&self, _: &[TensorType]) -> Result<Vec<TensorType>> {
        if self.dim >= self.ty.rank() {
            op_bail!("iota", "dimension {} is out of range for shape {:?}", self.dim, self.ty.shape);
        }
        if self.ty.dtype == DType::Bool {
            op_bail!("iota", "bool is not a numeric type");
        }
        Ok(vec![self.ty.clone()])
    }
    fn lower(&self, _: &mut LowerCx, _: &[String], _: &[TensorType], out: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.iota", &[], &[], out, &format!("iota_dimension = {} : i64", self.dim)))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

