//! The VQGAN model side of the shared training loop ([`crate::train::fit`]):
//! compile [`VqganSteps`], put seeded weights on every device, then alternate
//! generator and (from `loss.disc_start`) discriminator updates over batches
//! from the image loader. Checkpoints hold both networks' parameters and
//! optimizer state (`generator/...`, `discriminator/...`); the autoencoder
//! weights alone can be exported to a self-describing safetensors file
//! (`vqgan.safetensors`, model config in its metadata) for `dalle encode`.

use super::steps::{VqganSetup, VqganSteps, DISCRIMINATOR_STATS, GENERATOR_GAN_STATS, GENERATOR_STATS};
use super::train_config::VqganTrainConfig;
use crate::weights::{read_safetensors_with_metadata, to_safetensors_with_metadata};
use super::{Lpips, Vqgan, VqganConfig};
use crate::checkpoint::{Checkpoint, CheckpointMeta, Snapshot, StopSignal};
use crate::data::images::{ImageIndex, ImageLoader, LoaderOptions, SkipReport};
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::host::HostTensor;
use crate::pjrt::{Buffer, Client};
use crate::runtime::download;
use crate::train::{describe_model, update_scalars, NetLayout, StepRecord, Trainable};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The exported autoencoder weights inside a run directory.
pub const WEIGHTS_FILE: &str = "vqgan.safetensors";
/// Metadata key holding the model config (JSON) in weight files.
pub const CONFIG_KEY: &str = "vqgan_config";
const GENERATOR: &str = "generator/";
const DISCRIMINATOR: &str = "discriminator/";

/// Statistics of one update, by name (`loss`, `pixel`, `codebook`, `d_loss`, ...).
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
    train_data: ImageLoader,
    /// Held-out batches for the reconstruction error.
    eval_data: Vec<HostTensor>,
}

fn start_loader(config: &VqganTrainConfig, source: &str, seed: u64, shuffle: bool, epochs: Option<u64>, start_batch: u64) -> Result<ImageLoader> {
    let index = ImageIndex::open(Path::new(source))?;
    let options = LoaderOptions {
        resolution: config.model.resolution as u32,
        batch_size: config.train.batch_size,
        seed,
        shuffle,
        epochs,
        workers: config.data.workers,
        start_batch,
        ..Default::default()
    };
    ImageLoader::start(index, options)
}

impl VqganTrainer {
    /// Compiles the programs and puts fresh (seeded) weights on every device,
    /// or the run directory's checkpoint when it has one.
    pub fn new(client: &Client, config: VqganTrainConfig) -> Result<VqganTrainer> {
        config.validate().map_err(Error::Invalid)?;
        let t = &config.train;
        let replicas = t.first_devices(client.device_count(), "VQGAN").map_err(Error::Invalid)?;
        // Before allocating weights or compiling: absurd sizes become an error, not an abort.
        let estimate = super::training_memory(&config, replicas)?;
        crate::runtime::memory::check_fits("this VQGAN config", &estimate, client.platform(), replicas, "lower model.resolution, model.ch or train.batch_size")?;
        // The data first: a dataset that cannot fill a batch fails before minutes of compiling.
        let mut train_data = start_loader(&config, &config.data.images, config.train.seed, true, None, 0)?;
        train_data.wait_until_ready()?;
        let eval_data = match &config.data.eval_images {
            Some(source) => {
                let loader = start_loader(&config, source, 0, false, Some(1), 0)?;
                let batches = loader.take(config.train.eval_batches.max(1) as usize).collect::<Result<Vec<_>>>()?;
                if batches.is_empty() {
                    return Err(Error::Invalid(format!(
                        "data.eval_images '{source}' has fewer readable images than one batch (train.batch_size = {})",
                        config.train.batch_size
                    )));
                }
                batches.into_iter().map(|b| b.pixels).collect()
            }
            None => Vec::new(),
        };
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
        let mut trainer = VqganTrainer { config, replicas, steps, generator: vec![], frozen, discriminator: vec![], step: 0, train_data, eval_data };
        let seed = trainer.config.train.seed;
        let (g, d) = (trainer.steps.generator.initial_values(seed), trainer.steps.discriminator.initial_values(seed));
        trainer.upload(&g.iter().collect::<Vec<_>>(), &d.iter().collect::<Vec<_>>())?;
        Ok(trainer)
    }

