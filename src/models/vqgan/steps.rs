//! The compiled programs of VQGAN training, replicated over the devices with
//! gradients averaged by all-reduce (as `crate::models::dallebart::compile_step_programs` does for DalleBart):
//!
//! - `generator`: autoencoder update on reconstruction + perceptual + codebook
//!   loss (the phase before `loss.disc_start`, no discriminator in the graph);
//! - `generator_gan`: the same plus the adaptively weighted GAN loss; also
//!   returns the reconstruction, which stays on device for the next program;
//! - `discriminator`: hinge-loss update of the PatchGAN on real images and
//!   that reconstruction;
//! - `eval`: the mean squared reconstruction error (for PSNR).
//!
//! Argument order of every program is fixed by the order tensors are created:
//! batch inputs, generator parameters, frozen LPIPS weights, discriminator
//! parameters, optimizer state, then `lr` and `count`. Parameters and
//! optimizer state are donated so updates happen in place.

use super::discriminator::DiscriminatorConfig;
use super::losses::{adaptive_weight, generator_loss, hinge_discriminator_loss, LossConfig};
use super::lpips::Lpips;
use super::Vqgan;
use crate::error::{Error, Result};
use crate::graph::{grad, Graph, Result as GraphResult, Tensor};
use crate::nn::{ParamSpec, VarBuilder};
use crate::optim::{clip_by_global_norm, Optimizer, StateSpec, StepScalars};
use crate::pjrt::Client;
use crate::runtime::{Program, ProgramOptions};
use crate::DType;
use crate::train::NetLayout;

/// Statistics the `generator` program returns, in order (one f32 vector).
pub const GENERATOR_STATS: [&str; 6] = ["loss", "pixel", "perceptual", "codebook", "codes_used", "grad_norm"];
/// Statistics of `generator_gan`.
pub const GENERATOR_GAN_STATS: [&str; 8] = ["loss", "pixel", "perceptual", "codebook", "codes_used", "g_loss", "d_weight", "grad_norm"];
/// Statistics of `discriminator`.
pub const DISCRIMINATOR_STATS: [&str; 4] = ["d_loss", "logits_real", "logits_fake", "d_grad_norm"];

pub struct VqganSetup<'a> {
    pub client: &'a Client,
    pub model: &'a Vqgan,
    pub discriminator: &'a DiscriminatorConfig,
    pub loss: &'a LossConfig,
    /// Frozen LPIPS weights, when the perceptual loss is on.
    pub lpips: Option<&'a Lpips>,
    pub generator_optimizer: &'a dyn Optimizer,
    pub discriminator_optimizer: &'a dyn Optimizer,
    pub generator_clip: f64,
    pub discriminator_clip: f64,
    /// Images per device per step.
    pub per_device: i64,
    pub replicas: usize,
    /// Compile the GAN programs (the run reaches `disc_start`).
    pub with_gan: bool,
}

pub struct VqganSteps {
    pub generator: NetLayout,
    pub discriminator: NetLayout,
    /// Names of the frozen LPIPS weights in argument order (empty without the perceptual loss).
    pub frozen: Vec<String>,
    pub generator_step: Program,
    pub generator_gan_step: Option<Program>,
    pub discriminator_step: Option<Program>,
    pub eval: Program,
}

fn replica_mean(t: &Tensor, replicas: usize) -> GraphResult<Tensor> {
    if replicas == 1 {
        Ok(t.clone())
    } else {
        crate::graph::all_reduce_sum(t)?.scale(1.0 / replicas as f64)
    }
}

fn image_param(g: &Graph, name: &str, s: &VqganSetup) -> Tensor {
    let c = &s.model.config;
    g.param(name, DType::F32, &[s.per_device, c.resolution, c.resolution, c.in_channels])
}

