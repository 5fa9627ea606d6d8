//! Cross-device primitives: all-reduce, all-gather, and the SPMD sharding
//! annotation. They only mean something in programs compiled for several
//! replicas (`ProgramOptions::replicated`) or partitions; on one device they
//! are the identity.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic_with_regions, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use crate::DType;
use std::any::Any;

macro_rules! impl_any {
    () => {
        fn as_any(&self) -> &dyn Any {
            self
        }
    };
}

/// Replica ids that communicate with each other. `All` is every replica of the
/// program, whatever their number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaGroups {
    All,
    Groups(Vec<Vec<i64>>),
}

impl ReplicaGroups {
    /// Checks the groups are non-empty, equally sized and disjoint.
    fn check(&self, op: &str) -> Result<()> {
        let ReplicaGroups::Groups(groups) = self else { return Ok(()) };
        let Some(first) = groups.first() else { op_bail!(op, "replica groups must not be empty") };
        if first.is_empty() || groups.iter().any(|g| g.len() != first.len()) {
            op_bail!(op, "replica groups {groups:?} must be non-empty and of equal size");
        }
        let mut seen: Vec<i64> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        if seen.iter().any(|&r| r < 0) || seen.windows(2).any(|w| w[0] == w[1]) {
            op_bail!(op, "replica groups {groups:?} must hold distinct non-negative replica ids");
        }
        Ok(())
    }

    /// `replica_groups = dense<...> : tensor<GxNxi64>`; XLA reads an empty list as
    /// one group of all replicas.
    fn attr(&self) -> String {
        match self {
            ReplicaGroups::All => "replica_groups = dense<> : tensor<0x0xi64>".to_string(),
            ReplicaGroups::Groups(g) => {
                let rows: Vec<String> =
                    g.iter().map(|r| format!("[{}]", r.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))).collect();
                format!("replica_groups = dense<[{}]> : tensor<{}x{}xi64>", rows.join(", "), g.len(), g[0].len())
            }
        }
    }
}

/// Sum over the replicas of each group; every replica gets the total.
#[derive(Debug)]
pub struct AllReduceSum {
    pub groups: ReplicaGroups,
}

impl Primitive for AllReduceSum {
    fn name(&self) -> String {
        "all_reduce_sum".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        self.groups.check("all_reduce_sum")?;
        let x = &inputs[0];
        if x.dtype == DType::Bool {
            op_bail!("all_reduce_sum", "needs a numeric operand, got {x}");
        }
        Ok(vec![x.clone()])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let region = cx.scalar_region("stablehlo.add", &TensorType::scalar(ins[0].dtype));
        Ok(generic_with_regions("stablehlo.all_reduce", args, ins, outs, &self.groups.attr(), &[region]))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        // Each replica's input feeds every replica's output of its group, so its
        // cotangent is the group's sum of output cotangents.
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        Ok(vec![Some(ct.graph().apply1(AllReduceSum { groups: self.groups.clone() }, &[ct])?)])
    }
    impl_any!();
}

/// Sum over every replica of the program: each replica gets the total. Its
/// gradient is the all-reduce sum of the cotangent.
pub fn all_reduce_sum(t: &Tensor) -> Result<Tensor> {
    t.graph().apply1(AllReduceSum { groups: ReplicaGroups::All }, &[t])
}

/// Sum within each group of replica ids, e.g. `[[0, 1], [2, 3]]`.
pub fn all_reduce_sum_groups(t: &Tensor, groups: &[Vec<i64>]) -> Result<Tensor> {
    t.graph().apply1(AllReduceSum { groups: ReplicaGroups::Groups(groups.to_vec()) }, &[t])
}
