//! Loops: `while_loop` over sub-graph functions, and `fori_loop` with a static
//! trip count, which can be differentiated.
//!
//! Loop bodies are [`Function`]s: separate graphs that see only their
//! arguments. Values from outside a loop enter it as carries (returned
//! unchanged by the body), which is also how their gradients come back out.

use crate::graph::emit::{needed_nodes_until, LowerCx};
use crate::graph::error::{op_bail, GraphError, Result};
use crate::graph::function::Function;
use crate::graph::ops::param::Parameter;
use crate::graph::primitive::{generic_with_regions, Primitive};
use crate::graph::tensor::{Graph, Tensor, ValueId};
use crate::graph::types::TensorType;
use crate::graph::vjp;
use crate::DType;
use std::any::Any;
use std::collections::HashMap;

impl Function {
    /// Replays this function's nodes into the graph of `args`, with its
    /// parameters bound to `args`; returns its outputs there.
    pub fn call(&self, into: &Graph, args: &[&Tensor]) -> Result<Vec<Tensor>> {
        let want = self.arg_types();
        let got: Vec<TensorType> = args.iter().map(|a| a.ty().clone()).collect();
        if want != got {
            return Err(GraphError::Invalid(format!("function '{}' takes {want:?}, got {got:?}", self.graph.name())));
        }
        let args: Vec<Option<&Tensor>> = args.iter().map(|a| Some(*a)).collect();
        self.replay(into, &args, &self.outputs, &HashMap::new())
    }

    /// Replays into `into` the nodes of this function's graph that `outputs`
    /// (tensors of that graph) need, with parameter `k` bound to `args[k]`
    /// and the values in `given` taken as they are instead of computed.
    fn replay(&self, into: &Graph, args: &[Option<&Tensor>], outputs: &[Tensor], given: &HashMap<ValueId, Tensor>) -> Result<Vec<Tensor>> {
        let name = self.graph.name();
        if self.graph.same(into) {
            return Err(GraphError::Invalid(format!("function '{name}' cannot be called inside its own graph")));
        }
        let data = self.graph.data.borrow();
        let needed = needed_nodes_until(&data.nodes, outputs.iter().map(|t| t.id), |v| given.contains_key(v));
        let mut values: HashMap<ValueId, Tensor> = given.clone();
        for (n, node) in data.nodes.iter().enumerate() {
            if !needed[n] {
                continue;
            }
            if let Some(p) = node.prim.as_any().downcast_ref::<Parameter>() {
                let arg = args.get(p.index).copied().flatten();
                let arg = arg.ok_or_else(|| GraphError::Invalid(format!("function '{name}' needs its argument {}", p.index)))?;
                values.insert(ValueId { node: n, index: 0 }, arg.clone());
                continue;
            }
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|v| &values[v]).collect();
            let outs = into.apply_rc(node.prim.clone(), &inputs)?;
            for (index, t) in outs.into_iter().enumerate() {
                values.insert(ValueId { node: n, index }, t);
            }
        }
        Ok(outputs.iter().map(|o| values[&o.id].clone()).collect())
    }
}

/// `stablehlo.while`: repeats `body` on the carries while `cond` holds.
#[derive(Debug)]
pub struct WhileLoop {
    /// Carries -> bool scalar.
    pub cond: Function,
    /// Carries -> carries of the same types.
    pub body: Function,
}

fn check_loop_functions(op: &str, cond: &Function, body: &Function, carries: &[TensorType]) -> Result<()> {
    if cond.arg_types() != carries || body.arg_types() != carries {
        op_bail!(
            op,
            "carries {carries:?} must match the arguments of the condition {:?} and of the body {:?}",
            cond.arg_types(),
            body.arg_types()
        );
    }
    if cond.output_types() != [TensorType::scalar(DType::Bool)] {
        op_bail!(op, "the condition must return one bool scalar, got {:?}", cond.output_types());
    }
    if body.output_types() != carries {
        op_bail!(op, "the body must return the carry types {carries:?}, got {:?}", body.output_types());
    }
    Ok(())
}

fn lower_while(cx: &mut LowerCx, cond: &Function, body: &Function, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
    let regions = [cx.region(cond)?, cx.region(body)?];
    Ok(generic_with_regions("stablehlo.while", args, ins, outs, "", &regions))
}

