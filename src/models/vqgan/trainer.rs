//! The VQGAN training loop: compile [`VqganSteps`], initialise or resume the
//! autoencoder and discriminator on every device, then alternate generator and
//! (from `loss.disc_start`) discriminator updates over image batches.
//!
//! A checkpoint is one safetensors file in the run directory
//! (`vqgan_checkpoint.safetensors`: both networks' parameters and optimizer
//! state, with the step and config in its metadata), written atomically; the
//! autoencoder weights alone go to `vqgan.safetensors`, which `dalle encode`
//! and `dalle decode` read.

use super::steps::{NetLayout, VqganSetup, VqganSteps, DISCRIMINATOR_STATS, GENERATOR_GAN_STATS, GENERATOR_STATS};
use super::weights::{load_safetensors_with_metadata, save_safetensors_with_metadata};
use super::{Lpips, Vqgan, VqganConfig};
use super::train_config::VqganTrainConfig;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// File names inside the run directory.
pub const CHECKPOINT_FILE: &str = "vqgan_checkpoint.safetensors";
pub const WEIGHTS_FILE: &str = "vqgan.safetensors";
/// Metadata key holding the model config (JSON) in weight files.
pub const CONFIG_KEY: &str = "vqgan_config";
const STEP_KEY: &str = "step";

/// Statistics of one update, by name (`loss`, `l1`, `codebook`, `d_loss`, ...).
pub type StepStats = BTreeMap<String, f64>;

pub struct VqganTrainer {
    pub config: VqganTrainConfig,
    pub replicas: usize,
    steps: VqganSteps,
    /// Per device: generator params + state, frozen LPIPS weights, discriminator params + state.
    generator: Vec<Vec<Buffer>>,
    frozen: Vec<Vec<Buffer>>,
    discriminator: Vec<Vec<Buffer>>,
    /// Updates done so far.
    pub step: u64,
}

fn split_rows(batch: &HostTensor, parts: usize) -> Result<Vec<HostTensor>> {
    let n = batch.shape[0] as usize;
    if n % parts != 0 {
        return Err(Error::Invalid(format!("a batch of {n} images cannot be split evenly over {parts} devices")));
    }
    let per = n / parts;
    let row = batch.data.len() / n.max(1);
    Ok((0..parts)
        .map(|d| {
            let mut shape = batch.shape.clone();
            shape[0] = per as i64;
            HostTensor { dtype: batch.dtype, shape, data: batch.data[d * per * row..(d + 1) * per * row].to_vec() }
        })
        .collect())
}

impl VqganTrainer {
    /// Compiles the programs and puts fresh (seeded) weights on every device,
    /// or the run directory's checkpoint when it has one.
    pub fn new(client: &Client, config: VqganTrainConfig) -> Result<VqganTrainer> {
        config.validate().map_err(Error::Invalid)?;
        let t = &config.train;
        let replicas = if t.devices == 0 { client.device_count() } else { t.devices };
        if replicas > client.device_count() {
            return Err(Error::Invalid(format!("train.devices is {replicas} but the client has {} devices", client.device_count())));
        }
        if t.batch_size % replicas != 0 {
            return Err(Error::Invalid(format!("train.batch_size ({}) must be divisible by the {replicas} devices", t.batch_size)));
        }
        let lpips = match (&config.loss.vgg16, &config.loss.lpips) {
            (Some(vgg), Some(heads)) => Some(Lpips::load(Path::new(vgg), Path::new(heads))?),
            _ => {
                tracing::warn!("no loss.vgg16 / loss.lpips weights given: training without the perceptual loss");
                None
            }
        };
        let model = Vqgan::new(config.model.clone());
        let (g_opt, d_opt) = (config.optimizer.build().map_err(Error::Invalid)?, config.disc_optimizer.build().map_err(Error::Invalid)?);
        let started = std::time::Instant::now();
        let steps = VqganSteps::compile(&VqganSetup {
            client,
            model: &model,
            discriminator: &config.discriminator,
            loss: &config.loss,
            lpips: lpips.as_ref(),
            generator_optimizer: g_opt.as_ref(),
            discriminator_optimizer: d_opt.as_ref(),
            generator_clip: config.optimizer.max_grad_norm,
            discriminator_clip: config.disc_optimizer.max_grad_norm,
            per_device: (t.batch_size / replicas) as i64,
            replicas,
            with_gan: config.loss.disc_start < t.steps,
        })?;
        tracing::info!("compiled the VQGAN training programs for {replicas} device(s) in {:.1?}", started.elapsed());
        let program = &steps.generator_step;
        let frozen_values: Vec<HostTensor> = match &lpips {
            Some(l) => steps.frozen.iter().map(|n| l.weights.get(n).cloned().ok_or_else(|| Error::Invalid(format!("LPIPS weight '{n}' missing")))).collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let frozen_refs: Vec<&HostTensor> = frozen_values.iter().collect();
        let frozen = (0..replicas).map(|d| program.upload(d, &frozen_refs)).collect::<Result<_>>()?;
        let mut trainer = VqganTrainer { config, replicas, steps, generator: vec![], frozen, discriminator: vec![], step: 0 };
        let checkpoint = trainer.run_dir().join(CHECKPOINT_FILE);
        if checkpoint.exists() {
            trainer.restore(&checkpoint)?;
        } else {
            let seed = trainer.config.train.seed;
            let init = |layout: &NetLayout| -> Vec<HostTensor> {
                let params = layout.params.iter().map(|p| p.init.sample(seed, &p.name, p.ty.dtype, &p.ty.shape));
                params.chain(layout.state.iter().map(|(_, s)| HostTensor::zeros(s.ty.dtype, &s.ty.shape))).collect()
            };
            let (g, d) = (init(&trainer.steps.generator), init(&trainer.steps.discriminator));
            trainer.upload(&g, &d)?;
        }
        Ok(trainer)
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.train.run_dir)
    }

