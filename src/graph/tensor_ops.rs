//! The tensor API: what model code calls. Everything here is composed from
//! primitives; binary ops broadcast numpy-style before reaching them.

use super::error::{GraphError, Result};
use super::ops::dot::DotGeneral;
use super::ops::elementwise::{Binary, BinaryOp, BitcastConvert, Compare, Comparison, Convert, Select, Unary, UnaryOp};
use super::ops::layout::{BroadcastInDim, Concatenate, Pad, Reshape, Reverse, Slice, Transpose};
use super::ops::param::Iota;
use super::ops::reduce::{Reduce, ReduceKind};
use super::tensor::{Graph, Tensor};
use super::types::TensorType;
use crate::DType;

/// The numpy broadcast of two shapes.
pub fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn axes_of(t: &Tensor, axes: &[i64]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = t.axis(a)?;
        if out.contains(&a) {
            return Err(GraphError::Invalid(format!("axis {a} is repeated in {axes:?}")));
        }
        out.push(a);
    }
    Ok(out)
}

impl Graph {
    /// `0..n` along `dim` of `shape`.
    pub fn iota(&self, dtype: DType, shape: &[i64], dim: usize) -> Result<Tensor> {
        self.apply1(Iota { ty: TensorType::new(dtype, shape), dim }, &[])
    }
}

