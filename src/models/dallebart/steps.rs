//! The compiled programs of DalleBart training, one XLA executable each, replicated over
//! the devices:
//! - `train_step`: forward, backward, gradient mean across replicas (all-reduce),
//!   clipping and the optimizer update, parameters and state donated so the
//!   update is in place;
//! - with gradient accumulation, `accumulate` (adds one micro-batch's gradients
//!   into donated accumulators) and `apply` (the update from the accumulated sum);
//! - `eval_step`: the loss only.

use crate::error::Result;
use crate::graph::{grad, Graph, Tensor};
use super::DalleBart;
use crate::nn::{ParamSpec, VarBuilder};
use crate::optim::{clip_by_global_norm, Optimizer, StateSpec, StepScalars};
use crate::pjrt::Client;
use crate::runtime::{Program, ProgramOptions};
use crate::train::{Axis, Mesh, NetLayout, Placement};
use crate::DType;
use std::collections::HashMap;

/// Number of batch arguments (input ids, attention mask, labels) that lead every program.
pub const BATCH_ARGS: usize = 3;

/// Names of the gradient-accumulation values: `<param>/grad_acc` per parameter, then `loss_acc`.
pub fn accumulator_names(params: &[ParamSpec]) -> Vec<String> {
    params.iter().map(|p| format!("{}/grad_acc", p.name)).chain(["loss_acc".to_string()]).collect()
}

/// The programs of one training setup.
pub struct StepPrograms {
    pub layout: NetLayout,
    /// Fused update (no accumulation): `(batch, params, state, lr, count) -> (params, state, loss, grad_norm)`.
    pub train: Option<Program>,
    /// `(batch, params, grad_acc, loss_acc) -> (grad_acc, loss_acc)`, accumulators donated.
    pub accumulate: Option<Program>,
    /// `(params, state, grad_acc, loss_acc, lr, count) -> (params, state, zero grad_acc, zero loss_acc, loss, grad_norm)`.
    pub apply: Option<Program>,
    /// `(batch, params) -> loss`.
    pub eval: Option<Program>,
    /// Where each value lives when the programs are sharded over a mesh.
    pub mesh: Option<MeshPlacements>,
}

impl StepPrograms {
    /// A training program (the fused step, or else `accumulate`): all the
    /// programs run on the same devices, so any of them uploads the state.
    pub fn uploader(&self) -> &Program {
        self.train.as_ref().or(self.accumulate.as_ref()).expect("a training program is always compiled")
    }
}

/// Where every program argument and result lives on a mesh, by name:
/// parameters by the partition rules, their optimizer state and gradient
/// accumulators like them (or by shape when the state is shaped otherwise),
/// the batch split over `data`, scalars replicated.
pub struct MeshPlacements {
    pub mesh: Mesh,
    params: HashMap<String, (Vec<i64>, Placement)>,
}

impl MeshPlacements {
    pub fn new(mesh: Mesh, params: &[ParamSpec]) -> Result<MeshPlacements> {
        let params = params
            .iter()
            .map(|p| {
                let placement = Placement::sharded(&p.name, &p.ty.shape, super::partition::model_axis_dim(&p.name), &mesh).map_err(crate::error::Error::Invalid)?;
                Ok((p.name.clone(), (p.ty.shape.clone(), placement)))
            })
            .collect::<Result<_>>()?;
        Ok(MeshPlacements { mesh, params })
    }

    /// The placement of the value `name` of `shape`.
    pub fn of(&self, name: &str, shape: &[i64]) -> Result<Placement> {
        if let Some((_, p)) = self.params.get(name) {
            return Ok(p.clone());
        }
        if matches!(name, "input_ids" | "attention_mask" | "labels") {
            let mut dims = vec![None; shape.len()];
            dims[0] = Some(Axis::Data);
            return Ok(Placement { dims });
        }
        if let Some((param, _)) = name.rsplit_once('/') {
            if let Some((param_shape, p)) = self.params.get(param) {
                if param_shape.as_slice() == shape {
                    return Ok(p.clone());
                }
                return Placement::spread(name, shape, &self.mesh).map_err(crate::error::Error::Invalid);
            }
        }
        Ok(Placement::replicated(shape.len()))
    }
}

pub struct StepSetup<'a> {
    pub client: &'a Client,
    pub model: &'a DalleBart,
    pub optimizer: &'a dyn Optimizer,
    pub max_grad_norm: f64,
    /// Examples per device per micro-batch.
    pub per_device: i64,
    pub replicas: usize,
    /// Client device indices of the replicas; `None`: the first `replicas` devices.
    pub devices: Option<Vec<usize>>,
    /// Micro-batches summed into one update.
    pub accumulation: usize,
    pub with_eval: bool,
    /// Shard every value over this mesh (one SPMD program over all its
    /// devices; `replicas` must then be 1 and `per_device` the global batch).
    pub mesh: Option<Mesh>,
}