    pub fn generator_layout(&self) -> &NetLayout {
        &self.steps.generator
    }

    pub fn discriminator_layout(&self) -> &NetLayout {
        &self.steps.discriminator
    }

    fn upload(&mut self, generator: &[HostTensor], discriminator: &[HostTensor]) -> Result<()> {
        for (layout, values, what) in [(&self.steps.generator, generator, "generator"), (&self.steps.discriminator, discriminator, "discriminator")] {
            let names = layout.names();
            if names.len() != values.len() {
                return Err(Error::Invalid(format!("the {what} has {} tensors, got {}", names.len(), values.len())));
            }
            let types = layout.params.iter().map(|p| &p.ty).chain(layout.state.iter().map(|(_, s)| &s.ty));
            for ((name, want), got) in names.iter().zip(types).zip(values) {
                if want.dtype != got.dtype || want.shape != got.shape {
                    return Err(Error::Invalid(format!("'{name}' must be {want}, got {}{:?}", got.dtype, got.shape)));
                }
            }
        }
        let program = &self.steps.generator_step;
        let g: Vec<&HostTensor> = generator.iter().collect();
        let d: Vec<&HostTensor> = discriminator.iter().collect();
        self.generator = (0..self.replicas).map(|i| program.upload(i, &g)).collect::<Result<_>>()?;
        self.discriminator = (0..self.replicas).map(|i| program.upload(i, &d)).collect::<Result<_>>()?;
        Ok(())
    }

    fn scalars(&self, program: &Program, lr: f64) -> Result<Vec<Vec<Buffer>>> {
        let (lr, count) = (HostTensor::scalar(lr as f32), HostTensor::scalar((self.step + 1) as f32));
        (0..self.replicas).map(|d| program.upload(d, &[&lr, &count])).collect()
    }

    /// One update on `images` `[batch_size, R, R, 3]` in [-1, 1]: the
    /// autoencoder, then (from `disc_start`) the discriminator.
    pub fn train_step(&mut self, images: &HostTensor) -> Result<StepStats> {
        let gan = self.step >= self.config.loss.disc_start && self.steps.generator_gan_step.is_some();
        let shards = split_rows(images, self.replicas)?;
        let g_program = if gan { self.steps.generator_gan_step.as_ref().expect("checked") } else { &self.steps.generator_step };
        let inputs: Vec<Vec<Buffer>> = shards.iter().enumerate().map(|(d, s)| g_program.upload(d, &[s])).collect::<Result<_>>()?;
        let g_lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
        let scalars = self.scalars(g_program, g_lr)?;
        let n_gen_params = self.steps.generator.params.len();
        let args: Vec<Vec<&Buffer>> = (0..self.replicas)
            .map(|d| {
                let (params, state) = self.generator[d].split_at(n_gen_params);
                let mut a: Vec<&Buffer> = inputs[d].iter().chain(params).chain(&self.frozen[d]).collect();
                if gan {
                    a.extend(self.discriminator[d][..self.steps.discriminator.params.len()].iter());
                }
                a.extend(state.iter().chain(&scalars[d]));
                a
            })
            .collect();
        let outputs = g_program.execute(&args).map_err(|e| self.lost(e))?;
        drop(args);
        let mut stats = StepStats::new();
        let kept = self.steps.generator.len();
        let mut recon = Vec::new();
        let mut new_generator = Vec::with_capacity(self.replicas);
        for (d, mut out) in outputs.into_iter().enumerate() {
            let mut tail = out.split_off(kept);
            if d == 0 {
                let names: &[&str] = if gan { &GENERATOR_GAN_STATS } else { &GENERATOR_STATS };
                for (name, v) in names.iter().zip(download(&tail[0])?.to_f64_vec()) {
                    stats.insert(name.to_string(), v);
                }
            }
            if gan {
                recon.push(tail.remove(1));
            }
            new_generator.push(out);
        }
        self.generator = new_generator;

        if gan {
            let d_program = self.steps.discriminator_step.as_ref().expect("compiled with the GAN programs");
            let d_lr = self.config.disc_optimizer.schedule.lr(self.config.disc_optimizer.learning_rate, self.step - self.config.loss.disc_start);
            let scalars = self.scalars(d_program, d_lr)?;
            let args: Vec<Vec<&Buffer>> =
                (0..self.replicas).map(|d| inputs[d].iter().chain([&recon[d]]).chain(&self.discriminator[d]).chain(&scalars[d]).collect()).collect();
            let outputs = d_program.execute(&args).map_err(|e| self.lost(e))?;
            drop(args);
            let kept = self.steps.discriminator.len();
            let mut new_disc = Vec::with_capacity(self.replicas);
            for (d, mut out) in outputs.into_iter().enumerate() {
                let tail = out.split_off(kept);
                if d == 0 {
                    for (name, v) in DISCRIMINATOR_STATS.iter().zip(download(&tail[0])?.to_f64_vec()) {
                        stats.insert(name.to_string(), v);
                    }
                }
                new_disc.push(out);
            }
            self.discriminator = new_disc;
        }
        stats.insert("lr".into(), g_lr);
        self.step += 1;
        Ok(stats)
    }