impl Tensor {
    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        self.graph.apply1(Unary(op), &[self])
    }

    fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let (a, b) = self.broadcast_pair(other, &format!("{op:?}").to_lowercase())?;
        self.graph.apply1(Binary(op), &[&a, &b])
    }

    fn compare(&self, c: Comparison, other: &Tensor) -> Result<Tensor> {
        let (a, b) = self.broadcast_pair(other, &format!("compare_{c:?}").to_lowercase())?;
        self.graph.apply1(Compare(c), &[&a, &b])
    }

    /// Both operands broadcast to their common shape.
    pub fn broadcast_pair(&self, other: &Tensor, op: &str) -> Result<(Tensor, Tensor)> {
        if self.shape() == other.shape() {
            return Ok((self.clone(), other.clone()));
        }
        let shape = broadcast_shapes(self.shape(), other.shape()).ok_or_else(|| {
            GraphError::op(op, format!("shapes {:?} and {:?} do not broadcast", self.ty(), other.ty()))
        })?;
        Ok((self.broadcast_to(&shape)?, other.broadcast_to(&shape)?))
    }

    // ------------------------------------------------------------ unary
    pub fn neg(&self) -> Result<Tensor> { self.unary(UnaryOp::Neg) }
    pub fn exp(&self) -> Result<Tensor> { self.unary(UnaryOp::Exp) }
    pub fn expm1(&self) -> Result<Tensor> { self.unary(UnaryOp::Expm1) }
    pub fn log(&self) -> Result<Tensor> { self.unary(UnaryOp::Log) }
    pub fn log1p(&self) -> Result<Tensor> { self.unary(UnaryOp::Log1p) }
    pub fn tanh(&self) -> Result<Tensor> { self.unary(UnaryOp::Tanh) }
    pub fn sigmoid(&self) -> Result<Tensor> { self.unary(UnaryOp::Logistic) }
    pub fn sqrt(&self) -> Result<Tensor> { self.unary(UnaryOp::Sqrt) }
    pub fn rsqrt(&self) -> Result<Tensor> { self.unary(UnaryOp::Rsqrt) }
    pub fn abs(&self) -> Result<Tensor> { self.unary(UnaryOp::Abs) }
    pub fn sign(&self) -> Result<Tensor> { self.unary(UnaryOp::Sign) }
    pub fn sin(&self) -> Result<Tensor> { self.unary(UnaryOp::Sin) }
    pub fn cos(&self) -> Result<Tensor> { self.unary(UnaryOp::Cos) }
    pub fn erf(&self) -> Result<Tensor> { self.unary(UnaryOp::Erf) }
    pub fn floor(&self) -> Result<Tensor> { self.unary(UnaryOp::Floor) }
    pub fn ceil(&self) -> Result<Tensor> { self.unary(UnaryOp::Ceil) }
    pub fn round(&self) -> Result<Tensor> { self.unary(UnaryOp::Round) }
    pub fn not(&self) -> Result<Tensor> { self.unary(UnaryOp::Not) }
    pub fn is_finite(&self) -> Result<Tensor> { self.unary(UnaryOp::IsFinite) }

    // ----------------------------------------------------------- binary
    pub fn add(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Add, o) }
    pub fn sub(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Sub, o) }
    pub fn mul(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Mul, o) }
    pub fn div(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Div, o) }
    pub fn maximum(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Max, o) }
    pub fn minimum(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Min, o) }
    pub fn pow(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Pow, o) }
    pub fn rem(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Rem, o) }
    pub fn atan2(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Atan2, o) }
    pub fn and(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::And, o) }
    pub fn or(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Or, o) }
    pub fn xor(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::Xor, o) }
    pub fn shift_left(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::ShiftLeft, o) }
    pub fn shift_right(&self, o: &Tensor) -> Result<Tensor> { self.binary(BinaryOp::ShiftRightLogical, o) }

    // ---------------------------------------------------------- compare
    pub fn eq(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Eq, o) }
    pub fn ne(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Ne, o) }
    pub fn lt(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Lt, o) }
    pub fn le(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Le, o) }
    pub fn gt(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Gt, o) }
    pub fn ge(&self, o: &Tensor) -> Result<Tensor> { self.compare(Comparison::Ge, o) }

    /// `pred ? on_true : on_false`, broadcasting all three.
    pub fn select(pred: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let shape = broadcast_shapes(on_true.shape(), on_false.shape())
            .and_then(|s| broadcast_shapes(&s, pred.shape()))
            .ok_or_else(|| {
                GraphError::op("select", format!("shapes {:?}, {:?}, {:?} do not broadcast", pred.ty(), on_true.ty(), on_false.ty()))
            })?;
        let (p, t, f) = (pred.broadcast_to(&shape)?, on_true.broadcast_to(&shape)?, on_false.broadcast_to(&shape)?);
        pred.graph.apply1(Select, &[&p, &t, &f])
    }

    // ---------------------------------------------------------- scalars
    /// A scalar constant of this tensor's dtype.
    pub fn scalar_like(&self, v: f64) -> Tensor {
        self.graph.scalar(v, self.dtype())
    }
    pub fn full_like(&self, v: f64) -> Result<Tensor> {
        Ok(self.graph.full(v, self.dtype(), self.shape()))
    }
    pub fn zeros_like(&self) -> Result<Tensor> { self.full_like(0.0) }
    pub fn ones_like(&self) -> Result<Tensor> { self.full_like(1.0) }
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> { self.add(&self.scalar_like(v)) }
    pub fn scale(&self, v: f64) -> Result<Tensor> { self.mul(&self.scalar_like(v)) }
    pub fn powf(&self, v: f64) -> Result<Tensor> { self.pow(&self.scalar_like(v)) }
    pub fn square(&self) -> Result<Tensor> { self.mul(self) }
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        self.maximum(&self.scalar_like(lo))?.minimum(&self.scalar_like(hi))
    }

    // ------------------------------------------------------- conversion
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        self.graph.apply1(Convert(dtype), &[self])
    }
    pub fn bitcast(&self, dtype: DType) -> Result<Tensor> {
        self.graph.apply1(BitcastConvert(dtype), &[self])
    }

    // ----------------------------------------------------------- layout
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        self.graph.apply1(Reshape(shape.to_vec()), &[self])
    }
    /// Reshape with one `-1` entry inferred.
    pub fn reshape_infer(&self, shape: &[i64]) -> Result<Tensor> {
        let known: i64 = shape.iter().filter(|d| **d != -1).product();
        let holes = shape.iter().filter(|d| **d == -1).count();
        if holes > 1 || known == 0 || self.ty().numel() % known != 0 {
            return Err(GraphError::op("reshape", format!("cannot reshape {:?} to {shape:?}", self.ty())));
        }
        let s: Vec<i64> = shape.iter().map(|&d| if d == -1 { self.ty().numel() / known } else { d }).collect();
        self.reshape(&s)
    }
    pub fn transpose(&self, perm: &[usize]) -> Result<Tensor> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.rank() {
            return Ok(self.clone());
        }
        self.graph.apply1(Transpose(perm.to_vec()), &[self])
    }
    pub fn swap_axes(&self, a: i64, b: i64) -> Result<Tensor> {
        let (a, b) = (self.axis(a)?, self.axis(b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.transpose(&perm)
    }
    pub fn broadcast_in_dim(&self, shape: &[i64], dims: &[usize]) -> Result<Tensor> {
        if shape == self.shape() && dims.iter().enumerate().all(|(i, &d)| i == d) {
            return Ok(self.clone());
        }
        self.graph.apply1(BroadcastInDim { shape: shape.to_vec(), dims: dims.to_vec() }, &[self])
    }
    /// Numpy broadcast to `shape` (trailing dimensions aligned).
    pub fn broadcast_to(&self, shape: &[i64]) -> Result<Tensor> {
        if shape.len() < self.rank() {
            return Err(GraphError::op("broadcast", format!("cannot broadcast {:?} to {shape:?}", self.ty())));
        }
        let offset = shape.len() - self.rank();
        self.broadcast_in_dim(shape, &(offset..shape.len()).collect::<Vec<_>>())
    }
    /// Inserts a size-1 axis at `axis`.
    pub fn unsqueeze(&self, axis: i64) -> Result<Tensor> {
        let r = self.rank() as i64 + 1;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(GraphError::Invalid(format!("unsqueeze axis {axis} out of range for {:?}", self.ty())));
        }
        let mut s = self.shape().to_vec();
        s.insert(a as usize, 1);
        self.reshape(&s)
    }
    /// Removes a size-1 axis.
    pub fn squeeze(&self, axis: i64) -> Result<Tensor> {
        let a = self.axis(axis)?;
        if self.shape()[a] != 1 {
            return Err(GraphError::Invalid(format!("cannot squeeze axis {axis} of {:?}: size is not 1", self.ty())));
        }
        let mut s = self.shape().to_vec();
        s.remove(a);
        self.reshape(&s)
    }
    pub fn slice(&self, start: &[i64], limit: &[i64], strides: &[i64]) -> Result<Tensor> {
        self.graph.apply1(Slice { start: start.to_vec(), limit: limit.to_vec(), strides: strides.to_vec() }, &[self])
    }
    /// `len` elements of `axis` from `start`.
    pub fn narrow(&self, axis: i64, start: i64, len: i64) -> Result<Tensor> {
        let a = self.axis(axis)?;
        let mut s = vec![0; self.rank()];
        let mut l = self.shape().to_vec();
        s[a] = start;
        l[a] = start + len;
        self.slice(&s, &l, &vec![1; self.rank()])
    }
    pub fn pad(&self, value: &Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> Result<Tensor> {
        self.graph.apply1(Pad { low: low.to_vec(), high: high.to_vec(), interior: interior.to_vec() }, &[self, value])
    }
    pub fn concat(tensors: &[&Tensor], axis: i64) -> Result<Tensor> {
        let Some(first) = tensors.first() else { return Err(GraphError::op("concatenate", "needs at least one operand")) };
        let a = first.axis(axis)?;
        first.graph.apply1(Concatenate(a), tensors)
    }
    /// `[n, ...]` from `n` tensors of one shape, along a new leading axis.
    pub fn stack(tensors: &[&Tensor]) -> Result<Tensor> {
        let rows: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(0)).collect::<Result<_>>()?;
        Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0)
    }
    pub fn reverse(&self, axes: &[i64]) -> Result<Tensor> {
        let axes = axes_of(self, axes)?;
        self.graph.apply1(Reverse(axes), &[self])
    }

    // ------------------------------------------------------- reductions
    fn reduce(&self, kind: ReduceKind, axes: &[i64], keepdim: bool) -> Result<Tensor> {
        let axes = axes_of(self, axes)?;
        let init = self.scalar_like(kind.identity(self.dtype()));
        let out = self.graph.apply1(Reduce { kind, axes: axes.clone() }, &[self, &init])?;
        if keepdim {
            let s: Vec<i64> = (0..self.rank()).map(|d| if axes.contains(&d) { 1 } else { self.shape()[d] }).collect();
            out.reshape(&s)
        } else {
            Ok(out)
        }
    }
    pub fn sum(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::Sum, axes, keepdim) }
    pub fn prod(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::Prod, axes, keepdim) }
    pub fn max(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::Max, axes, keepdim) }
    pub fn min(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::Min, axes, keepdim) }
    pub fn all(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::And, axes, keepdim) }
    pub fn any(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> { self.reduce(ReduceKind::Or, axes, keepdim) }
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&(0..self.rank() as i64).collect::<Vec<_>>(), false)
    }
    pub fn mean(&self, axes: &[i64], keepdim: bool) -> Result<Tensor> {
        let axes_u = axes_of(self, axes)?;
        let n: i64 = axes_u.iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdim)?.scale(1.0 / n as f64)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&(0..self.rank() as i64).collect::<Vec<_>>(), false)
    }
    /// Numerically stable `log(sum(exp(x)))` over `axis`, keeping the axis.
    pub fn logsumexp(&self, axis: i64) -> Result<Tensor> {
        let m = self.max(&[axis], true)?;
        // The max only shifts for stability: no gradient should flow through it.
        let m = m.stop_gradient()?;
        self.sub(&m)?.exp()?.sum(&[axis], true)?.log()?.add(&m)
    }
    pub fn log_softmax(&self, axis: i64) -> Result<Tensor> {
        self.sub(&self.logsumexp(axis)?)
    }
    pub fn softmax(&self, axis: i64) -> Result<Tensor> {
        let m = self.max(&[axis], true)?.stop_gradient()?;
        let e = self.sub(&m)?.exp()?;
        e.div(&e.sum(&[axis], true)?)
    }
    /// Index of the largest element along `axis` (first one on ties), as i32.
    pub fn argmax(&self, axis: i64) -> Result<Tensor> {
        let a = self.axis(axis)?;
        let m = self.max(&[axis], true)?;
        let idx = self.graph.iota(DType::I32, self.shape(), a)?;
        let big = idx.scalar_like(self.shape()[a] as f64);
        let candidates = Tensor::select(&self.eq(&m)?, &idx, &big.broadcast_to(self.shape())?)?;
        candidates.min(&[axis], false)
    }

    // ----------------------------------------------------------- linear
    pub fn dot_general(
        &self,
        rhs: &Tensor,
        lhs_batch: &[usize],
        rhs_batch: &[usize],
        lhs_contract: &[usize],
        rhs_contract: &[usize],
    ) -> Result<Tensor> {
        let prim = DotGeneral {
            lhs_batch: lhs_batch.to_vec(),
            rhs_batch: rhs_batch.to_vec(),
            lhs_contract: lhs_contract.to_vec(),
            rhs_contract: rhs_contract.to_vec(),
            out_dtype: None,
        };
        self.graph.apply1(prim, &[self, rhs])
    }
    /// `matmul` whose result (and accumulation) is in `acc` — e.g. bf16 operands, f32 result.
    pub fn matmul_acc(&self, rhs: &Tensor, acc: DType) -> Result<Tensor> {
        let plain = self.matmul(rhs)?;
        if acc == self.dtype() {
            return Ok(plain);
        }
        let (lr, rr) = (self.rank(), rhs.rank());
        let (batch, rc) = if rr <= 2 { (vec![], 0) } else { ((0..lr - 2).collect::<Vec<_>>(), rr - 2) };
        let prim = DotGeneral {
            lhs_batch: batch.clone(),
            rhs_batch: batch,
            lhs_contract: vec![lr - 1],
            rhs_contract: vec![rc],
            out_dtype: Some(acc),
        };
        self.graph.apply1(prim, &[self, rhs])
    }
    /// Matrix product over the last axis of `self` and the second-to-last of
    /// `rhs` (or its only axis pair when `rhs` is 2-D); leading axes are batch
    /// axes and must match when both operands have them.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (lr, rr) = (self.rank(), rhs.rank());
        if lr < 1 || rr < 1 {
            return Err(GraphError::op("matmul", format!("needs operands of rank >= 1, got {:?} and {:?}", self.ty(), rhs.ty())));
        }
        if rr <= 2 {
            return self.dot_general(rhs, &[], &[], &[lr - 1], &[0]);
        }
        if lr != rr {
            return Err(GraphError::op("matmul", format!("batched operands need equal ranks, got {:?} and {:?}", self.ty(), rhs.ty())));
        }
        let batch: Vec<usize> = (0..lr - 2).collect();
        self.dot_general(rhs, &batch, &batch, &[lr - 1], &[rr - 2])
    }

    // --------------------------------------------------------- autodiff
    /// The same value with no gradient flowing back through it.
    pub fn stop_gradient(&self) -> Result<Tensor> {
        self.graph.apply1(super::ops::misc::StopGradient, &[self])
    }
}
