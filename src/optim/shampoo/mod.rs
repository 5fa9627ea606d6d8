//! Distributed Shampoo (Anil et al. 2020, "Scalable Second Order Optimization
//! for Deep Learning") as DALL·E mini trained with it: optax-shampoo 0.0.6's
//! `distributed_shampoo` with `shard_optimizer_states=True` (the mode
//! dalle-mini runs), moving-average momentum, rmsprop_normalized grafting,
//! coupled weight decay and no Nesterov by default.
//!
//! Per parameter, the gradient is merged into at most a few large dimensions
//! and cut into blocks; every block dimension keeps a statistic
//! `β₂·S + (1-β₂)·G Gᵀ` (every step) and a preconditioner `S^(-1/2r)` for a
//! block of rank r (recomputed every `preconditioning_compute_steps`). The
//! preconditioned gradient takes its size from the grafted RMSProp step. As
//! in the reference's sharded mode, a step uses the preconditioners computed
//! at an earlier step, and refreshes them from its new statistics afterwards.
//!
//! The state is ordinary per-parameter tensors, in this order: `graft_nu`,
//! `graft_momentum`, `shampoo_momentum` (parameter shape), then
//! `shampoo_stat<k>` and `shampoo_precond<k>`: stacks `[blocks, n, n]` of
//! f32 matrices, one per group of equally shaped blocks (see `blocks.rs`) and
//! per dimension, k running over the groups, then their dimensions. The
//! reference keeps one matrix per block and dimension; these hold the same
//! matrices, grouped.

mod blocks;
mod inverse_root;

pub use inverse_root::{inverse_pth_root, inverse_pth_roots, inverse_pth_roots_in_chunks};

use std::collections::BTreeMap;

use super::{layer_loop, Optimizer, StateInit, StateSpec, StepScalars};
use crate::graph::{optimization_barrier, while_loop, Function, Result, Tensor, TensorType};
use crate::DType;
use blocks::Blocks;

/// The first-order method whose per-parameter step size Shampoo's step takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Graft {
    Rmsprop,
    /// RMSProp on the gradient divided by its norm (dalle-mini's choice).
    RmspropNormalized,
}

#[derive(Clone, Debug)]
pub struct Shampoo {
    pub beta1: f64,
    pub beta2: f64,
    /// Added to the update before momentum (the reference's default, not decoupled).
    pub weight_decay: f64,
    pub block_size: i64,
    /// Dimensions are merged while their product stays within this.
    pub merge_small_dims_block_size: i64,
    /// A parameter with a dimension over this is updated by grafting alone.
    pub skip_preconditioning_dim_size_gt: i64,
    /// 0-based step from which the preconditioned update replaces grafting.
    pub start_preconditioning_step: i64,
    pub preconditioning_compute_steps: i64,
    pub graft: Graft,
    pub nesterov: bool,
    pub matrix_epsilon: f64,
    pub diagonal_epsilon: f64,
    /// A new preconditioner whose `max |Pᵖ·S - I|` reaches this is dropped.
    pub inverse_failure_threshold: f64,
    /// Bytes of statistics the preconditioner refresh inverts at a time: its
    /// working set is a few times this, rather than a few times all statistics.
    pub refresh_chunk_bytes: i64,
}

impl Default for Shampoo {
    /// dalle-mini's `tools/train/train.py` settings.
    fn default() -> Self {
        Shampoo {
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 0.0,
            block_size: 1024,
            merge_small_dims_block_size: 4096,
            skip_preconditioning_dim_size_gt: 4096,
            start_preconditioning_step: 101,
            preconditioning_compute_steps: 10,
            graft: Graft::RmspropNormalized,
            nesterov: false,
            matrix_epsilon: 1e-6,
            diagonal_epsilon: 1e-10,
            inverse_failure_threshold: 0.1,
            refresh_chunk_bytes: 64 << 20,
        }
    }
}

fn norm(t: &Tensor) -> Result<Tensor> {
    let n = t.ty().numel();
    t.reshape(&[n])?.square()?.sum(&[0], false)?.sqrt()
}

impl Shampoo {
    /// How the parameter is cut for preconditioning; `None` for grafting
    /// only (scalars, as skip_preconditioning_rank_lt=1, and large dimensions).
    fn blocks(&self, shape: &[i64]) -> Option<Blocks> {
        if shape.is_empty() || shape.iter().any(|&d| d > self.skip_preconditioning_dim_size_gt) {
            return None;
        }
        Some(Blocks::new(shape, self.merge_small_dims_block_size, self.block_size))
    }