    /// Images the loader left out so far (unreadable or without caption).
    pub fn skipped_images(&self) -> SkipReport {
        self.train_data.skipped()
    }

    /// Autoencoder parameters, in the order the compiled programs take them.
    pub fn parameter_count(&self) -> i64 {
        self.steps.generator.params.iter().map(|p| p.ty.numel()).sum()
    }

    pub fn generator_layout(&self) -> &NetLayout {
        &self.steps.generator
    }

    pub fn discriminator_layout(&self) -> &NetLayout {
        &self.steps.discriminator
    }

    fn upload(&mut self, generator: &[&HostTensor], discriminator: &[&HostTensor]) -> Result<()> {
        self.steps.generator.check(generator, "generator")?;
        self.steps.discriminator.check(discriminator, "discriminator")?;
        let program = &self.steps.generator_step;
        self.generator = (0..self.replicas).map(|i| program.upload(i, generator)).collect::<Result<_>>()?;
        self.discriminator = (0..self.replicas).map(|i| program.upload(i, discriminator)).collect::<Result<_>>()?;
        Ok(())
    }

    /// One update on `images` `[batch_size, R, R, 3]` in [-1, 1]: the
    /// autoencoder, then (from `disc_start`) the discriminator.
    pub fn train_on(&mut self, images: &HostTensor) -> Result<StepStats> {
        let gan = self.step >= self.config.loss.disc_start && self.steps.generator_gan_step.is_some();
        let shards = images.split_rows(self.replicas)?;
        let g_program = if gan { self.steps.generator_gan_step.as_ref().expect("checked") } else { &self.steps.generator_step };
        let inputs: Vec<Vec<Buffer>> = shards.iter().enumerate().map(|(d, s)| g_program.upload(d, &[s])).collect::<Result<_>>()?;
        let g_lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
        let scalars = update_scalars(g_program, self.replicas, g_lr, self.step)?;
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
        let names: &[&str] = if gan { &GENERATOR_GAN_STATS } else { &GENERATOR_STATS };
        // With the GAN phase on, the reconstructions follow the statistics: the discriminator's input.
        let (generator, recon) = self.steps.generator.take_updated(outputs, names, &mut stats)?;
        self.generator = generator;

        if gan {
            let d_program = self.steps.discriminator_step.as_ref().expect("compiled with the GAN programs");
            let d_lr = self.config.disc_optimizer.schedule.lr(self.config.disc_optimizer.learning_rate, self.step - self.config.loss.disc_start);
            let scalars = update_scalars(d_program, self.replicas, d_lr, self.step)?;
            let args: Vec<Vec<&Buffer>> =
                (0..self.replicas).map(|d| inputs[d].iter().chain(&recon[d]).chain(&self.discriminator[d]).chain(&scalars[d]).collect()).collect();
            let outputs = d_program.execute(&args).map_err(|e| self.lost(e))?;
            drop(args);
            self.discriminator = self.steps.discriminator.take_updated(outputs, &DISCRIMINATOR_STATS, &mut stats)?.0;
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
        let shards = images.split_rows(self.replicas)?;
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

    /// Mean squared reconstruction error over the held-out batches; `None` without `data.eval_images`.
    pub fn eval_mse(&self) -> Result<Option<f64>> {
        if self.eval_data.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for images in &self.eval_data {
            total += self.reconstruction_mse(images)?;
        }
        Ok(Some(total / self.eval_data.len() as f64))
    }
}

impl Trainable for VqganTrainer {
    fn step(&self) -> u64 {
        self.step
    }

    fn train_step(&mut self) -> Result<StepRecord> {
        let batch = self.train_data.next().ok_or_else(|| Error::Invalid("the image loader stopped before the last training step".into()))??;
        Ok(StepRecord::from_stats(self.train_on(&batch.pixels)?, self.config.train.batch_size as u64))
    }

    /// The held-out mean squared error; its PSNR is `10 log10(4 / mse)` dB.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        self.eval_mse()
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let mut tensors = self.steps.generator.download(&self.generator[0], GENERATOR)?;
        tensors.extend(self.steps.discriminator.download(&self.discriminator[0], DISCRIMINATOR)?);
        Ok(Checkpoint {
            step: self.step,
            tensors,
            meta: CheckpointMeta {
                samples_seen: self.step * self.config.train.batch_size as u64,
                data_position: serde_json::json!({ "kind": "images", "step": self.step }),
                rng: serde_json::json!({ "seed": self.config.train.seed }),
                ..Default::default()
            },
        }
        .into())
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let (g, d) = (self.steps.generator.pick(checkpoint, GENERATOR)?, self.steps.discriminator.pick(checkpoint, DISCRIMINATOR)?);
        self.upload(&g, &d)?;
        self.step = checkpoint.step;
        // One batch per update: the stream resumes after the batches already
        // trained on, as an uninterrupted run would continue (exactly so when
        // every image is readable).
        self.train_data.restart_with(start_loader(&self.config, &self.config.data.images, self.config.train.seed, true, None, checkpoint.step)?);
        Ok(())
    }

    fn describe(&self) -> String {
        describe_model("VQGAN", self.parameter_count())
    }

    fn replicas(&self) -> usize {
        self.replicas
    }

    fn stop_on(&mut self, signal: &StopSignal) {
        self.train_data.stop_on(signal.clone());
    }

    fn tensor_types(&self) -> Vec<(String, TensorType)> {
        let mut out = self.steps.generator.tensor_types(GENERATOR);
        out.extend(self.steps.discriminator.tensor_types(DISCRIMINATOR));
        out
    }
}

/// Autoencoder weights as safetensors bytes with the model config in the
/// metadata, so the file alone is enough to encode and decode.
/// Each tensor's SHA-256 goes into the metadata too ([`HASHES_KEY`]), so a
/// damaged file is refused on load instead of decoding to garbage.
pub fn weights_file(config: &VqganConfig, weights: &[(String, HostTensor)]) -> Result<Vec<u8>> {
    let config_json = serde_json::to_string(config).map_err(|e| Error::Invalid(format!("model config: {e}")))?;
    let hashes: BTreeMap<&str, String> = weights.iter().map(|(name, t)| (name.as_str(), tensor_sha256(t))).collect();
    let hashes_json = serde_json::to_string(&hashes).map_err(|e| Error::Invalid(format!("weight hashes: {e}")))?;
    to_safetensors_with_metadata(weights, Some(HashMap::from([(CONFIG_KEY.to_string(), config_json), (HASHES_KEY.to_string(), hashes_json)])))
}

/// Metadata key of a weights file's per-tensor SHA-256 hashes (a JSON object).
pub const HASHES_KEY: &str = "tensor_sha256";

fn tensor_sha256(tensor: &HostTensor) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(&tensor.data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every tensor against the file's hashes; a file without hashes
/// (written elsewhere) loads with a warning.
fn check_hashes(weights: &BTreeMap<String, HostTensor>, meta: &HashMap<String, String>, path: &Path) -> Result<()> {
    let Some(json) = meta.get(HASHES_KEY) else {
        tracing::warn!("{} carries no tensor hashes, so damage to it cannot be detected", path.display());
        return Ok(());
    };
    let hashes: BTreeMap<String, String> =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("{}: the '{HASHES_KEY}' metadata is not a JSON object of hashes: {e}", path.display())))?;
    for (name, tensor) in weights {
        match hashes.get(name) {
            Some(want) if *want == tensor_sha256(tensor) => {}
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "{}: tensor '{name}' does not match its SHA-256 in the file: the file is damaged (copy it again or export it again from its run)",
                    path.display()
                )))
            }
            None => return Err(Error::Invalid(format!("{}: tensor '{name}' has no hash in the file's '{HASHES_KEY}' metadata", path.display()))),
        }
    }
    if let Some(missing) = hashes.keys().find(|n| !weights.contains_key(*n)) {
        return Err(Error::Invalid(format!("{}: tensor '{missing}' is listed in the hashes but missing from the file", path.display())));
    }
    Ok(())
}