    fn lost(&self, e: Error) -> Error {
        Error::Invalid(format!("VQGAN training step {} failed; the weights on the devices may be lost, resume from the last checkpoint: {e}", self.step + 1))
    }

    /// Mean squared reconstruction error on `images` (pixels in [-1, 1]).
    pub fn reconstruction_mse(&self, images: &HostTensor) -> Result<f64> {
        let shards = split_rows(images, self.replicas)?;
        let program = &self.steps.eval;
        let n_params = self.steps.generator.params.len();
        let inputs: Vec<Vec<Buffer>> = shards.iter().enumerate().map(|(d, s)| program.upload(d, &[s])).collect::<Result<_>>()?;
        let args: Vec<Vec<&Buffer>> = (0..self.replicas).map(|d| inputs[d].iter().chain(&self.generator[d][..n_params]).collect()).collect();
        let out = program.execute(&args)?;
        Ok(download(&out[0][0])?.to_f64_vec()[0])
    }

    /// The autoencoder's parameters by name.
    pub fn parameters(&self) -> Result<BTreeMap<String, HostTensor>> {
        let layout = &self.steps.generator;
        layout.params.iter().zip(&self.generator[0]).map(|(p, b)| Ok((p.name.clone(), download(b)?))).collect()
    }

    /// The discriminator's parameters by name.
    pub fn discriminator_parameters(&self) -> Result<BTreeMap<String, HostTensor>> {
        let layout = &self.steps.discriminator;
        layout.params.iter().zip(&self.discriminator[0]).map(|(p, b)| Ok((p.name.clone(), download(b)?))).collect()
    }

    fn all_values(&self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        for (layout, buffers, prefix) in [(&self.steps.generator, &self.generator[0], "generator/"), (&self.steps.discriminator, &self.discriminator[0], "discriminator/")] {
            for (name, b) in layout.names().into_iter().zip(buffers) {
                out.push((format!("{prefix}{name}"), download(b)?));
            }
        }
        Ok(out)
    }

    /// Writes the checkpoint and the autoencoder weights into the run directory.
    pub fn save(&self) -> Result<()> {
        let dir = self.run_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let config_json = serde_json::to_string(&self.config.model).map_err(|e| Error::Invalid(format!("model config: {e}")))?;
        let meta = HashMap::from([(CONFIG_KEY.to_string(), config_json.clone()), (STEP_KEY.to_string(), self.step.to_string())]);
        save_safetensors_with_metadata(&dir.join(CHECKPOINT_FILE), &self.all_values()?, meta)?;
        let weights: Vec<(String, HostTensor)> = self.parameters()?.into_iter().collect();
        save_weights(&dir.join(WEIGHTS_FILE), &self.config.model, &weights)
    }