    /// `β₂·S + (1-β₂)·G Gᵀ` along every dimension of every block, a stack
    /// per group of blocks of one shape.
    fn new_statistics(&self, b: &Blocks, g: &Tensor, old: &[Tensor]) -> Result<Vec<Tensor>> {
        let w2 = if self.beta2 == 1.0 { 1.0 } else { 1.0 - self.beta2 };
        let merged = g.reshape(&b.shape)?;
        let mut old = old.iter();
        let mut out = Vec::with_capacity(old.len());
        for group in b.groups() {
            let blocks = b.gather(&merged, &group)?;
            for axis in 1..=b.rank() {
                let others: Vec<usize> = (1..=b.rank()).filter(|&d| d != axis).collect();
                let gram = blocks.dot_general(&blocks, &[0], &[0], &others, &others)?;
                out.push(old.next().expect("one statistic per group and dimension").scale(self.beta2)?.add(&gram.scale(w2)?)?);
            }
        }
        Ok(out)
    }

    /// `P₁ᵀ·…` along every dimension of every block: contracting the first
    /// block axis each time brings the axes back round to their order.
    fn precondition(&self, b: &Blocks, g: &Tensor, preconditioners: &[Tensor]) -> Result<Tensor> {
        let merged = g.reshape(&b.shape)?;
        let mut ps = preconditioners.iter();
        let mut stacks = Vec::new();
        for group in b.groups() {
            let mut x = b.gather(&merged, &group)?;
            for _ in 0..b.rank() {
                x = x.dot_general(ps.next().expect("one preconditioner per group and dimension"), &[0], &[0], &[1], &[1])?;
            }
            stacks.push(x);
        }
        b.scatter(stacks)?.reshape(g.shape())
    }

    /// The preconditioners after this step, for every parameter's statistics
    /// at once: recomputed on steps that are multiples of
    /// `preconditioning_compute_steps` (inside a loop that runs once or not at
    /// all, so other steps skip the work), each kept as it was when its inverse
    /// root failed. Statistics of one size and root are stacked across all
    /// parameters and share one iteration, as the reference batches them: one
    /// loop per kind of matrix rather than one per parameter keeps the program
    /// (and its compile time) independent of the number of parameters.
    fn refresh(&self, step: &Tensor, pending: &[Pending], partitions: usize) -> Result<Vec<Vec<Tensor>>> {
        let stats: Vec<&Tensor> = pending.iter().flat_map(|q| &q.stats).collect();
        let old: Vec<&Tensor> = pending.iter().flat_map(|q| &q.preconditioners).collect();
        let n = stats.len();
        if n == 0 {
            return Ok(pending.iter().map(|_| vec![]).collect());
        }
        let due = step.rem(&step.scalar_like(self.preconditioning_compute_steps as f64))?.eq(&step.scalar_like(0.0))?;
        let mut types = vec![TensorType::scalar(DType::Bool)];
        types.extend(stats.iter().chain(&old).map(|t| t.ty().clone()));
        let (eps, threshold) = (self.matrix_epsilon, self.inverse_failure_threshold);
        // (matrix side, root) -> positions in `stats`.
        let mut groups: BTreeMap<(i64, u32), Vec<usize>> = BTreeMap::new();
        let roots_of = pending.iter().flat_map(|q| q.stats.iter().map(move |s| (s.shape()[1], q.root)));
        for (k, key) in roots_of.enumerate() {
            groups.entry(key).or_default().push(k);
        }
        let cond = Function::build("shampoo_refresh_due", &types, |c| Ok(vec![c[0].clone()]))?;
        let body = Function::build("shampoo_refresh", &types, |c| {
            // The statistics pass through this loop unchanged, so XLA's
            // loop-invariant code motion would hoist the whole refresh out of
            // it and run it on every step. Read through one barrier with the
            // flag the body flips, they vary with the loop, and the refresh
            // stays inside it.
            let flagged: Vec<&Tensor> = c[..=n].iter().collect();
            let fenced = optimization_barrier(&flagged)?;
            let (stats, prev) = (&fenced[1..], &c[n + 1..]);
            let mut fresh = prev.to_vec();
            for (&(size, root), members) in &groups {
                let members_stats: Vec<&Tensor> = members.iter().map(|&k| &stats[k]).collect();
                let stack = Tensor::concat(&members_stats, 0)?;
                // A chunk at a time, so that the refresh's memory is bounded by
                // a chunk rather than by all statistics.
                let chunk = (self.refresh_chunk_bytes / (size * size * 4)).max(1);
                let (roots, errors) = inverse_pth_roots_in_chunks(&stack, root, eps, partitions, chunk)?;
                let mut at = 0;
                for &k in members {
                    let count = stats[k].shape()[0];
                    let new_roots = roots.slice(&[at, 0, 0], &[at + count, size, size], &[1, 1, 1])?;
                    let error = errors.slice(&[at], &[at + count], &[1])?;
                    let failed = error.ne(&error)?.or(&error.ge(&error.scalar_like(threshold))?)?.reshape(&[count, 1, 1])?;
                    fresh[k] = Tensor::select(&failed, &prev[k], &new_roots)?;
                    at += count;
                }
            }
            let mut out = vec![c[0].not()?];
            out.extend(c[1..=n].iter().cloned());
            out.extend(fresh);
            Ok(out)
        })?;
        let mut init = vec![&due];
        init.extend(stats.iter().chain(&old).copied());
        let mut fresh = while_loop(&cond, &body, &init)?.split_off(n + 1).into_iter();
        Ok(pending.iter().map(|q| fresh.by_ref().take(q.stats.len()).collect()).collect())
    }