impl Primitive for WhileLoop {
    fn name(&self) -> String {
        "while_loop".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        check_loop_functions("while_loop", &self.cond, &self.body, inputs)?;
        Ok(inputs.to_vec())
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        lower_while(cx, &self.cond, &self.body, args, ins, outs)
    }
    fn vjp(&self, _: &[Tensor], _: &[Tensor], _: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        op_bail!("while_loop", "differentiating through while_loop is not supported; use fori_loop with a static trip count")
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Runs `body` on the carries `init` while `cond` returns true; returns the
/// final carries. Both functions take the carries as arguments (see
/// [`Function::build`]); the body returns new carries of the same types.
///
/// The trip count is only known at run time, so the loop cannot be
/// differentiated: asking for its gradient fails with an error naming
/// `while_loop`. Use [`fori_loop`] for loops with a static trip count.
pub fn while_loop(cond: &Function, body: &Function, init: &[&Tensor]) -> Result<Vec<Tensor>> {
    let Some(first) = init.first() else { op_bail!("while_loop", "needs at least one carry") };
    first.graph().apply(WhileLoop { cond: cond.clone(), body: body.clone() }, init)
}

/// What a loop stores for its VJP as it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stores {
    /// Nothing: the VJP runs the loop forward again to store the carries.
    Nothing,
    /// The carries each iteration starts from; the VJP recomputes the body
    /// from them (rematerialisation).
    Carries,
    /// Those and the body's matrix products that its VJP needs: the VJP
    /// runs the body's backward part and recomputes only the cheap rest
    /// (norms, activations, softmax) from the stored products.
    Activations,
}

/// The body's VJP as a function of `(i, carries, cotangents of the float
/// carries)`, and the matrix products of its graph (from its replay of the
/// body) that its backward nodes need and that change from iteration to
/// iteration: a loop that stores activations stacks these as it runs, and
/// its VJP takes them as given instead of computing them again.
#[derive(Debug)]
struct BodyVjp {
    function: Function,
    saved: Vec<Tensor>,
    /// The body's outputs in `function`'s graph.
    body_outputs: Vec<Tensor>,
}

impl BodyVjp {
    fn build(body: &Function, varying: &[usize]) -> Result<BodyVjp> {
        let carries = body.output_types();
        let float: Vec<usize> = (0..carries.len()).filter(|&k| carries[k].dtype.is_float()).collect();
        let mut types = vec![TensorType::scalar(DType::I32)];
        types.extend(carries.iter().cloned());
        types.extend(float.iter().map(|&k| carries[k].clone()));
        let mut body_outputs = Vec::new();
        let mut first_backward = 0;
        let function = Function::build("fori_body_vjp", &types, |a| {
            let args: Vec<&Tensor> = a[..1 + carries.len()].iter().collect();
            body_outputs = body.call(a[0].graph(), &args)?;
            first_backward = a[0].graph().data.borrow().nodes.len();
            let outs: Vec<&Tensor> = float.iter().map(|&k| &body_outputs[k]).collect();
            let cts: Vec<&Tensor> = a[1 + carries.len()..].iter().collect();
            let wrt: Vec<&Tensor> = float.iter().map(|&k| &a[1 + k]).collect();
            vjp(&outs, &cts, &wrt)
        })?;
        let saved = {
            let data = function.graph.data.borrow();
            let nodes = &data.nodes;
            // Forward values that depend on a carry the body changes; the
            // others (weights read at `i`, masks) are recomputed when needed.
            let mut varies = vec![false; first_backward];
            for (n, node) in nodes.iter().enumerate().take(first_backward) {
                varies[n] = match node.prim.as_any().downcast_ref::<Parameter>() {
                    Some(p) => p.index >= 1 && varying.contains(&(p.index - 1)),
                    None => node.inputs.iter().any(|v| varies[v.node]),
                };
            }
            // Only matrix products are stored (JAX's `checkpoint_dots`
            // policy): what the backward part reads of the rest (norms,
            // activations, softmax) is recomputed from them, which XLA fuses
            // into the backward part's kernels; storing every value it reads
            // was slower on CPU than recomputing the whole layer.
            let is_param = |n: usize| nodes[n].prim.as_any().downcast_ref::<Parameter>().is_some();
            let is_dot = |n: usize| nodes[n].prim.name() == "dot_general";
            let mut stack: Vec<ValueId> = nodes[first_backward..]
                .iter()
                .flat_map(|node| node.inputs.iter().copied())
                .chain(function.outputs.iter().map(|t| t.id))
                .filter(|v| v.node < first_backward)
                .collect();
            let mut seen = std::collections::HashSet::new();
            let mut read = Vec::new();
            while let Some(v) = stack.pop() {
                if !seen.insert(v) || !varies[v.node] || is_param(v.node) {
                    continue;
                }
                if is_dot(v.node) {
                    read.push(v);
                } else {
                    stack.extend(nodes[v.node].inputs.iter().copied());
                }
            }
            read.sort_by_key(|v| (v.node, v.index));
            read
        };
        let saved = saved.into_iter().map(|v| function.graph.tensor(v)).collect();
        Ok(BodyVjp { function, saved, body_outputs })
    }
}

/// A loop over `i` in `lower..upper` (`i` an i32 scalar). Inputs and outputs:
/// the counter, the carries, then a `[trip count, ...]` stack per recorded
/// carry and per saved activation; `body` maps `(i, carries)` to new carries.
#[derive(Debug)]
pub struct ForiLoop {
    pub lower: i64,
    pub upper: i64,
    pub body: Function,
    /// Carries whose value at the start of every iteration the loop writes
    /// into a stack of its own, for the VJP: the carries the body changes,
    /// or none.
    recorded: Vec<usize>,
    /// With [`Stores::Activations`]: the body's VJP and what it reads.
    activations: Option<BodyVjp>,
    cond: Function,
    step: Function,
}

impl ForiLoop {
    fn new(lower: i64, upper: i64, body: Function, stores: Stores) -> Result<ForiLoop> {
        let n = upper - lower;
        let carries = body.output_types();
        let recorded: Vec<usize> = if stores == Stores::Nothing { Vec::new() } else { changed_carries(&body) };
        let activations = if stores == Stores::Activations { Some(BodyVjp::build(&body, &recorded)?) } else { None };
        let saved_types: Vec<TensorType> = activations.iter().flat_map(|a| a.saved.iter().map(|t| stack_type(t.ty(), n))).collect();
        let mut types = vec![TensorType::scalar(DType::I32)];
        types.extend(carries.iter().cloned());
        types.extend(recorded.iter().map(|&k| stack_type(&carries[k], n)));
        types.extend(saved_types);
        let cond = Function::build("fori_cond", &types, |a| Ok(vec![a[0].lt(&a[0].scalar_like(upper as f64))?]))?;
        let step = Function::build("fori_step", &types, |a| {
            let args: Vec<&Tensor> = a[..1 + carries.len()].iter().collect();
            let mut out = vec![a[0].add_scalar(1.0)?];
            let saved = match &activations {
                None => {
                    out.extend(body.call(a[0].graph(), &args)?);
                    Vec::new()
                }
                Some(act) => {
                    // The body and the values its VJP will read, in one replay.
                    let args: Vec<Option<&Tensor>> = args.iter().map(|t| Some(*t)).collect();
                    let wanted: Vec<Tensor> = act.body_outputs.iter().chain(&act.saved).cloned().collect();
                    let mut values = act.function.replay(a[0].graph(), &args, &wanted, &HashMap::new())?;
                    let saved = values.split_off(carries.len());
                    out.extend(values);
                    saved
                }
            };
            let at = a[0].add_scalar(-(lower as f64))?;
            let stacks = &a[1 + carries.len()..];
            for (j, &k) in recorded.iter().enumerate() {
                out.push(stacks[j].dynamic_update_index(&at, &a[1 + k])?);
            }
            for (j, value) in saved.iter().enumerate() {
                out.push(stacks[recorded.len() + j].dynamic_update_index(&at, value)?);
            }
            Ok(out)
        })?;
        Ok(ForiLoop { lower, upper, body, recorded, activations, cond, step })
    }

