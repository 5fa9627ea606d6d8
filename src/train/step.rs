//! The compiled training step: forward, backward, gradient all-reduce across
//! replicas, clipping and the optimizer update, in one XLA program per device.
//! Parameters and optimizer state are donated, so the update is in place.

use crate::error::Result;
use crate::graph::{grad, Graph, Tensor, TensorType};
use crate::models::dallebart::DalleBart;
use crate::nn::{ParamSpec, VarBuilder};
use crate::optim::{clip_by_global_norm, Optimizer, StateSpec, StepScalars};
use crate::pjrt::Client;
use crate::runtime::{Program, ProgramOptions};
use crate::DType;

/// Argument layout of the step program.
pub struct StepLayout {
    pub params: Vec<ParamSpec>,
    /// Optimizer state per parameter, flattened in parameter order.
    pub state: Vec<(String, StateSpec)>,
    /// First argument index of the parameters, of the state, and of (lr, count).
    pub params_at: usize,
    pub state_at: usize,
    pub scalars_at: usize,
}

/// Batch inputs of one device: `[b, T_text]` ids and mask, `[b, T_img]` labels.
fn batch_params(g: &Graph, model: &DalleBart, per_device: i64) -> (Tensor, Tensor, Tensor) {
    let c = &model.config;
    (
        g.param("input_ids", DType::I32, &[per_device, c.max_text_length]),
        g.param("attention_mask", DType::I32, &[per_device, c.max_text_length]),
        g.param("labels", DType::I32, &[per_device, c.image_length]),
    )
}

/// Mean over replicas (identity on one device).
fn replica_mean(t: &Tensor, replicas: usize) -> crate::graph::Result<Tensor> {
    if replicas == 1 {
        return Ok(t.clone());
    }
    crate::graph::all_reduce_sum(t)?.scale(1.0 / replicas as f64)
}

/// Builds and compiles the step for `replicas` devices with `per_device` examples each.
pub fn compile_train_step(
    client: &Client,
    model: &DalleBart,
    optimizer: &dyn Optimizer,
    max_grad_norm: f64,
    per_device: i64,
    replicas: usize,
) -> Result<(Program, StepLayout)> {
    let g = Graph::new("train_step");
    let (ids, mask, labels) = batch_params(&g, model, per_device);
    let vb = VarBuilder::new(&g, DType::F32);
    let loss = model.loss(&vb, &ids, &mask, &labels)?;
    let params = vb.tensors();
    let specs = vb.specs();
    let state_at = 3 + params.len();
    let mut state_specs = Vec::new();
    let mut state = Vec::new();
    for s in &specs {
        let per: Vec<Tensor> = optimizer
            .state(&s.ty)
            .into_iter()
            .map(|st| {
                let t = g.param(&format!("{}/{}", s.name, st.suffix), st.ty.dtype, &st.ty.shape);
                state_specs.push((s.name.clone(), st));
                t
            })
            .collect();
        state.push(per);
    }
    let scalars_at = g.params().len();
    let lr = g.param("lr", DType::F32, &[]);
    let count = g.param("count", DType::F32, &[]);

    let refs: Vec<&Tensor> = params.iter().collect();
    let grads = grad(&loss, &refs)?;
    let grads = grads.iter().map(|gr| replica_mean(gr, replicas)).collect::<crate::graph::Result<Vec<_>>>()?;
    let (grads, norm) = clip_by_global_norm(&grads, max_grad_norm)?;
    let scalars = StepScalars { lr: &lr, count: &count };
    let mut new_params = Vec::new();
    let mut new_state = Vec::new();
    for ((p, gr), st) in params.iter().zip(&grads).zip(&state) {
        let (np, ns) = optimizer.update(p, gr, st, &scalars)?;
        new_params.push(np);
        new_state.extend(ns);
    }
    let mean_loss = replica_mean(&loss, replicas)?;
    let mut outs: Vec<&Tensor> = new_params.iter().collect();
    outs.extend(new_state.iter());
    outs.push(&mean_loss);
    outs.push(&norm);
    let donate = 3..scalars_at;
    let opts = ProgramOptions::replicated(replicas).donating(donate);
    let program = Program::compile(client, &g, &outs, &opts)?;
    Ok((program, StepLayout { params: specs, state: state_specs, params_at: 3, state_at, scalars_at }))
}

/// Loss on a batch without updating: `(batch, params) -> mean loss`.
pub fn compile_eval_step(client: &Client, model: &DalleBart, per_device: i64, replicas: usize) -> Result<Program> {
    let g = Graph::new("eval_step");
    let (ids, mask, labels) = batch_params(&g, model, per_device);
    let vb = VarBuilder::new(&g, DType::F32);
    let loss = model.loss(&vb, &ids, &mask, &labels)?;
    let mean_loss = replica_mean(&loss, replicas)?;
    Ok(Program::compile(client, &g, &[&mean_loss], &ProgramOptions::replicated(replicas))?)
}

/// Parameter specs of a model without compiling anything (counts, init, loading).
pub fn model_params(model: &DalleBart, batch: i64) -> Result<Vec<ParamSpec>> {
    let g = Graph::new("params");
    let (ids, mask, labels) = batch_params(&g, model, batch);
    let vb = VarBuilder::new(&g, DType::F32);
    model.loss(&vb, &ids, &mask, &labels)?;
    Ok(vb.specs())
}

/// Types of the state of every parameter, for zero-initialisation.
pub fn state_types(layout: &StepLayout) -> Vec<TensorType> {
    layout.state.iter().map(|(_, s)| s.ty.clone()).collect()
}