/// Optimizer state arguments for `specs`, then `lr` and `count`.
fn state_and_scalars(g: &Graph, specs: &[ParamSpec], opt: &dyn Optimizer) -> (Vec<Vec<Tensor>>, Vec<(String, StateSpec)>, Tensor, Tensor) {
    let mut flat = Vec::new();
    let per_param = specs
        .iter()
        .map(|p| {
            opt.state(&p.ty)
                .into_iter()
                .map(|st| {
                    let t = g.param(&format!("{}/{}", p.name, st.suffix), st.ty.dtype, &st.ty.shape);
                    flat.push((p.name.clone(), st));
                    t
                })
                .collect()
        })
        .collect();
    let lr = g.param("lr", DType::F32, &[]);
    let count = g.param("count", DType::F32, &[]);
    (per_param, flat, lr, count)
}

/// Mean gradients over replicas, clipped, applied: new parameters, new state, gradient norm.
#[allow(clippy::too_many_arguments)]
fn update(
    loss: &Tensor,
    params: &[Tensor],
    state: &[Vec<Tensor>],
    opt: &dyn Optimizer,
    clip: f64,
    lr: &Tensor,
    count: &Tensor,
    replicas: usize,
) -> GraphResult<(Vec<Tensor>, Vec<Tensor>, Tensor)> {
    let refs: Vec<&Tensor> = params.iter().collect();
    let grads = grad(loss, &refs)?.iter().map(|g| replica_mean(g, replicas)).collect::<GraphResult<Vec<_>>>()?;
    let (grads, norm) = clip_by_global_norm(&grads, clip)?;
    let scalars = StepScalars { lr, count, partitions: 1 };
    let (mut new_params, mut new_state) = (Vec::new(), Vec::new());
    for (np, ns) in opt.update_all(params, &grads, state, &scalars, &[])? {
        new_params.push(np);
        new_state.extend(ns);
    }
    Ok((new_params, new_state, norm))
}

/// Scalars `[k]` as one f32 vector (one download per step instead of k).
fn stack(stats: &[Tensor]) -> GraphResult<Tensor> {
    let parts = stats.iter().map(|s| s.cast(DType::F32)?.reshape(&[1])).collect::<GraphResult<Vec<_>>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::concat(&refs, 0)
}

/// Reconstruction terms shared by both generator programs.
struct GeneratorTerms {
    recon: Tensor,
    pixel: Tensor,
    perceptual: Tensor,
    codebook: Tensor,
    /// Share of the codebook chosen at least once in the step's batch; a
    /// small share is codebook collapse, which caps reconstruction quality.
    codes_used: Tensor,
    /// `pixel_weight * pixel + perceptual_weight * perceptual` (taming's `nll_loss`).
    nll: Tensor,
    params: Vec<ParamSpec>,
    param_tensors: Vec<Tensor>,
    frozen: Vec<String>,
}

fn generator_terms(g: &Graph, images: &Tensor, s: &VqganSetup) -> GraphResult<GeneratorTerms> {
    let vb = VarBuilder::new(g, DType::F32);
    let (recon, q) = s.model.reconstruct(&vb, images)?;
    let (params, param_tensors) = (vb.specs(), vb.tensors());
    let pixel = s.loss.pixel_loss.distance(images, &recon)?;
    let (perceptual, frozen) = match s.lpips {
        Some(_) => {
            let frozen_vb = VarBuilder::new(g, DType::F32);
            let d = Lpips::distance(&frozen_vb, images, &recon)?.mean_all()?;
            (d, frozen_vb.specs().into_iter().map(|p| p.name).collect())
        }
        None => (g.scalar(0.0, DType::F32), Vec::new()),
    };
    let nll = pixel.scale(s.loss.pixel_weight)?.add(&perceptual.scale(s.loss.perceptual_weight)?)?;
    let codes_used = codebook_usage(&q.indices, s.model.config.n_embed, s.replicas)?;
    Ok(GeneratorTerms { recon, pixel, perceptual, codebook: q.codebook_loss, codes_used, nll, params, param_tensors, frozen })
}

