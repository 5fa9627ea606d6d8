//! Elementwise primitives: unary and binary arithmetic, comparison, select,
//! dtype conversion. Operands must already have equal shapes; the tensor API
//! broadcasts before it gets here.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Expm1,
    Log,
    Log1p,
    Tanh,
    Logistic,
    Sqrt,
    Rsqrt,
    Abs,
    Sign,
    Sin,
    Cos,
    Erf,
    Floor,
    Ceil,
    Round,
    Not,
    IsFinite,
}

impl UnaryOp {
    fn op_name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "stablehlo.negate",
            Exp => "stablehlo.exponential",
            Expm1 => "stablehlo.exponential_minus_one",
            Log => "stablehlo.log",
            Log1p => "stablehlo.log_plus_one",
            Tanh => "stablehlo.tanh",
            Logistic => "stablehlo.logistic",
            Sqrt => "stablehlo.sqrt",
            Rsqrt => "stablehlo.rsqrt",
            Abs => "stablehlo.abs",
            Sign => "stablehlo.sign",
            Sin => "stablehlo.sine",
            Cos => "stablehlo.cosine",
            Erf => "chlo.erf",
            Floor => "stablehlo.floor",
            Ceil => "stablehlo.ceil",
            Round => "stablehlo.round_nearest_even",
            Not => "stablehlo.not",
            IsFinite => "stablehlo.is_finite",
        }
    }

    fn float_only(self) -> bool {
        !matches!(self, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Not)
    }
}

#[derive(Debug)]
pub struct Unary(pub UnaryOp);

