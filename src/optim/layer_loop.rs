//! Optimizer steps over scanned layer stacks. A scanned model computes its
//! layers in a loop over one traced body, but its parameters stay one tensor
//! per layer (so checkpoints do not depend on the scan). Updated one by one,
//! they would put every layer's optimizer step into the program, so its size
//! and compile time would still grow with depth. Here the same tensor of
//! every layer is stacked and updated in one loop instead: the program holds
//! one step per tensor of a layer, whatever the depth.

use super::StepScalars;
use crate::graph::{fori_loop, optimization_barrier, GraphError, Result, Tensor};

/// Layer `layer` of a stack.
fn row(stacked: &Tensor, layer: i64) -> Result<Tensor> {
    let mut start = vec![0; stacked.rank()];
    start[0] = layer;
    let mut limit = stacked.shape().to_vec();
    limit[0] = layer + 1;
    stacked.slice(&start, &limit, &vec![1; stacked.rank()])?.squeeze(0)
}

/// `values` passed through one barrier with `before`, so that nothing reading
/// them runs before `before` is computed: consecutive stacks then take their
/// steps one after another, and only one stack's stacked copies are live at a
/// time.
pub(super) fn after(values: &[&Tensor], before: &[Tensor]) -> Result<Vec<Tensor>> {
    if before.is_empty() {
        return Ok(values.iter().map(|t| (*t).clone()).collect());
    }
    let mut all = values.to_vec();
    all.extend(before);
    let mut fenced = optimization_barrier(&all)?;
    fenced.truncate(values.len());
    Ok(fenced)
}

/// The update of one tensor of a layer stack, for every layer in one loop.
///
/// `members` index `params`, `grads` and `states` in layer order: tensors of
/// one type with states of one layout. `step(param, grad, state, scalars)`
/// is one layer's update and returns the new parameter followed by new
/// values for the first `updated` state tensors (the rest are only read).
/// The stack's inputs are read after `before` is computed (see [`after`]).
/// Returns, per member, its new parameter and its `updated` new states.
pub(super) fn update_stack(
    members: &[usize],
    params: &[Tensor],
    grads: &[Tensor],
    states: &[Vec<Tensor>],
    updated: usize,
    s: &StepScalars,
    before: &[Tensor],
    step: impl Fn(&Tensor, &Tensor, &[Tensor], &StepScalars) -> Result<Vec<Tensor>>,
) -> Result<Vec<(Tensor, Vec<Tensor>)>> {
    let n_state = states[members[0]].len();
    // Per member: param, grad, state..., fenced together.
    let mut inputs: Vec<&Tensor> = Vec::new();
    for &m in members {
        inputs.push(&params[m]);
        inputs.push(&grads[m]);
        inputs.extend(&states[m]);
    }
    let inputs = after(&inputs, before)?;
    let per_member = 2 + n_state;
    let stacked: Vec<Tensor> = (0..per_member)
        .map(|k| Tensor::stack(&inputs.chunks(per_member).map(|c| &c[k]).collect::<Vec<_>>()))
        .collect::<Result<_>>()?;
    // Carries: the step's scalars (a loop body sees only its carries), then
    // the stacked param, grad and states; the param and the first `updated`
    // states are overwritten layer by layer.
    let mut carries: Vec<&Tensor> = vec![s.lr, s.count];
    carries.extend(&stacked);
    let written: Vec<usize> = std::iter::once(2).chain((0..updated).map(|k| 4 + k)).collect();
    let partitions = s.partitions;
    let out = fori_loop(0, members.len() as i64, &carries, |i, c| {
        let rows: Vec<Tensor> = c[2..].iter().map(|t| t.dynamic_index(i)).collect::<Result<_>>()?;
        let scalars = StepScalars { lr: &c[0], count: &c[1], partitions };
        let new = step(&rows[0], &rows[1], &rows[2..], &scalars)?;
        if new.len() != written.len() {
            return Err(GraphError::op("update_stack", format!("the step returned {} tensors for {} written carries", new.len(), written.len())));
        }
        let mut next = c.to_vec();
        for (value, &at) in new.iter().zip(&written) {
            next[at] = c[at].dynamic_update_index(i, &value.cast(c[at].dtype())?)?;
        }
        Ok(next)
    })?;
    (0..members.len() as i64)
        .map(|layer| {
            let param = row(&out[written[0]], layer)?;
            let state = written[1..].iter().map(|&at| row(&out[at], layer)).collect::<Result<_>>()?;
            Ok((param, state))
        })
        .collect()
}

/// What an optimizer updates in one go: the same tensor of every layer of a
/// stack, or a parameter alone.
pub(super) enum Unit<'a> {
    Stack(&'a [usize]),
    Single(usize),
}

/// The parameters as units, in parameter order (a stack at its first
/// member), after checking that `stacks` index distinct parameters of one
/// type and state layout each.
pub(super) fn units<'a>(params: &[Tensor], states: &[Vec<Tensor>], stacks: &'a [Vec<usize>]) -> Result<Vec<Unit<'a>>> {
    let mut stack_of: Vec<Option<usize>> = vec![None; params.len()];
    for (s, members) in stacks.iter().enumerate() {
        let Some(&first) = members.first() else { return Err(GraphError::op("update_stack", "an empty layer stack")) };
        for &m in members {
            if m >= params.len() || stack_of[m].is_some() {
                return Err(GraphError::op("update_stack", format!("parameter {m} is out of range or in two stacks")));
            }
            stack_of[m] = Some(s);
            let same_state = states[m].len() == states[first].len() && states[m].iter().zip(&states[first]).all(|(a, b)| a.ty() == b.ty());
            if params[m].ty() != params[first].ty() || !same_state {
                return Err(GraphError::op("update_stack", format!("parameters {first} and {m} of one stack differ in type or state")));
            }
        }
    }
    Ok((0..params.len())
        .filter_map(|k| match stack_of[k] {
            None => Some(Unit::Single(k)),
            Some(s) if stacks[s][0] == k => Some(Unit::Stack(&stacks[s])),
            Some(_) => None,
        })
        .collect())
}

/// Every parameter's update by `update`: a stack (see [`update_stack`]) in
/// one loop, one stack after another; the other parameters one by one.
pub(super) fn update_all_with_stacks(
    params: &[Tensor],
    grads: &[Tensor],
    states: &[Vec<Tensor>],
    s: &StepScalars,
    stacks: &[Vec<usize>],
    update: impl Fn(&Tensor, &Tensor, &[Tensor], &StepScalars) -> Result<(Tensor, Vec<Tensor>)>,
) -> Result<Vec<(Tensor, Vec<Tensor>)>> {
    let mut out: Vec<Option<(Tensor, Vec<Tensor>)>> = vec![None; params.len()];
    let mut before: Vec<Tensor> = Vec::new();
    for unit in units(params, states, stacks)? {
        match unit {
            Unit::Stack(members) => {
                let step = |p: &Tensor, g: &Tensor, st: &[Tensor], sc: &StepScalars| {
                    let (np, ns) = update(p, g, st, sc)?;
                    Ok(std::iter::once(np).chain(ns).collect())
                };
                let done = update_stack(members, params, grads, states, states[members[0]].len(), s, &before, step)?;
                before = done.last().map(|(p, _)| vec![p.clone()]).unwrap_or_default();
                for (&m, r) in members.iter().zip(done) {
                    out[m] = Some(r);
                }
            }
            Unit::Single(k) => out[k] = Some(update(&params[k], &grads[k], &states[k], s)?),
        }
    }
    Ok(out.into_iter().map(|r| r.expect("every parameter updated")).collect())
}
