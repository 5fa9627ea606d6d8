//! Cross-device primitives: all-reduce, all-gather, and the SPMD sharding
//! annotation. They only mean something in programs compiled for several
//! replicas (`ProgramOptions::replicated`) or partitions; on one device they
//! are the identity.

use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, Result};
use crate::graph::primitive::{generic, generic_with_regions, Primitive};
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

/// Explicit groups of every replica `0..replicas` in one group.
fn one_group(replicas: usize) -> Vec<Vec<i64>> {
    vec![(0..replicas as i64).collect()]
}

/// The size of each group: gathered and scattered shapes depend on it, so these
/// collectives need explicit groups.
fn group_size(op: &str, groups: &[Vec<i64>]) -> Result<i64> {
    ReplicaGroups::Groups(groups.to_vec()).check(op)?;
    Ok(groups[0].len() as i64)
}

/// Concatenation along `axis` of the operands of every replica in a group, in
/// the group's order.
#[derive(Debug)]
pub struct AllGather {
    pub axis: usize,
    pub groups: Vec<Vec<i64>>,
}

impl Primitive for AllGather {
    fn name(&self) -> String {
        "all_gather".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let n = group_size("all_gather", &self.groups)?;
        let x = &inputs[0];
        if self.axis >= x.rank() {
            op_bail!("all_gather", "axis {} is out of range for {x}", self.axis);
        }
        let mut shape = x.shape.clone();
        shape[self.axis] *= n;
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let attrs = format!("all_gather_dim = {} : i64, {}", self.axis, ReplicaGroups::Groups(self.groups.clone()).attr());
        Ok(generic("stablehlo.all_gather", args, ins, outs, &attrs))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        // A replica's block reaches every replica of its group, so its cotangent
        // is the group's sum of that block: a reduce-scatter.
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        let prim = ReduceScatterSum { axis: self.axis, groups: self.groups.clone() };
        Ok(vec![Some(ct.graph().apply1(prim, &[ct])?)])
    }
    impl_any!();
}

/// Sum over the replicas of a group, split along `axis`: replica `i` of the
/// group keeps the `i`-th block.
#[derive(Debug)]
pub struct ReduceScatterSum {
    pub axis: usize,
    pub groups: Vec<Vec<i64>>,
}

impl Primitive for ReduceScatterSum {
    fn name(&self) -> String {
        "reduce_scatter_sum".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let n = group_size("reduce_scatter_sum", &self.groups)?;
        let x = &inputs[0];
        if x.dtype == DType::Bool || self.axis >= x.rank() || x.shape[self.axis] % n != 0 {
            op_bail!("reduce_scatter_sum", "needs a numeric operand whose axis {} splits into {n} blocks, got {x}", self.axis);
        }
        let mut shape = x.shape.clone();
        shape[self.axis] /= n;
        Ok(vec![x.with_shape(shape)])
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let region = cx.scalar_region("stablehlo.add", &TensorType::scalar(ins[0].dtype));
        let attrs = format!("scatter_dimension = {} : i64, {}", self.axis, ReplicaGroups::Groups(self.groups.clone()).attr());
        Ok(generic_with_regions("stablehlo.reduce_scatter", args, ins, outs, &attrs, &[region]))
    }
    fn vjp(&self, ins: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let (Some(ct), x) = (&cts[0], &ins[0]) else { return Ok(vec![None]) };
        if !x.dtype().is_float() {
            return Ok(vec![None]);
        }
        Ok(vec![Some(ct.graph().apply1(AllGather { axis: self.axis, groups: self.groups.clone() }, &[ct])?)])
    }
    impl_any!();
}

/// The operands of all `replicas` replicas concatenated along `axis` (replica 0 first).
pub fn all_gather(t: &Tensor, axis: i64, replicas: usize) -> Result<Tensor> {
    all_gather_groups(t, axis, &one_group(replicas))
}

/// [`all_gather`] within each group of replica ids.
pub fn all_gather_groups(t: &Tensor, axis: i64, groups: &[Vec<i64>]) -> Result<Tensor> {
    let axis = t.axis(axis).map_err(|e| crate::graph::GraphError::op("all_gather", e.to_string()))?;
    t.graph().apply1(AllGather { axis, groups: groups.to_vec() }, &[t])
}

/// Sum over all `replicas` replicas, of which replica `i` keeps block `i` along `axis`.
pub fn reduce_scatter_sum(t: &Tensor, axis: i64, replicas: usize) -> Result<Tensor> {
    reduce_scatter_sum_groups(t, axis, &one_group(replicas))
}

/// [`reduce_scatter_sum`] within each group of replica ids.
pub fn reduce_scatter_sum_groups(t: &Tensor, axis: i64, groups: &[Vec<i64>]) -> Result<Tensor> {
    let axis = t.axis(axis).map_err(|e| crate::graph::GraphError::op("reduce_scatter_sum", e.to_string()))?;
    t.graph().apply1(ReduceScatterSum { axis, groups: groups.to_vec() }, &[t])
}

/// Identity that tells XLA's SPMD partitioner how a value is laid out over the
/// partitions, in HLO sharding syntax: `{devices=[2,1]<=[2]}` splits the first
/// axis in two, `{replicated}` keeps a full copy on every partition. Lowered as
/// `custom_call @Sharding`, as JAX's `with_sharding_constraint` is.
#[derive(Debug)]
pub struct Sharding(pub String);

impl Primitive for Sharding {
    fn name(&self) -> String {
        "sharding".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        let s = &self.0;
        if !(s.starts_with('{') && s.ends_with('}')) || s.contains('"') || s.contains('\\') {
            op_bail!("sharding", "'{s}' is not an HLO sharding such as {{devices=[2,1]<=[2]}} or {{replicated}}");
        }
        Ok(vec![inputs[0].clone()])
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        let attrs = format!("call_target_name = \"Sharding\", mhlo.sharding = \"{}\"", self.0);
        Ok(generic("stablehlo.custom_call", args, ins, outs, &attrs))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        // The cotangent is laid out like the value.
        let Some(ct) = &cts[0] else { return Ok(vec![None]) };
        Ok(vec![Some(ct.with_sharding(&self.0)?)])
    }
    impl_any!();
}

impl Tensor {
    /// The same value, constrained to the HLO sharding `sharding` (see [`Sharding`]).
    pub fn with_sharding(&self, sharding: &str) -> Result<Tensor> {
        self.graph().apply1(Sharding(sharding.to_string()), &[self])
    }
}
