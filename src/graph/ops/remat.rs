//! Rematerialisation (gradient checkpointing) and the optimisation barrier it
//! rests on.
//!
//! `remat(f, inputs)` computes `f` normally in the forward pass but keeps none
//! of its intermediates for the backward pass: the VJP calls `f` again on its
//! inputs and differentiates that copy. The inputs of the copy, together with
//! the incoming cotangents, go through `stablehlo.optimization_barrier`, so XLA
//! can neither merge the copy with the forward computation (CSE) nor hoist it
//! before the cotangents exist, which would keep its values alive just as
//! long as without remat.

use crate::graph::autodiff::vjp;
use crate::graph::emit::LowerCx;
use crate::graph::error::{op_bail, GraphError, Result};
use crate::graph::ops::param::Parameter;
use crate::graph::primitive::{generic, Primitive};
use crate::graph::tensor::Tensor;
use crate::graph::types::TensorType;
use std::any::Any;
use std::collections::HashSet;
use std::rc::Rc;

/// Identity on any number of operands that XLA may not look through.
#[derive(Debug)]
pub struct OptimizationBarrier;

impl Primitive for OptimizationBarrier {
    fn name(&self) -> String {
        "optimization_barrier".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        if inputs.is_empty() {
            op_bail!("optimization_barrier", "needs at least one operand");
        }
        Ok(inputs.to_vec())
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        Ok(generic("stablehlo.optimization_barrier", args, ins, outs, ""))
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(cts.to_vec())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Passes `values` through one optimisation barrier.
pub fn optimization_barrier(values: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = values.first() else { op_bail!("optimization_barrier", "needs at least one operand") };
    first.graph().apply(OptimizationBarrier, values)
}

type RematFn = dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>;

/// Inputs: the `n_inputs` arguments of `f`, then the outputs of its forward
/// evaluation. Outputs: those forward outputs, unchanged. The VJP sends no
/// cotangent into the forward evaluation; it recomputes `f` instead.
pub struct Remat {
    f: Rc<RematFn>,
    n_inputs: usize,
}

impl std::fmt::Debug for Remat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remat({} inputs)", self.n_inputs)
    }
}

impl Primitive for Remat {
    fn name(&self) -> String {
        "remat".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        if inputs.len() <= self.n_inputs {
            op_bail!("remat", "the function returned no outputs");
        }
        Ok(inputs[self.n_inputs..].to_vec())
    }
    fn lower(&self, _: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        // The forward outputs pass through unchanged; a barrier is the one op
        // that forwards any number of values of any types.
        Ok(generic("stablehlo.optimization_barrier", &args[self.n_inputs..], &ins[self.n_inputs..], outs, ""))
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let n = self.n_inputs;
        let (args, _) = ins.split_at(n);
        // Outputs without a cotangent (or not differentiable) contribute nothing.
        let live: Vec<(usize, Tensor)> = cts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.clone().filter(|c| c.dtype().is_float()).map(|c| (i, c)))
            .collect();
        let mut none: Vec<Option<Tensor>> = vec![None; ins.len()];
        if live.is_empty() {
            return Ok(none);
        }
        let mut fenced: Vec<&Tensor> = args.iter().collect();
        fenced.extend(live.iter().map(|(_, c)| c));
        let fenced = optimization_barrier(&fenced)?;
        let (args2, cts2) = fenced.split_at(n);
        let recomputed = (self.f)(args2)?;
        if recomputed.len() != outs.len() || recomputed.iter().zip(outs).any(|(a, b)| a.ty() != b.ty()) {
            op_bail!(
                "remat",
                "the function returned {:?} when recomputed but {:?} the first time",
                recomputed.iter().map(|t| t.ty().clone()).collect::<Vec<_>>(),
                outs.iter().map(|t| t.ty().clone()).collect::<Vec<_>>()
            );
        }
        let diff: Vec<usize> = (0..n).filter(|&i| args2[i].dtype().is_float()).collect();
        if diff.is_empty() {
            return Ok(none);
        }
        let ys: Vec<&Tensor> = live.iter().map(|(i, _)| &recomputed[*i]).collect();
        let cs: Vec<&Tensor> = cts2.iter().collect();
        let wrt: Vec<&Tensor> = diff.iter().map(|&i| &args2[i]).collect();
        let grads = vjp(&ys, &cs, &wrt)?;
        for (i, g) in diff.into_iter().zip(grads) {
            none[i] = Some(g);
        }
        Ok(none)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Applies `f` to `inputs` with gradient checkpointing: the backward pass
/// recomputes `f` from `inputs` instead of keeping its intermediates.
///
/// `f` must compute its outputs from its arguments only (constants are fine);
/// a tensor captured from outside would get no gradient through the
/// recomputation, so it is rejected: pass it in `inputs`.
pub fn remat(f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + 'static, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = inputs.first() else { op_bail!("remat", "needs at least one input") };
    let g = first.graph().clone();
    let start = g.num_nodes();
    let args: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let outs = f(&args)?;
    if outs.is_empty() {
        op_bail!("remat", "the function returned no outputs");
    }
    {
        let data = g.data.borrow();
        let allowed: HashSet<_> = args.iter().map(|t| t.id()).collect();
        for node in &data.nodes[start..] {
            if node.prim.as_any().is::<Parameter>() {
                op_bail!("remat", "the function adds a program parameter; pass the value in as an input instead");
            }
            if let Some(v) = node.inputs.iter().find(|v| v.node < start && !allowed.contains(v)) {
                let captured = &data.nodes[v.node];
                op_bail!(
                    "remat",
                    "the function uses {:?} (from '{}') that is not one of its inputs; pass it in the inputs list",
                    captured.outputs[v.index],
                    captured.prim.name()
                );
            }
        }
        for o in &outs {
            if !o.graph().same(&g) {
                return Err(GraphError::op("remat", "the function returned a tensor of another graph"));
            }
            if o.id().node < start && !allowed.contains(&o.id()) {
                op_bail!("remat", "the function returns {:?} that it did not compute from its inputs", o.ty());
            }
        }
    }
    let mut operands: Vec<&Tensor> = inputs.to_vec();
    operands.extend(outs.iter());
    g.apply(Remat { f: Rc::new(f), n_inputs: inputs.len() }, &operands)
}