    /// One parameter's step with the preconditioners it has; the refresh
    /// comes after, for all parameters together.
    fn step_one(&self, param: &Tensor, grad: &Tensor, state: &[Tensor], s: &StepScalars, step: &Tensor) -> Result<Pending> {
        let (p, g) = (param.cast(DType::F32)?, grad.cast(DType::F32)?);
        let blocks = self.blocks(param.shape());
        let n = (state.len() - 3) / 2;
        let (stats, preconditioners) = state[3..].split_at(n);

        let scaled = match self.graft {
            Graft::RmspropNormalized => g.div(&norm(&g)?.add_scalar(1e-16)?)?,
            Graft::Rmsprop => g.clone(),
        };
        let w2 = if self.beta2 == 1.0 { 1.0 } else { 1.0 - self.beta2 };
        let nu = state[0].scale(self.beta2)?.add(&scaled.square()?.scale(w2)?)?;
        let mut graft = scaled.div(&nu.sqrt()?.add_scalar(self.diagonal_epsilon)?)?;

        let (new_stats, mut shampoo) = match &blocks {
            Some(b) => (self.new_statistics(b, &g, stats)?, self.precondition(b, &g, preconditioners)?),
            None => (vec![], graft.clone()),
        };
        // The preconditioned direction with the grafted step's norm.
        shampoo = shampoo.mul(&norm(&graft)?.div(&norm(&shampoo)?.add_scalar(1e-16)?)?)?;
        if self.weight_decay != 0.0 {
            let decay = p.scale(self.weight_decay)?;
            shampoo = shampoo.add(&decay)?;
            graft = graft.add(&decay)?;
        }
        // Both momenta run from the first step, so switching to Shampoo finds its momentum warm.
        let w = 1.0 - self.beta1;
        let graft_momentum = state[1].scale(self.beta1)?.add(&graft.scale(w)?)?;
        let shampoo_momentum = state[2].scale(self.beta1)?.add(&shampoo.scale(w)?)?;
        let run_shampoo = step.ge(&step.scalar_like(self.start_preconditioning_step as f64))?;
        let mut update = Tensor::select(&run_shampoo, &shampoo_momentum, &graft_momentum)?;
        if self.nesterov {
            update = Tensor::select(&run_shampoo, &shampoo, &graft)?.scale(w)?.add(&update.scale(self.beta1)?)?;
        }
        let new_param = p.sub(&update.mul(&s.lr.cast(DType::F32)?)?)?.cast(param.dtype())?;
        Ok(Pending {
            new_param,
            first_order: vec![nu, graft_momentum, shampoo_momentum],
            stats: new_stats,
            preconditioners: preconditioners.to_vec(),
            root: blocks.map_or(0, |b| 2 * b.rank() as u32),
        })
    }
}

/// A parameter's step before its preconditioners are refreshed.
struct Pending {
    new_param: Tensor,
    /// `graft_nu`, `graft_momentum`, `shampoo_momentum`.
    first_order: Vec<Tensor>,
    /// This step's statistics, and the preconditioners the step used.
    stats: Vec<Tensor>,
    preconditioners: Vec<Tensor>,
    /// `p` of the inverse p-th roots: twice the block's rank.
    root: u32,
}