    fn restore(&mut self, path: &Path) -> Result<()> {
        let (values, meta) = load_safetensors_with_metadata(path)?;
        let origin = path.display().to_string();
        let step = meta
            .get(STEP_KEY)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| Error::Invalid(format!("{origin} has no '{STEP_KEY}' in its metadata")))?;
        let pick = |layout: &NetLayout, prefix: &str| -> Result<Vec<HostTensor>> {
            layout
                .names()
                .iter()
                .map(|n| values.get(&format!("{prefix}{n}")).cloned().ok_or_else(|| Error::Invalid(format!("{origin} has no tensor '{prefix}{n}'"))))
                .collect()
        };
        let (g, d) = (pick(&self.steps.generator, "generator/")?, pick(&self.steps.discriminator, "discriminator/")?);
        self.upload(&g, &d)?;
        self.step = step;
        tracing::info!("resumed the VQGAN from {origin} at step {step}");
        Ok(())
    }
}

/// Writes autoencoder weights with the model config in the file's metadata,
/// so the file alone is enough to encode and decode.
pub fn save_weights(path: &Path, config: &VqganConfig, weights: &[(String, HostTensor)]) -> Result<()> {
    let config_json = serde_json::to_string(config).map_err(|e| Error::Invalid(format!("model config: {e}")))?;
    save_safetensors_with_metadata(path, weights, HashMap::from([(CONFIG_KEY.to_string(), config_json)]))
}

/// Reads weights written by [`save_weights`] (a file, or a run directory
/// holding `vqgan.safetensors`): the model config and the parameters.
pub fn load_weights(path_or_run: &Path) -> Result<(VqganConfig, BTreeMap<String, HostTensor>, PathBuf)> {
    let path = if path_or_run.is_dir() { path_or_run.join(WEIGHTS_FILE) } else { path_or_run.to_path_buf() };
    let (weights, meta) = load_safetensors_with_metadata(&path)?;
    let json = meta.get(CONFIG_KEY).ok_or_else(|| {
        Error::Invalid(format!("{} has no '{CONFIG_KEY}' metadata: it was not written by dalle train-vqgan", path.display()))
    })?;
    let config: VqganConfig =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("{}: the '{CONFIG_KEY}' metadata is not a VQGAN config: {e}", path.display())))?;
    config.validate().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok((config, weights, path))
}

/// PSNR in dB of a mean squared error on pixels in [-1, 1] (peak-to-peak 2).
pub fn psnr(mse: f64) -> f64 {
    10.0 * (4.0 / mse.max(1e-12)).log10()
}

impl VqganTrainer {
    /// Trains until `train.steps` on `batches` (each `[batch_size, R, R, 3]`),
    /// logging every `log_every` updates to `<run_dir>/metrics.jsonl` and
    /// `on_log`, measuring PSNR on `eval` every `eval_every` updates, and
    /// checkpointing every `checkpoint_every` updates and at the end.
    pub fn run(
        &mut self,
        batches: &mut dyn Iterator<Item = Result<crate::data::images::ImageBatch>>,
        eval: &[HostTensor],
        mut on_log: impl FnMut(&StepStats),
    ) -> Result<()> {
        use std::io::Write;
        let dir = self.run_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let metrics_path = dir.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::io(format!("opening {}", metrics_path.display()), e))?;
        let mut window = (std::time::Instant::now(), 0u64);
        while self.step < self.config.train.steps {
            let batch = batches.next().ok_or_else(|| Error::Invalid("the image loader stopped before the last training step".into()))??;
            if batch.pixels.shape[0] as usize != self.config.train.batch_size {
                return Err(Error::Invalid(format!("expected batches of {} images, got {}", self.config.train.batch_size, batch.pixels.shape[0])));
            }
            let mut stats = self.train_step(&batch.pixels)?;
            window.1 += 1;
            if let Some((name, v)) = stats.iter().find(|(_, v)| !v.is_finite()) {
                return Err(Error::Invalid(format!("{name} became {v} at step {}", self.step)));
            }
            let t = &self.config.train;
            let eval_due = t.eval_every > 0 && !eval.is_empty() && (self.step % t.eval_every == 0 || self.step == t.steps);
            if self.step % t.log_every == 0 || eval_due || self.step == t.steps {
                if eval_due {
                    let mut total = 0.0;
                    for images in eval {
                        total += self.reconstruction_mse(images)?;
                    }
                    stats.insert("eval_psnr".into(), psnr(total / eval.len() as f64));
                }
                let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                stats.insert("images_per_sec".into(), (window.1 * t.batch_size as u64) as f64 / secs);
                stats.insert("step".into(), self.step as f64);
                let line = serde_json::to_string(&stats).map_err(|e| Error::Invalid(format!("metrics: {e}")))?;
                writeln!(metrics, "{line}").map_err(|e| Error::io(format!("writing {}", metrics_path.display()), e))?;
                on_log(&stats);
                window = (std::time::Instant::now(), 0);
            }
            let every = self.config.checkpoint_every;
            if (every > 0 && self.step % every == 0) || self.step == self.config.train.steps {
                self.save()?;
            }
        }
        Ok(())
    }
}