/// Share of the `n_embed` codes that `indices` (all replicas together) choose at least once.
fn codebook_usage(indices: &Tensor, n_embed: i64, replicas: usize) -> GraphResult<Tensor> {
    let counts = Tensor::one_hot(&indices.reshape_infer(&[-1])?, n_embed, DType::F32)?.sum(&[0], false)?;
    let counts = if replicas > 1 { crate::graph::all_reduce_sum(&counts)? } else { counts };
    counts.gt(&counts.zeros_like()?)?.cast(DType::F32)?.mean_all()
}

fn compile(client: &Client, g: &Graph, outs: &[Tensor], replicas: usize, donate: std::ops::Range<usize>) -> Result<Program> {
    let refs: Vec<&Tensor> = outs.iter().collect();
    Program::compile(client, g, &refs, &ProgramOptions::replicated(replicas).donating(donate))
}

impl VqganSteps {
    /// Builds and compiles the programs of `s`.
    pub fn compile(s: &VqganSetup) -> Result<VqganSteps> {
        let n = s.replicas;
        let last_layer = Vqgan::last_layer_name();

        // generator: (images, G, frozen, G state, lr, count) -> (G, G state, stats)
        let g = Graph::new("vqgan_generator_step");
        let images = image_param(&g, "images", s);
        let t = generator_terms(&g, &images, s)?;
        let loss = t.nll.add(&t.codebook.scale(s.loss.codebook_weight)?)?;
        let (state, state_specs, lr, count) = state_and_scalars(&g, &t.params, s.generator_optimizer);
        let (mut outs, new_state, norm) = update(&loss, &t.param_tensors, &state, s.generator_optimizer, s.generator_clip, &lr, &count, n)?;
        outs.extend(new_state);
        let mut stats = [&loss, &t.pixel, &t.perceptual, &t.codebook].iter().map(|x| replica_mean(x, n)).collect::<GraphResult<Vec<_>>>()?;
        stats.push(t.codes_used.clone());
        outs.push(stack(&[stats, vec![norm]].concat())?);
        let first_state = 1 + t.params.len() + t.frozen.len();
        let donated: Vec<usize> = (1..1 + t.params.len()).chain(first_state..first_state + state_specs.len()).collect();
        let refs: Vec<&Tensor> = outs.iter().collect();
        let program = Program::compile(s.client, &g, &refs, &ProgramOptions::replicated(n).donating(donated))?;
        let generator_step = check_arity(program, first_state + state_specs.len() + 2)?;
        let generator = NetLayout { params: t.params.clone(), state: state_specs };
        let frozen = t.frozen.clone();

        // eval: (images, G) -> mean squared error
        let g = Graph::new("vqgan_eval");
        let images = image_param(&g, "images", s);
        let vb = VarBuilder::new(&g, DType::F32);
        let (recon, _) = s.model.reconstruct(&vb, &images)?;
        let mse = replica_mean(&recon.sub(&images)?.square()?.mean_all()?, n)?;
        let eval = compile(s.client, &g, &[mse], n, 0..0)?;

        let mut steps = VqganSteps {
            generator,
            discriminator: NetLayout { params: vec![], state: vec![] },
            frozen,
            generator_step,
            generator_gan_step: None,
            discriminator_step: None,
            eval,
        };
        if !s.with_gan {
            // The discriminator's layout is still needed for checkpoints.
            steps.discriminator = discriminator_layout(s)?;
            return Ok(steps);
        }

        // generator_gan: (images, G, frozen, D, G state, lr, count) -> (G, G state, stats, recon)
        let g = Graph::new("vqgan_generator_gan_step");
        let images = image_param(&g, "images", s);
        let t = generator_terms(&g, &images, s)?;
        let dvb = VarBuilder::new(&g, DType::F32).pp("discriminator");
        let logits_fake = s.discriminator.forward(&dvb, &t.recon)?;
        let d_count = dvb.specs().len();
        let g_loss = generator_loss(&logits_fake)?;
        let last = t
            .params
            .iter()
            .position(|p| p.name == last_layer)
            .map(|i| t.param_tensors[i].clone())
            .ok_or_else(|| Error::Invalid(format!("the VQGAN has no parameter '{last_layer}'")))?;
        let d_weight = adaptive_weight(&t.nll, &g_loss, &last, s.loss.disc_weight)?;
        let gan = d_weight.mul(&g_loss)?.scale(s.loss.disc_factor)?;
        let loss = t.nll.add(&gan)?.add(&t.codebook.scale(s.loss.codebook_weight)?)?;
        let (state, state_specs, lr, count) = state_and_scalars(&g, &t.params, s.generator_optimizer);
        let (mut outs, new_state, norm) = update(&loss, &t.param_tensors, &state, s.generator_optimizer, s.generator_clip, &lr, &count, n)?;
        outs.extend(new_state);
        let mut stats = [&loss, &t.pixel, &t.perceptual, &t.codebook].iter().map(|x| replica_mean(x, n)).collect::<GraphResult<Vec<_>>>()?;
        stats.push(t.codes_used.clone());
        stats.extend([&g_loss, &d_weight].iter().map(|x| replica_mean(x, n)).collect::<GraphResult<Vec<_>>>()?);
        outs.push(stack(&[stats, vec![norm]].concat())?);
        outs.push(t.recon.stop_gradient()?);
        let first_state = 1 + t.params.len() + t.frozen.len() + d_count;
        let donated: Vec<usize> = (1..1 + t.params.len()).chain(first_state..first_state + state_specs.len()).collect();
        let refs: Vec<&Tensor> = outs.iter().collect();
        let program = Program::compile(s.client, &g, &refs, &ProgramOptions::replicated(n).donating(donated))?;
        steps.generator_gan_step = Some(check_arity(program, first_state + state_specs.len() + 2)?);

        // discriminator: (images, recon, D, D state, lr, count) -> (D, D state, stats)
        let g = Graph::new("vqgan_discriminator_step");
        let images = image_param(&g, "images", s);
        let recon = image_param(&g, "reconstruction", s);
        let dvb = VarBuilder::new(&g, DType::F32).pp("discriminator");
        let logits_real = s.discriminator.forward(&dvb, &images)?;
        let logits_fake = s.discriminator.forward(&dvb, &recon)?;
        let d_loss = hinge_discriminator_loss(&logits_real, &logits_fake)?.scale(s.loss.disc_factor)?;
        let (d_params, d_tensors) = (dvb.specs(), dvb.tensors());
        let (state, d_state, lr, count) = state_and_scalars(&g, &d_params, s.discriminator_optimizer);
        let (mut outs, new_state, norm) = update(&d_loss, &d_tensors, &state, s.discriminator_optimizer, s.discriminator_clip, &lr, &count, n)?;
        outs.extend(new_state);
        let stats = [&d_loss, &logits_real.mean_all()?, &logits_fake.mean_all()?].iter().map(|x| replica_mean(x, n)).collect::<GraphResult<Vec<_>>>()?;
        outs.push(stack(&[stats, vec![norm]].concat())?);
        let donate = 2..2 + d_params.len() + d_state.len();
        steps.discriminator_step = Some(check_arity(compile(s.client, &g, &outs, n, donate)?, 2 + d_params.len() + d_state.len() + 2)?);
        steps.discriminator = NetLayout { params: d_params, state: d_state };
        Ok(steps)
    }
}

/// The discriminator's parameters and optimizer state, without compiling anything.
fn discriminator_layout(s: &VqganSetup) -> Result<NetLayout> {
    let g = Graph::new("discriminator_parameters");
    let images = image_param(&g, "images", s);
    let dvb = VarBuilder::new(&g, DType::F32).pp("discriminator");
    s.discriminator.forward(&dvb, &images)?;
    let params = dvb.specs();
    let (_, state, _, _) = state_and_scalars(&g, &params, s.discriminator_optimizer);
    Ok(NetLayout { params, state })
}

/// Guards the argument-order convention the trainer relies on.
fn check_arity(p: Program, expected: usize) -> Result<Program> {
    if p.inputs.len() != expected {
        return Err(Error::Invalid(format!(
            "program '{}' takes {} arguments where the VQGAN trainer passes {expected}",
            p.name,
            p.inputs.len()
        )));
    }
    Ok(p)
}
