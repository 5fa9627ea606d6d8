//! The compiled programs of CLIP training, replicated over the devices:
//!
//! - `train`: the contrastive loss over the global batch, its gradients
//!   averaged over the replicas, clipping and the optimizer update (parameters
//!   and state donated), `logit_scale` clamped to [0, ln 100] after the update
//!   as OpenAI's and open_clip's training do;
//! - `eval`: the same loss and in-batch accuracy, no update.
//!
//! Each replica embeds its own shard of images and captions; the embeddings of
//! all replicas are gathered (`all_gather`), so every replica scores the full
//! `global batch x global batch` similarity matrix and every example has all
//! others of the global batch as negatives. Every replica then holds the same
//! global loss; the gather's transpose (a reduce-scatter) sums the replicas'
//! cotangents of each shard, so the replica sum of parameter gradients is
//! `replicas` times the gradient of the global loss, and the usual
//! mean over replicas gives it exactly.

use super::model::{l2_normalize, similarity};
use super::Clip;
use crate::error::Result;
use crate::graph::{all_gather, all_reduce_sum, grad, Graph, Result as GraphResult, Tensor};
use crate::host::HostTensor;
use crate::train::NetLayout;
use crate::nn::{cross_entropy, VarBuilder};
use crate::optim::{clip_by_global_norm, Optimizer, StepScalars};
use crate::pjrt::Client;
use crate::runtime::{Program, ProgramOptions};
use crate::DType;

/// Statistics the `train` program returns, in order (one f32 vector).
pub const TRAIN_STATS: [&str; 4] = ["loss", "accuracy", "grad_norm", "logit_scale"];
/// Statistics of `eval`.
pub const EVAL_STATS: [&str; 2] = ["loss", "accuracy"];
/// `logit_scale` is kept in [0, ln 100] (temperature at least 0.01).
pub const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

pub struct ClipSetup<'a> {
    pub client: &'a Client,
    pub model: &'a Clip,
    pub optimizer: &'a dyn Optimizer,
    pub max_grad_norm: f64,
    /// Examples per device per step.
    pub per_device: i64,
    pub replicas: usize,
    /// Normalisation of [0, 1] pixels.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

pub struct ClipSteps {
    pub layout: NetLayout,
    pub train: Program,
    pub eval: Program,
}

/// Symmetric cross-entropy of the global batch's similarity matrix, and the
/// image-to-text top-1 accuracy.
fn contrastive(g: &Graph, vb: &VarBuilder, s: &ClipSetup) -> GraphResult<(Tensor, Tensor)> {
    let c = &s.model.config;
    let side = c.vision.image_size;
    let pixels = g.param("pixels", DType::F32, &[s.per_device, side, side, c.vision.num_channels]);
    let ids = g.param("input_ids", DType::I32, &[s.per_device, c.text.max_position_embeddings]);
    // The image loaders serve [-1, 1]; CLIP normalises [0, 1] pixels per channel.
    let mean = g.constant(HostTensor::new(&[3], &s.mean).expect("three values"));
    let inv_std = g.constant(HostTensor::new(&[3], &s.std.map(|x| 1.0 / x)).expect("three values"));
    let pixels = pixels.add_scalar(1.0)?.scale(0.5)?.sub(&mean)?.mul(&inv_std)?;
    let mut images = l2_normalize(&s.model.image_features(vb, &pixels)?)?;
    let mut texts = l2_normalize(&s.model.text_features(vb, &ids)?)?;
    if s.replicas > 1 {
        images = all_gather(&images, 0, s.replicas)?;
        texts = all_gather(&texts, 0, s.replicas)?;
    }
    let logits = similarity(&images, &texts, &s.model.logit_scale(vb)?)?; // [B, B]
    let n = logits.shape()[0];
    let labels = g.iota(DType::I32, &[n], 0)?;
    let loss = cross_entropy(&logits, &labels)?.add(&cross_entropy(&logits.transpose(&[1, 0])?, &labels)?)?.scale(0.5)?;
    let hits = logits.argmax(-1)?.eq(&labels)?.cast(DType::F32)?;
    Ok((loss, hits.mean_all()?))
}

fn stack(stats: &[Tensor]) -> GraphResult<Tensor> {
    let parts = stats.iter().map(|t| t.cast(DType::F32)?.reshape(&[1])).collect::<GraphResult<Vec<_>>>()?;
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn replica_mean(t: &Tensor, replicas: usize) -> GraphResult<Tensor> {
    if replicas == 1 {
        Ok(t.clone())
    } else {
        all_reduce_sum(t)?.scale(1.0 / replicas as f64)
    }
}

impl ClipSteps {
    pub fn compile(s: &ClipSetup) -> Result<ClipSteps> {
        let opts = ProgramOptions::replicated(s.replicas);

        let g = Graph::new("clip_train");
        let vb = VarBuilder::new(&g, DType::F32);
        let (loss, accuracy) = contrastive(&g, &vb, s)?;
        let specs = vb.specs();
        let params = vb.tensors();
        let mut state = Vec::new();
        let mut state_specs = Vec::new();
        for p in &specs {
            let per: Vec<Tensor> = s
                .optimizer
                .state(&p.ty)
                .into_iter()
                .map(|st| {
                    let t = g.param(&format!("{}/{}", p.name, st.suffix), st.ty.dtype, &st.ty.shape);
                    state_specs.push((p.name.clone(), st));
                    t
                })
                .collect();
            state.push(per);
        }
        let lr = g.param("lr", DType::F32, &[]);
        let count = g.param("count", DType::F32, &[]);
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = grad(&loss, &refs)?;
        let mean_grads = grads.iter().map(|gr| replica_mean(gr, s.replicas)).collect::<GraphResult<Vec<_>>>()?;
        let (clipped, norm) = clip_by_global_norm(&mean_grads, s.max_grad_norm)?;
        let scalars = StepScalars { lr: &lr, count: &count, partitions: 1 };
        let mut outs = Vec::new();
        let mut new_state = Vec::new();
        let mut new_scale = None;
        for (spec, (mut np, ns)) in specs.iter().zip(s.optimizer.update_all(&params, &clipped, &state, &scalars, &[])?) {
            if spec.name == "logit_scale" {
                np = np.clamp(0.0, MAX_LOGIT_SCALE)?;
                new_scale = Some(np.clone());
            }
            outs.push(np);
            new_state.extend(ns);
        }
        outs.extend(new_state);
        // Every replica computed the same global loss; the mean keeps one value.
        let stats = [replica_mean(&loss, s.replicas)?, replica_mean(&accuracy, s.replicas)?, norm, new_scale.expect("CLIP has a logit_scale")];
        outs.push(stack(&stats)?);
        let first = 2;
        let donated = first..first + params.len() + state_specs.len();
        let out_refs: Vec<&Tensor> = outs.iter().collect();
        let train = Program::compile(s.client, &g, &out_refs, &opts.clone().donating(donated))?;

        let g = Graph::new("clip_eval");
        let vb = VarBuilder::new(&g, DType::F32);
        let (loss, accuracy) = contrastive(&g, &vb, s)?;
        let eval_out = stack(&[replica_mean(&loss, s.replicas)?, replica_mean(&accuracy, s.replicas)?])?;
        let eval = Program::compile(s.client, &g, &[&eval_out], &opts)?;
        Ok(ClipSteps { layout: NetLayout { params: specs, state: state_specs }, train, eval })
    }
}
