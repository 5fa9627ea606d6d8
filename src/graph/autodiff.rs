//! Reverse-mode automatic differentiation on the graph.
//!
//! The backward pass is built symbolically in the same graph: nodes are
//! visited in reverse creation order and each primitive's VJP rule appends
//! the nodes computing its inputs' cotangents. Since VJP rules are made of
//! primitives, gradients can themselves be differentiated.

use super::error::{GraphError, Result};
use super::tensor::{Tensor, ValueId};
use std::collections::{HashMap, HashSet};

/// Gradient of the scalar `loss` with respect to each tensor of `wrt`.
pub fn grad(loss: &Tensor, wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    if loss.rank() != 0 || !loss.dtype().is_float() {
        return Err(GraphError::Invalid(format!("grad needs a floating-point scalar loss, got {:?}", loss.ty())));
    }
    let one = loss.ones_like()?;
    vjp(&[loss], &[&one], wrt)
}

/// Vector-Jacobian product: the cotangents of `wrt` given `cotangents` of `outputs`.
pub fn vjp(outputs: &[&Tensor], cotangents: &[&Tensor], wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    if outputs.len() != cotangents.len() {
        return Err(GraphError::Invalid(format!("vjp got {} outputs but {} cotangents", outputs.len(), cotangents.len())));
    }
    let Some(first) = outputs.first() else { return Err(GraphError::Invalid("vjp needs at least one output".into())) };
    let graph = first.graph().clone();
    for t in outputs.iter().chain(cotangents).chain(wrt) {
        if !t.graph().same(&graph) {
            return Err(GraphError::Invalid(format!("vjp: tensor {t:?} belongs to another graph")));
        }
    }
    for (o, c) in outputs.iter().zip(cotangents) {
        if o.ty() != c.ty() {
            return Err(GraphError::Invalid(format!("vjp: cotangent {:?} does not match output {:?}", c.ty(), o.ty())));
        }
    }
    for w in wrt {
        if !w.dtype().is_float() {
            return Err(GraphError::Invalid(format!("cannot differentiate with respect to {:?}: not floating point", w.ty())));
        }
    }

    // Which values depend on `wrt` (forward sweep over the nodes so far).
    let n_nodes = outputs.iter().map(|o| o.id().node).max().unwrap_or(0) + 1;
    let wrt_ids: HashSet<ValueId> = wrt.iter().map(|t| t.id()).collect();
    let mut node_depends = vec![false; n_nodes];
    {
        let data = graph.data.borrow();
        for (n, node) in data.nodes.iter().enumerate().take(n_nodes) {
            node_depends[n] = node.inputs.iter().any(|v| wrt_ids.contains(v) || node_depends[v.node]);
        }
    }
    let depends = |v: &ValueId| wrt_ids.contains(v) || node_depends[v.node];

    let mut cts: HashMap<ValueId, Tensor> = HashMap::new();
    for (o, c) in outputs.iter().zip(cotangents) {
        if depends(&o.id()) {
            accumulate(&mut cts, o.id(), (*c).clone())?;
        }
    }

    for n in (0..n_nodes).rev() {
        if !node_depends[n] {
            continue;
        }
        let (prim, inputs, n_out) = {
            let data = graph.data.borrow();
            let node = &data.nodes[n];
            (node.prim.clone(), node.inputs.clone(), node.outputs.len())
        };
        let out_cts: Vec<Option<Tensor>> = (0..n_out).map(|i| cts.get(&ValueId { node: n, index: i }).cloned()).collect();
        if out_cts.iter().all(Option::is_none) {
            continue;
        }
        let in_tensors: Vec<Tensor> = inputs.iter().map(|v| graph.tensor(*v)).collect();
        let out_tensors: Vec<Tensor> = (0..n_out).map(|i| graph.tensor(ValueId { node: n, index: i })).collect();
        let in_cts = prim.vjp(&in_tensors, &out_tensors, &out_cts).map_err(|e| match e {
            GraphError::Op { .. } => e,
            other => GraphError::op(prim.name(), format!("in its VJP: {other}")),
        })?;
        if in_cts.len() != inputs.len() {
            return Err(GraphError::op(prim.name(), format!("VJP returned {} cotangents for {} inputs", in_cts.len(), inputs.len())));
        }
        for ((v, x), ct) in inputs.iter().zip(&in_tensors).zip(in_cts) {
            let Some(ct) = ct else { continue };
            if !depends(v) {
                continue;
            }
            if ct.ty() != x.ty() {
                return Err(GraphError::op(
                    prim.name(),
                    format!("VJP produced a cotangent of type {:?} for an input of type {:?}", ct.ty(), x.ty()),
                ));
            }
            accumulate(&mut cts, *v, ct)?;
        }
    }

    wrt.iter()
        .map(|w| match cts.get(&w.id()) {
            Some(ct) => Ok(ct.clone()),
            None => w.zeros_like(),
        })
        .collect()
}

fn accumulate(cts: &mut HashMap<ValueId, Tensor>, id: ValueId, ct: Tensor) -> Result<()> {
    let sum = match cts.remove(&id) {
        Some(prev) => prev.add(&ct)?,
        None => ct,
    };
    cts.insert(id, sum);
    Ok(())
}