/// Batch inputs of one device: `[b, T_text]` ids and mask, `[b, T_img]` labels.
fn batch_params(g: &Graph, model: &DalleBart, per_device: i64) -> [Tensor; BATCH_ARGS] {
    let c = &model.config;
    [
        g.param("input_ids", DType::I32, &[per_device, c.max_text_length]),
        g.param("attention_mask", DType::I32, &[per_device, c.max_text_length]),
        g.param("labels", DType::I32, &[per_device, c.image_length]),
    ]
}

/// Sum over replicas (identity on one device).
fn replica_sum(t: &Tensor, replicas: usize) -> crate::graph::Result<Tensor> {
    if replicas == 1 {
        Ok(t.clone())
    } else {
        crate::graph::all_reduce_sum(t)
    }
}

/// The model's loss on one device's batch, with its parameters as program
/// arguments; `forward_only` where no gradient is taken of it.
fn loss_graph(g: &Graph, model: &DalleBart, per_device: i64, forward_only: bool) -> Result<([Tensor; BATCH_ARGS], VarBuilder, Tensor)> {
    let batch = batch_params(g, model, per_device);
    let vb = VarBuilder::new(g, DType::F32);
    let vb = if forward_only { vb.forward_only() } else { vb };
    let loss = model.loss(&vb, &batch[0], &batch[1], &batch[2])?;
    Ok((batch, vb, loss))
}

/// Optimizer-state arguments for every parameter, in parameter order.
fn state_params(g: &Graph, specs: &[ParamSpec], optimizer: &dyn Optimizer) -> (Vec<Vec<Tensor>>, Vec<(String, StateSpec)>) {
    let mut flat = Vec::new();
    let per_param = specs
        .iter()
        .map(|s| {
            optimizer
                .state(&s.ty)
                .into_iter()
                .map(|st| {
                    let t = g.param(&format!("{}/{}", s.name, st.suffix), st.ty.dtype, &st.ty.shape);
                    flat.push((s.name.clone(), st));
                    t
                })
                .collect()
        })
        .collect();
    (per_param, flat)
}

/// Clip the mean gradients and update every parameter; returns the program outputs
/// `params, state, loss, grad_norm`.
fn update_outputs(
    g: &Graph,
    optimizer: &dyn Optimizer,
    max_grad_norm: f64,
    params: &[Tensor],
    state: &[Vec<Tensor>],
    mean_grads: &[Tensor],
    mean_loss: Tensor,
    partitions: usize,
    stacks: &[Vec<usize>],
) -> Result<Vec<Tensor>> {
    let lr = g.param("lr", DType::F32, &[]);
    let count = g.param("count", DType::F32, &[]);
    let (grads, norm) = clip_by_global_norm(mean_grads, max_grad_norm)?;
    let scalars = StepScalars { lr: &lr, count: &count, partitions };
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_state = Vec::new();
    for (np, ns) in optimizer.update_all(params, &grads, state, &scalars, stacks)? {
        new_params.push(np);
        new_state.extend(ns);
    }
    new_params.extend(new_state);
    new_params.push(mean_loss);
    new_params.push(norm);
    Ok(new_params)
}

/// Compiles `outs` (named `out_names`, for their placement on a mesh).
fn compile(s: &StepSetup, placements: Option<&MeshPlacements>, g: &Graph, outs: &[Tensor], out_names: &[String], mut opts: ProgramOptions) -> Result<Program> {
    opts.devices = s.devices.clone();
    if let Some(m) = placements {
        let sharding = |(name, shape): (&String, &[i64])| -> Result<Option<String>> { Ok(Some(m.of(name, shape)?.sharding(&m.mesh))) };
        let (names, types) = (g.param_names(), g.param_types());
        opts.arg_shardings = names.iter().zip(&types).map(|(n, t)| sharding((n, &t.shape))).collect::<Result<_>>()?;
        opts.result_shardings = out_names.iter().zip(outs).map(|(n, t)| sharding((n, t.shape()))).collect::<Result<_>>()?;
        opts.partitions = m.mesh.devices();
        opts.replicas = 1;
        opts.devices = Some(s.devices.clone().unwrap_or_else(|| (0..m.mesh.devices()).collect()));
    }
    let refs: Vec<&Tensor> = outs.iter().collect();
    Program::compile(s.client, g, &refs, &opts)
}

/// Names of `update_outputs`' results: parameters, state, loss and gradient norm.
fn update_names(layout_names: &[String]) -> Vec<String> {
    layout_names.iter().cloned().chain(["loss".to_string(), "grad_norm".to_string()]).collect()
}