    fn trip_count(&self) -> i64 {
        self.upper - self.lower
    }
}

/// The carries `body` does not return unchanged.
fn changed_carries(body: &Function) -> Vec<usize> {
    (0..body.output_types().len()).filter(|&k| !body.passes_through(k, k + 1)).collect()
}

/// `[n, ...t]`: `n` values of type `t`.
fn stack_type(t: &TensorType, n: i64) -> TensorType {
    let mut shape = vec![n];
    shape.extend_from_slice(&t.shape);
    TensorType::new(t.dtype, &shape)
}

impl Primitive for ForiLoop {
    fn name(&self) -> String {
        "fori_loop".into()
    }
    fn infer(&self, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
        check_loop_functions("fori_loop", &self.cond, &self.step, inputs)?;
        Ok(inputs.to_vec())
    }
    fn lower(&self, cx: &mut LowerCx, args: &[String], ins: &[TensorType], outs: &[TensorType]) -> Result<String> {
        lower_while(cx, &self.cond, &self.step, args, ins, outs)
    }
    fn vjp(&self, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let n_carries = self.body.output_types().len();
        let carries = &ins[1..1 + n_carries];
        let float: Vec<usize> = (0..carries.len()).filter(|&k| carries[k].dtype().is_float()).collect();
        if cts[1 + n_carries..].iter().any(Option::is_some) {
            op_bail!("fori_loop", "cannot differentiate the stacks a loop recorded for its own gradient (a second-order gradient through fori_loop_storing)");
        }
        let mut result = vec![None; ins.len()];
        if float.iter().all(|&k| cts[k + 1].is_none()) {
            return Ok(result);
        }
        let g = ins[0].graph();
        let n = self.trip_count();
        let (lower, upper) = (self.lower, self.upper);

        // The carries each iteration starts from, stacked: [n, ...] per carry
        // the body changes. Carries it returns unchanged (weights of scanned
        // layers, masks) are the same at every iteration: they are not
        // stacked, which keeps the memory at trip count x the carries that
        // change. A recording loop wrote these as it ran; otherwise the loop
        // runs forward once more to write them.
        let varying = if self.recorded.is_empty() { changed_carries(&self.body) } else { self.recorded.clone() };
        let body = &self.body;
        let rerun;
        let stored = &outs[1 + n_carries..];
        let (stacks, saved_stacks): (&[Tensor], &[Tensor]) = if self.recorded.is_empty() {
            // An ordinary loop with the stacks as carries, so that this
            // gradient can be differentiated again.
            let zeros: Vec<Tensor> = varying.iter().map(|&k| g.zeros(carries[k].dtype(), &stack_type(carries[k].ty(), n).shape)).collect();
            let mut init: Vec<&Tensor> = carries.iter().collect();
            init.extend(zeros.iter());
            rerun = fori_loop(lower, upper, &init, |i, state| {
                let (cs, ss) = state.split_at(carries.len());
                let at = i.add_scalar(-(lower as f64))?;
                let mut call_args: Vec<&Tensor> = vec![i];
                call_args.extend(cs.iter());
                let mut next = body.call(i.graph(), &call_args)?;
                for (&k, s) in varying.iter().zip(ss) {
                    next.push(s.dynamic_update_index(&at, &cs[k])?);
                }
                Ok(next)
            })?;
            (&rerun[carries.len()..], &[])
        } else {
            stored.split_at(self.recorded.len())
        };
        let n_saved = saved_stacks.len();

        // Backward: walk the iterations in reverse, pulling the cotangent of the
        // float carries through the body at each stored starting point. The
        // loop state is (cotangents, stacks of the varying carries, the carries).
        let cts0: Vec<Tensor> = float
            .iter()
            .map(|&k| match &cts[k + 1] {
                Some(ct) => Ok(ct.clone()),
                None => carries[k].zeros_like(),
            })
            .collect::<Result<_>>()?;
        let mut init: Vec<&Tensor> = cts0.iter().collect();
        init.extend(stacks.iter());
        init.extend(saved_stacks.iter());
        init.extend(carries.iter());
        let activations = &self.activations;
        let back = fori_loop(0, n, &init, |j, state| {
            let (ct, rest) = state.split_at(float.len());
            let (ss, rest_after) = rest.split_at(varying.len());
            let (saved_rows, invariant) = rest_after.split_at(n_saved);
            let i = j.neg()?.add_scalar((upper - 1) as f64)?;
            let at = i.add_scalar(-(lower as f64))?;
            let mut cs: Vec<Tensor> = invariant.to_vec();
            for (&k, s) in varying.iter().zip(ss) {
                cs[k] = s.dynamic_index(&at)?;
            }
            let mut next = match activations {
                // The body's backward part alone, reading its stored values.
                Some(act) => {
                    let given: HashMap<ValueId, Tensor> =
                        act.saved.iter().zip(saved_rows).map(|(t, s)| Ok((t.id, s.dynamic_index(&at)?))).collect::<Result<_>>()?;
                    let mut args: Vec<Option<&Tensor>> = vec![Some(&i)];
                    args.extend(cs.iter().map(Some));
                    args.extend(ct.iter().map(Some));
                    act.function.replay(j.graph(), &args, &act.function.outputs, &given)?
                }
                None => {
                    let mut call_args: Vec<&Tensor> = vec![&i];
                    call_args.extend(cs.iter());
                    let outs = body.call(j.graph(), &call_args)?;
                    let float_outs: Vec<&Tensor> = float.iter().map(|&k| &outs[k]).collect();
                    let wrt: Vec<&Tensor> = float.iter().map(|&k| &cs[k]).collect();
                    vjp(&float_outs, &ct.iter().collect::<Vec<_>>(), &wrt)?
                }
            };
            next.extend(rest.iter().cloned());
            Ok(next)
        })?;
        for (slot, &k) in float.iter().enumerate() {
            result[k + 1] = Some(back[slot].clone());
        }
        Ok(result)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Runs `body(i, carries) -> carries` for `i` in `lower..upper` (an i32 scalar),
/// starting from `init`; returns the final carries. With `upper <= lower` the
/// body never runs and `init` comes back.
///
/// The body is traced once into its own graph, so it sees only `i` and the
/// carries: pass outer values in as carries returned unchanged.
///
/// Differentiable: the VJP runs the loop forward once more, storing the carries
/// each iteration starts from (memory: trip count × the size of the carries
/// that change; those returned unchanged are kept once), then runs a
/// reverse loop applying the body's VJP. That VJP is built from loops too, so
/// higher-order gradients work. A loop whose gradient is always taken can
/// store what it reads on its first run instead: [`fori_loop_storing`].
pub fn fori_loop(
    lower: i64,
    upper: i64,
    init: &[&Tensor],
    body: impl FnOnce(&Tensor, &[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    fori_loop_storing(Stores::Nothing, lower, upper, init, body)
}

/// [`fori_loop`] that stores what its VJP reads as it runs (see [`Stores`]),
/// so that the VJP does not run the loop forward a second time (for a
/// scanned layer stack, one forward pass of every layer less per training
/// step); with [`Stores::Activations`] it does not recompute the body's
/// matrix products either, for the memory of every iteration's products.
/// Where no gradient is taken, XLA drops the unused stores. Its gradient
/// cannot itself be differentiated.
pub fn fori_loop_storing(
    stores: Stores,
    lower: i64,
    upper: i64,
    init: &[&Tensor],
    body: impl FnOnce(&Tensor, &[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let Some(first) = init.first() else { op_bail!("fori_loop", "needs at least one carry") };
    let in_range = |v: i64| i32::try_from(v).is_ok();
    if !in_range(lower) || !in_range(upper) {
        op_bail!("fori_loop", "bounds {lower}..{upper} must fit in i32");
    }
    let mut types = vec![TensorType::scalar(DType::I32)];
    types.extend(init.iter().map(|t| t.ty().clone()));
    let body = Function::build("fori_body", &types, |a| body(&a[0], &a[1..]))?;
    if body.output_types() != types[1..] {
        op_bail!("fori_loop", "the body must return the carry types {:?}, got {:?}", &types[1..], body.output_types());
    }
    if upper <= lower {
        return Ok(init.iter().map(|t| (*t).clone()).collect());
    }
    let g = first.graph();
    let counter = g.scalar(lower as f64, DType::I32);
    let prim = ForiLoop::new(lower, upper, body, stores)?;
    let n = upper - lower;
    let mut stacks: Vec<Tensor> = prim.recorded.iter().map(|&k| g.zeros(init[k].dtype(), &stack_type(init[k].ty(), n).shape)).collect();
    stacks.extend(prim.activations.iter().flat_map(|a| a.saved.iter().map(|t| g.zeros(t.dtype(), &stack_type(t.ty(), n).shape))));
    let mut inputs = vec![&counter];
    inputs.extend(init.iter().copied());
    inputs.extend(stacks.iter());
    let mut out = g.apply(prim, &inputs)?;
    out.truncate(1 + init.len());
    out.remove(0);
    Ok(out)
}
