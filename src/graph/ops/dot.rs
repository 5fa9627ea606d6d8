//! `dot_general`: batched tensor contraction, the one matrix-multiply primitive.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic, i64_list, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotGeneral {
    pub lhs_batch: Vec<usize>,
    pub rhs_batch: Vec<usize>,
    pub lhs_contract: Vec<usize>,
    pub rhs_contract: Vec<usize>,
    /// Result dtype when it differs from the operands' (e.g. bf16 x bf16 -> f32).
    pub out_dtype: Option<DType>,
}

fn free_dims(rank: usize, batch: &[usize], contract: &[usize]) -> Vec<usize> {
    (0..rank).filter(|d| !batch.contains(d) && !contract.contains(d)).collect()
}

/// Rank of each element of `v` among the sorted values of `v`.
fn sorted_positions(v: &[usize]) -> Vec<usize> {
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    v.iter().map(|x| sorted.iter().position(|s| s == x).unwrap_or(0)).collect()
}

impl DotGeneral {
    fn check(&self, lhs: &TensorType, rhs: &TensorType) -> Result<()> {
        let name = "dot_general";
        if lhs.dtype != rhs.dtype {
            op_bail!(name, "operand dtypes differ: {lhs} and {rhs}");
        }
        if lhs.dtype == DType::Bool {
            op_bail!(name, "needs numeric operands, got {lhs} and {rhs}");
        }
        if self.lhs_batch.len() != self.rhs_batch.len() || self.lhs_contract.len() != self.rhs_contract.len() {
            op_bail!(name, "batch/contracting dimension lists of lhs {lhs} and rhs {rhs} differ in length");
        }
        let all_l: Vec<usize> = self.lhs_batch.iter().chain(&self.lhs_contract).copied().collect();
        let all_r: Vec<usize> = self.rhs_batch.iter().chain(&self.rhs_contract).copied().collect();
        for (dims, t, side) in [(&all_l, lhs, "lhs"), (&all_r, rhs, "rhs")] {
            for (i, d) in dims.iter().enumerate() {
                if *d >= t.rank() || dims[..i].contains(d) {
                    op_bail!(name, "{side} dimension {d} is out of range or repeated for {t} (lhs {lhs}, rhs {rhs})");
                }
            }
        }
        for (l, r) in self.lhs_batch.iter().zip(&self.rhs_batch).chain(self.lhs_contract.iter().zip(&self.rhs_contract)) {
            if lhs.shape[*l] != rhs.shape[*r] {
                op_bail!(
                    name,
                    "lhs dimension {l} (size {}) does not match rhs dimension {r} (size {}): lhs {lhs}, rhs {rhs}",
                    lhs.shape[*l],
                    rhs.shape[*r]
                );
            }
        }
        Ok(())
    }
}

impl Primitive for DotGeneral {
    fn name(&self) -> String {
        "dot_general".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let (lhs, rhs) = (&inputs[0], &inputs[1]);
        self.check(lhs, rhs)?;
        let mut shape: Vec<i64> = self.lhs_batch.iter().map(|&d| lhs.shape[d]).collect();
        shape.extend(free_dims(lhs.rank(), &self.lhs_batch, &self.lhs_contract).iter().map(|&d| lhs.shape[d]));
        shape.extend(free_dims(rhs.rank(), &self.rhs_batch, &self.rhs_contract).iter().map(|&d| rhs.shape[d]));
        Ok(vec![TensorType { dtype: self.out_dtype.unwrap_or(lhs.dtype), shape }])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let to_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let attrs = format!(
            "dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = {}, rhs_batching_dimensions = {}, \
             lhs_contracting_dimensions = {}, rhs_contracting_dimensions = {}>",
            i64_list(&to_i64(&self.lhs_batch)),
            i64_list(&to_i64(&self.rhs_batch)),
            i64_list(&to_i64(&self.lhs_contract)),
            i64_list(&to_i64(&self.rhs_contract)),
        );
        Ok(generic("stablehlo.dot_general", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let Some(ct) = &cts[0] else { return Ok(vec![None, None]) };
        let (lhs, rhs) = (&ins[0], &ins[1]);
        if !lhs.dtype().is_float() {
            return Ok(vec![None, None]);
        }
        let ct = ct.cast(lhs.dtype())?;
        let nb = self.lhs_batch.len();
        let ct_batch: Vec<usize> = (0..nb).collect();
        let lhs_free = free_dims(lhs.rank(), &self.lhs_batch, &self.lhs_contract);
        let rhs_free = free_dims(rhs.rank(), &self.rhs_batch, &self.rhs_contract);
        let ct_lhs_free: Vec<usize> = (nb..nb + lhs_free.len()).collect();
        let ct_rhs_free: Vec<usize> = (nb + lhs_free.len()..nb + lhs_free.len() + rhs_free.len()).collect();

        // d lhs: contract ct's rhs-free dims with rhs's free dims -> [B, F_l, C_r sorted].
        let g = ct.dot_general(rhs, &ct_batch, &self.rhs_batch, &ct_rhs_free, &rhs_free)?;
        let mut perm = vec![0usize; lhs.rank()];
        for (i, &d) in self.lhs_batch.iter().enumerate() {
            perm[d] = i;
        }
        for (j, &d) in lhs_free.iter().enumerate() {
            perm[d] = nb + j;
        }
        for (k, s) in sorted_positions(&self.rhs_contract).into_iter().enumerate() {
            perm[self.lhs_contract[k]] = nb + lhs_free.len() + s;
        }
        let d_lhs = g.transpose(&perm)?;

        // d rhs: contract lhs's free dims with ct's lhs-free dims -> [B, C_l sorted, F_r].
        // lhs comes first so that a linear layer's weight gradient is x^T ct, with
        // ct untransposed (ct x, transposed after, made XLA copy ct into a layout
        // that no fast CPU matmul takes).
        let g = lhs.dot_general(&ct, &self.lhs_batch, &ct_batch, &lhs_free, &ct_lhs_free)?;
        let mut perm = vec![0usize; rhs.rank()];
        for (i, &d) in self.rhs_batch.iter().enumerate() {
            perm[d] = i;
        }
        for (k, s) in sorted_positions(&self.lhs_contract).into_iter().enumerate() {
            perm[self.rhs_contract[k]] = nb + s;
        }
        for (j, &d) in rhs_free.iter().enumerate() {
            perm[d] = nb + self.lhs_contract.len() + j;
        }
        let d_rhs = g.transpose(&perm)?;
        Ok(vec![Some(d_lhs), Some(d_rhs)])
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