/// The autoencoder weights of a checkpoint (`generator/` tensors without optimizer state).
pub fn checkpoint_weights(checkpoint: &Checkpoint) -> Vec<(String, HostTensor)> {
    checkpoint
        .tensors
        .iter()
        .filter_map(|(n, t)| n.strip_prefix(GENERATOR).filter(|n| !n.contains('/')).map(|n| (n.to_string(), t.clone())))
        .collect()
}

/// Reads a weights file written from [`weights_file`]: the model config and the parameters.
pub fn load_weights(path: &Path) -> Result<(VqganConfig, BTreeMap<String, HostTensor>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse_weights(&bytes, path)
}

/// The VQGAN of `--vqgan`: a model directory (converted by `dalle convert`,
/// or a released vqgan-jax one), a weights file, or a run directory (local or a
/// storage URL) holding `vqgan.safetensors` or, failing that, checkpoints
/// (the newest committed one is used). Returns the config, the weights and
/// where they came from.
pub fn open_vqgan(path_or_run: &str) -> Result<(VqganConfig, BTreeMap<String, HostTensor>, String)> {
    let local = Path::new(path_or_run);
    if local.is_dir() && super::flax::is_model_dir(local) {
        let (c, w) = super::flax::load_weights_dir(local)?;
        return Ok((c, w, path_or_run.to_string()));
    }
    if local.is_file() {
        let (c, w) = load_weights(local)?;
        return Ok((c, w, path_or_run.to_string()));
    }
    let location = crate::storage::open(path_or_run).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(bytes) = location.get(WEIGHTS_FILE).map_err(|e| Error::Invalid(e.to_string()))? {
        let origin = format!("{}/{WEIGHTS_FILE}", path_or_run.trim_end_matches('/'));
        let (c, w) = parse_weights(&bytes, Path::new(&origin))?;
        return Ok((c, w, origin));
    }
    let manager = crate::checkpoint::CheckpointManager::open(&location, crate::checkpoint::CheckpointConfig::default().retention())
        .map_err(|e| Error::Invalid(format!("{path_or_run}: {e}")))?;
    let checkpoint = manager.restore_latest().map_err(|e| Error::Invalid(format!("{path_or_run}: {e}")))?.ok_or_else(|| {
        Error::Invalid(format!("{path_or_run} is neither a VQGAN weights file nor a run with {WEIGHTS_FILE} or a committed checkpoint"))
    })?;
    let config: VqganTrainConfig = serde_yaml::from_str(&checkpoint.meta.config_yaml)
        .map_err(|e| Error::Invalid(format!("{path_or_run}: the checkpoint's config is not a VQGAN training config: {e}")))?;
    let origin = format!("{path_or_run} (checkpoint of step {})", checkpoint.step);
    Ok((config.model, checkpoint_weights(&checkpoint).into_iter().collect(), origin))
}

fn parse_weights(bytes: &[u8], path: &Path) -> Result<(VqganConfig, BTreeMap<String, HostTensor>)> {
    let (weights, meta) = read_safetensors_with_metadata(bytes, &path.display().to_string())?;
    check_hashes(&weights, &meta, path)?;
    let json = meta.get(CONFIG_KEY).ok_or_else(|| {
        Error::Invalid(format!("{} has no '{CONFIG_KEY}' metadata: it was not written by dalle train-vqgan", path.display()))
    })?;
    let config: VqganConfig =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("{}: the '{CONFIG_KEY}' metadata is not a VQGAN config: {e}", path.display())))?;
    config.validate().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok((config, weights))
}

/// PSNR in dB of a mean squared error on pixels in [-1, 1] (peak-to-peak 2).
pub fn psnr(mse: f64) -> f64 {
    10.0 * (4.0 / mse.max(1e-12)).log10()
}