/// Builds and compiles the programs for `setup`.
pub fn compile_step_programs(s: &StepSetup) -> Result<StepPrograms> {
    let n = s.replicas;
    let scale_of = |micro: usize| 1.0 / (n * micro) as f64;
    // Devices one SPMD program spans, for optimizers that spread their own work.
    let partitions = s.mesh.as_ref().map_or(1, |m| m.devices());
    if s.mesh.is_some() && n != 1 {
        return Err(crate::error::Error::Invalid("a mesh-sharded step is one SPMD program: replicas must be 1".into()));
    }
    let mut programs =
        StepPrograms { layout: NetLayout { params: vec![], state: vec![] }, train: None, accumulate: None, apply: None, eval: None, mesh: None };
    // The parameter specs decide the placements; they come from tracing the model once.
    let placements = match s.mesh {
        Some(mesh) => {
            let g = Graph::new("placements");
            let (_, vb, _) = loss_graph(&g, s.model, s.per_device, true)?;
            Some(MeshPlacements::new(mesh, &vb.specs())?)
        }
        None => None,
    };
    let p = placements.as_ref();

    if s.accumulation <= 1 {
        let g = Graph::new("train_step");
        let (_, vb, loss) = loss_graph(&g, s.model, s.per_device, false)?;
        let params = vb.tensors();
        let specs = vb.specs();
        let (state, state_specs) = state_params(&g, &specs, s.optimizer);
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = grad(&loss, &refs)?;
        let mean_grads = grads.iter().map(|gr| replica_sum(gr, n)?.scale(scale_of(1))).collect::<crate::graph::Result<Vec<_>>>()?;
        let mean_loss = replica_sum(&loss, n)?.scale(scale_of(1))?;
        let outs = update_outputs(&g, s.optimizer, s.max_grad_norm, &params, &state, &mean_grads, mean_loss, partitions, &vb.stack_indices())?;
        let donated = BATCH_ARGS..BATCH_ARGS + params.len() + state_specs.len();
        let layout = NetLayout { params: specs, state: state_specs };
        let names = update_names(&layout.names());
        programs.train = Some(compile(s, p, &g, &outs, &names, ProgramOptions::replicated(n).donating(donated))?);
        programs.layout = layout;
    } else {
        // accumulate: (batch, params, grad_acc, loss_acc) -> (grad_acc + grads, loss_acc + loss)
        let g = Graph::new("accumulate");
        let (_, vb, loss) = loss_graph(&g, s.model, s.per_device, false)?;
        let params = vb.tensors();
        let specs = vb.specs();
        let stacks = vb.stack_indices();
        let acc_names = accumulator_names(&specs);
        let acc: Vec<Tensor> = specs.iter().zip(&acc_names).map(|(p, name)| g.param(name, p.ty.dtype, &p.ty.shape)).collect();
        let loss_acc = g.param("loss_acc", DType::F32, &[]);
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = grad(&loss, &refs)?;
        let mut outs = acc.iter().zip(&grads).map(|(a, gr)| a.add(gr)).collect::<crate::graph::Result<Vec<_>>>()?;
        outs.push(loss_acc.add(&loss.cast(DType::F32)?)?);
        let first_acc = BATCH_ARGS + params.len();
        let donated = first_acc..first_acc + params.len() + 1;
        programs.accumulate = Some(compile(s, p, &g, &outs, &acc_names, ProgramOptions::replicated(n).donating(donated))?);

        // apply: (params, state, grad_acc, loss_acc, lr, count) -> (params, state, 0, 0, loss, grad_norm)
        let g = Graph::new("apply");
        let params: Vec<Tensor> = specs.iter().map(|p| g.param(&p.name, p.ty.dtype, &p.ty.shape)).collect();
        let (state, state_specs) = state_params(&g, &specs, s.optimizer);
        let acc: Vec<Tensor> = specs.iter().zip(&acc_names).map(|(p, name)| g.param(name, p.ty.dtype, &p.ty.shape)).collect();
        let loss_acc = g.param("loss_acc", DType::F32, &[]);
        let scale = scale_of(s.accumulation);
        let mean_grads = acc.iter().map(|a| replica_sum(a, n)?.scale(scale)).collect::<crate::graph::Result<Vec<_>>>()?;
        let mean_loss = replica_sum(&loss_acc, n)?.scale(scale)?;
        let mut outs = update_outputs(&g, s.optimizer, s.max_grad_norm, &params, &state, &mean_grads, mean_loss, partitions, &stacks)?;
        // Fresh zero accumulators come back out, so they stay on device between updates.
        let tail = outs.split_off(params.len() + state_specs.len());
        for a in acc.iter().chain([&loss_acc]) {
            outs.push(a.zeros_like()?);
        }
        outs.extend(tail);
        let donated = 0..2 * params.len() + state_specs.len() + 1;
        let layout = NetLayout { params: specs, state: state_specs };
        let mut names = layout.names();
        names.extend(acc_names);
        names.extend(["loss".to_string(), "grad_norm".to_string()]);
        programs.apply = Some(compile(s, p, &g, &outs, &names, ProgramOptions::replicated(n).donating(donated))?);
        programs.layout = layout;
    }

    if s.with_eval {
        let g = Graph::new("eval_step");
        let (_, _, loss) = loss_graph(&g, s.model, s.per_device, true)?;
        let mean_loss = replica_sum(&loss, n)?.scale(scale_of(1))?;
        programs.eval = Some(compile(s, p, &g, &[mean_loss], &["loss".to_string()], ProgramOptions::replicated(n))?);
    }
    programs.mesh = placements;
    Ok(programs)
}