impl Optimizer for Shampoo {
    fn name(&self) -> &'static str {
        "shampoo"
    }

    fn state(&self, param: &TensorType) -> Vec<StateSpec> {
        let f32 = param.with_dtype(DType::F32);
        let mut specs = vec![StateSpec::zeros("graft_nu", f32.clone()), StateSpec::zeros("graft_momentum", f32.clone()), StateSpec::zeros("shampoo_momentum", f32)];
        if let Some(b) = self.blocks(&param.shape) {
            // One stack [blocks, n, n] per group of blocks of one shape and per dimension.
            let shapes = b.statistic_shapes();
            let stack = |s: &[i64; 3]| TensorType::new(DType::F32, s);
            for (k, s) in shapes.iter().enumerate() {
                specs.push(StateSpec { suffix: format!("shampoo_stat{k}"), ty: stack(s), init: StateInit::Identity(self.matrix_epsilon) });
            }
            for (k, s) in shapes.iter().enumerate() {
                specs.push(StateSpec { suffix: format!("shampoo_precond{k}"), ty: stack(s), init: StateInit::Identity(1.0) });
            }
        }
        specs
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &[Tensor], s: &StepScalars) -> Result<(Tensor, Vec<Tensor>)> {
        let mut all = self.update_all(std::slice::from_ref(param), std::slice::from_ref(grad), &[state.to_vec()], s, &[])?;
        Ok(all.remove(0))
    }

    fn update_all(&self, params: &[Tensor], grads: &[Tensor], states: &[Vec<Tensor>], s: &StepScalars, stacks: &[Vec<usize>]) -> Result<Vec<(Tensor, Vec<Tensor>)>> {
        // The reference counts steps from 0.
        let step_of = |count: &Tensor| count.cast(DType::F32)?.add_scalar(-1.0);
        let step = step_of(s.count)?;
        let mut pending: Vec<Option<Pending>> = (0..params.len()).map(|_| None).collect();
        // What the next parameter's (or stack's) step waits for: the last
        // step's new parameter and statistics. Split over devices, a
        // parameter's step gathers its statistics, preconditioners and
        // gradient blocks whole. One parameter after another, only one
        // parameter's gathered copies are live at a time, rather than as
        // many as the scheduler overlaps.
        let mut before: Vec<Tensor> = Vec::new();
        let fence = |q: &Pending| std::iter::once(q.new_param.clone()).chain(q.stats.iter().cloned()).collect::<Vec<_>>();
        for unit in layer_loop::units(params, states, stacks)? {
            match unit {
                layer_loop::Unit::Stack(members) => {
                    let k = members[0];
                    // One loop over the layers: the statistics and momenta are
                    // written, the preconditioners only read (the refresh below
                    // replaces them for every parameter at once).
                    let n_stats = (states[k].len() - 3) / 2;
                    let step = |p: &Tensor, g: &Tensor, st: &[Tensor], sc: &StepScalars| {
                        let q = self.step_one(p, g, st, sc, &step_of(sc.count)?)?;
                        Ok(std::iter::once(q.new_param).chain(q.first_order).chain(q.stats).collect())
                    };
                    let done = layer_loop::update_stack(members, params, grads, states, 3 + n_stats, s, &before, step)?;
                    let root = self.blocks(params[k].shape()).map_or(0, |b| 2 * b.rank() as u32);
                    for (&m, (new_param, mut written)) in members.iter().zip(done) {
                        let stats = written.split_off(3);
                        pending[m] = Some(Pending { new_param, first_order: written, stats, preconditioners: states[m][3 + n_stats..].to_vec(), root });
                    }
                    before = fence(pending[*members.last().expect("a stack has members")].as_ref().expect("stepped"));
                }
                layer_loop::Unit::Single(k) => {
                    let (p, g, st) = (&params[k], &grads[k], &states[k]);
                    let q = if s.partitions > 1 && !before.is_empty() {
                        let mut inputs: Vec<&Tensor> = vec![p, g];
                        inputs.extend(st);
                        let fenced = layer_loop::after(&inputs, &before)?;
                        self.step_one(&fenced[0], &fenced[1], &fenced[2..], s, &step)?
                    } else {
                        self.step_one(p, g, st, s, &step)?
                    };
                    before = fence(&q);
                    pending[k] = Some(q);
                }
            }
        }
        let pending: Vec<Pending> = pending.into_iter().map(|q| q.expect("every parameter stepped")).collect();
        let fresh = self.refresh(&step, &pending, s.partitions)?;
        Ok(pending
            .into_iter()
            .zip(fresh)
            .map(|(q, preconditioners)| {
                let mut state = q.first_order;
                state.extend(q.stats);
                state.extend(preconditioners);
                (q.new_param, state)
            })
            .collect())
    }
}