impl Primitive for Unary {
    fn name(&self) -> String {
        format!("{:?}", self.0).to_lowercase()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        if self.0.float_only() && !x.dtype.is_float() {
            op_bail!(self.name(), "needs a floating-point operand, got {x}");
        }
        if self.0 == UnaryOp::Not && x.dtype.is_float() {
            op_bail!(self.name(), "needs a bool or integer operand, got {x}");
        }
        if matches!(self.0, UnaryOp::Neg | UnaryOp::Sign) && (x.dtype == DType::Bool || x.dtype.is_unsigned()) {
            op_bail!(self.name(), "needs a signed operand, got {x}");
        }
        let out = if self.0 == UnaryOp::IsFinite { x.with_dtype(DType::Bool) } else { x.clone() };
        Ok(vec![out])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic(self.0.op_name(), args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        use UnaryOp::*;
        let (x, y) = (&ins[0], &outs[0]);
        let Some(ct) = &cts[0] else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        let g = match self.0 {
            Neg => ct.neg()?,
            Exp => ct.mul(y)?,
            Expm1 => ct.mul(&y.add_scalar(1.0)?)?,
            Log => ct.div(x)?,
            Log1p => ct.div(&x.add_scalar(1.0)?)?,
            Tanh => ct.mul(&y.mul(y)?.neg()?.add_scalar(1.0)?)?,
            Logistic => ct.mul(&y.mul(&y.neg()?.add_scalar(1.0)?)?)?,
            Sqrt => ct.div(&y.scale(2.0)?)?,
            Rsqrt => ct.mul(&y.div(x)?.scale(-0.5)?)?,
            Abs => ct.mul(&x.sign()?)?,
            Sin => ct.mul(&x.cos()?)?,
            Cos => ct.mul(&x.sin()?)?.neg()?,
            Erf => ct.mul(&x.mul(x)?.neg()?.exp()?.scale(2.0 / std::f64::consts::PI.sqrt())?)?,
            Sign | Floor | Ceil | Round | Not | IsFinite => return Ok(vec![None]),
        };
        Ok(vec![Some(g)])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Rem,
    Atan2,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

impl BinaryOp {
    pub(crate) fn op_name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "stablehlo.add",
            Sub => "stablehlo.subtract",
            Mul => "stablehlo.multiply",
            Div => "stablehlo.divide",
            Max => "stablehlo.maximum",
            Min => "stablehlo.minimum",
            Pow => "stablehlo.power",
            Rem => "stablehlo.remainder",
            Atan2 => "stablehlo.atan2",
            And => "stablehlo.and",
            Or => "stablehlo.or",
            Xor => "stablehlo.xor",
            ShiftLeft => "stablehlo.shift_left",
            ShiftRightLogical => "stablehlo.shift_right_logical",
        }
    }
}

#[derive(Debug)]
pub struct Binary(pub BinaryOp);

impl Primitive for Binary {
    fn name(&self) -> String {
        format!("{:?}", self.0).to_lowercase()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        use BinaryOp::*;
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.shape != b.shape || a.dtype != b.dtype {
            op_bail!(self.name(), "operands must have the same shape and dtype, got {a} and {b}");
        }
        match self.0 {
            And | Or | Xor if a.dtype.is_float() => op_bail!(self.name(), "needs bool or integer operands, got {a}"),
            ShiftLeft | ShiftRightLogical if !a.dtype.is_int() => {
                op_bail!(self.name(), "needs integer operands, got {a}")
            }
            Atan2 if !a.dtype.is_float() => op_bail!(self.name(), "needs floating-point operands, got {a}"),
            Add | Sub | Mul | Div | Max | Min | Pow | Rem if a.dtype == DType::Bool => {
                op_bail!(self.name(), "needs numeric operands, got {a}")
            }
            _ => {}
        }
        Ok(vec![a.clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic(self.0.op_name(), args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        use BinaryOp::*;
        let (a, b, y) = (&ins[0], &ins[1], &outs[0]);
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        if !a.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        let zero = ct.zeros_like()?;
        Ok(match self.0 {
            Add => vec![Some(ct.clone()), Some(ct.clone())],
            Sub => vec![Some(ct.clone()), Some(ct.neg()?)],
            Mul => vec![Some(ct.mul(b)?), Some(ct.mul(a)?)],
            Div => vec![Some(ct.div(b)?), Some(ct.mul(y)?.div(b)?.neg()?)],
            Max | Min => {
                // Ties go to the first operand, as a subgradient.
                let first = if self.0 == Max { a.ge(b)? } else { a.le(b)? };
                vec![Some(Tensor::select(&first, ct, &zero)?), Some(Tensor::select(&first, &zero, ct)?)]
            }
            Pow => {
                let da = ct.mul(&b.mul(&a.pow(&b.add_scalar(-1.0)?)?)?)?;
                let positive = a.gt(&a.zeros_like()?)?;
                let safe_a = Tensor::select(&positive, a, &a.ones_like()?)?;
                let db = Tensor::select(&positive, &ct.mul(&y.mul(&safe_a.log()?)?)?, &zero)?;
                vec![Some(da), Some(db)]
            }
            Rem => {
                let q = a.div(b)?;
                let trunc = q.sign()?.mul(&q.abs()?.floor()?)?;
                vec![Some(ct.clone()), Some(ct.mul(&trunc)?.neg()?)]
            }
            Atan2 => {
                let denom = a.mul(a)?.add(&b.mul(b)?)?;
                vec![Some(ct.mul(b)?.div(&denom)?), Some(ct.mul(a)?.div(&denom)?.neg()?)]
            }
            And | Or | Xor | ShiftLeft | ShiftRightLogical => vec![None, None],
        })
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
pub struct Compare(pub Comparison);

impl Primitive for Compare {
    fn name(&self) -> String {
        format!("compare_{:?}", self.0).to_lowercase()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        if a != b {
            op_bail!(self.name(), "operands must have the same shape and dtype, got {a} and {b}");
        }
        Ok(vec![a.with_dtype(DType::Bool)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let dir = format!("{:?}", self.0).to_uppercase();
        let d = ins[0].dtype;
        let kind = if d.is_float() {
            "FLOAT"
        } else if d.is_unsigned() || d == DType::Bool {
            "UNSIGNED"
        } else {
            "SIGNED"
        };
        let attrs = format!(
            "comparison_direction = #stablehlo<comparison_direction {dir}>, compare_type = #stablehlo<comparison_type {kind}>"
        );
        Ok(generic("stablehlo.compare", args, ins, outs, &attrs))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None, None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `pred ? on_true : on_false`, elementwise; `pred` may be a scalar.
#[derive(Debug)]
pub struct Select;

impl Primitive for Select {
    fn name(&self) -> String {
        "select".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (p, t, f) = (&inputs[0], &inputs[1], &inputs[2]);
        if p.dtype != DType::Bool {
            op_bail!("select", "the predicate must be bool, got {p}");
        }
        if t != f {
            op_bail!("select", "both branches must have the same type, got {t} and {f}");
        }
        if !p.shape.is_empty() && p.shape != t.shape {
            op_bail!("select", "predicate shape {:?} does not match branch shape {:?}", p.shape, t.shape);
        }
        Ok(vec![t.clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.select", args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let Some(ct) = &cts[0] else { return Ok(vec![None, None, None]) };
        if !ct.dtype().is_float() {
            return Ok(vec![None, None, None]);
        }
        let zero = ct.zeros_like()?;
        let p = &ins[0];
        Ok(vec![None, Some(Tensor::select(p, ct, &zero)?), Some(Tensor::select(p, &zero, ct)?)])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Numeric conversion to another dtype.
#[derive(Debug)]
pub struct Convert(pub DType);

impl Primitive for Convert {
    fn name(&self) -> String {
        format!("convert_to_{}", self.0)
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        Ok(vec![inputs[0].with_dtype(self.0)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.convert", args, ins, outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        match &cts[0] {
            Some(ct) if ins[0].dtype().is_float() && self.0.is_float() => Ok(vec![Some(ct.cast(ins[0].dtype())?)]),
            _ => Ok(vec![None]),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reinterprets the bits as another dtype of the same width.
#[derive(Debug)]
pub struct BitcastConvert(pub DType);

impl Primitive for BitcastConvert {
    fn name(&self) -> String {
        format!("bitcast_to_{}", self.0)
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let x = &inputs[0];
        if x.dtype.size_in_bytes() != self.0.size_in_bytes() || x.dtype == DType::Bool || self.0 == DType::Bool {
            op_bail!(self.name(), "needs a dtype of the same width, got {x}");
        }
        Ok(vec![x.with_dtype(self.0)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.bitcast_convert", args, ins, outs, ""))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
