//! The CLIP model side of the shared training loop ([`crate::train::fit`]):
//! captioned images from the image loader, captions tokenized (with the
//! configured CLIP tokenizer, or one trained on the training captions), the
//! contrastive step program on every device. Checkpoints hold parameters
//! (under transformers' names) and optimizer state; [`export_hf`] writes a
//! Hugging Face CLIP directory that `dalle clip score` and transformers load.

use super::steps::{ClipSetup, ClipSteps, EVAL_STATS, TRAIN_STATS};
use super::tokenizer::train_clip_tokenizer;
use super::train_config::ClipTrainConfig;
use super::{Clip, ClipTokenizer, Preprocessor};
use crate::checkpoint::{Checkpoint, CheckpointMeta, Snapshot, StopSignal};
use crate::data::images::{ImageBatch, ImageIndex, ImageLoader, LoaderOptions, SkipReport};
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::host::HostTensor;
use crate::models::vqgan::to_safetensors;
use crate::pjrt::{Buffer, Client};
use crate::runtime::download;
use crate::train::{describe_model, update_scalars, NetLayout, StepRecord, Trainable};
use std::collections::BTreeMap;
use std::path::Path;

pub struct ClipTrainer {
    pub config: ClipTrainConfig,
    pub replicas: usize,
    pub tokenizer: ClipTokenizer,
    /// The tokenizer as `tokenizer.json` text (exported with the weights).
    pub tokenizer_json: String,
    steps: ClipSteps,
    /// Per device: parameters then optimizer state.
    state: Vec<Vec<Buffer>>,
    pub step: u64,
    train_data: ImageLoader,
    /// Held-out batches: pixels and token ids.
    eval_data: Vec<(HostTensor, HostTensor)>,
}

/// `start_batch` batches of the stream are skipped (those a resumed run already trained on).
fn start_loader(config: &ClipTrainConfig, source: &str, seed: u64, shuffle: bool, epochs: Option<u64>, start_batch: u64) -> Result<ImageLoader> {
    let index = ImageIndex::open(Path::new(source))?;
    let options = LoaderOptions {
        resolution: config.model.vision.image_size as u32,
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

/// The configured tokenizer, or one trained on the training captions; returned with its JSON.
fn open_tokenizer(config: &ClipTrainConfig) -> Result<(ClipTokenizer, String)> {
    let length = config.model.text.max_position_embeddings as usize;
    let (tokenizer, json) = match &config.data.tokenizer {
        Some(path) => {
            let path = Path::new(path);
            let t = ClipTokenizer::load(path, length).map_err(|e| Error::Invalid(format!("data.tokenizer: {e}")))?;
            let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
            let json = match std::fs::read_to_string(&file) {
                Ok(j) => j,
                // vocab.json + merges.txt: export the equivalent tokenizer.json.
                Err(_) => t.to_json()?,
            };
            (t, json)
        }
        None => {
            let index = ImageIndex::open(Path::new(&config.data.images))?;
            let captions: Vec<String> = index.records.iter().map(|r| r.caption.clone()).collect();
            let json = train_clip_tokenizer(&captions, config.model.text.vocab_size as usize)?;
            let tokenizer = json.parse().map_err(|e| Error::Invalid(format!("the trained tokenizer: {e}")))?;
            tracing::info!("trained a CLIP tokenizer on {} training captions", captions.len());
            (ClipTokenizer::new(tokenizer, super::EOS, length, "trained tokenizer")?, json)
        }
    };
    let t = &config.model.text;
    if tokenizer.vocab_size() as i64 > t.vocab_size {
        return Err(Error::Invalid(format!("the tokenizer has {} tokens but model.text.vocab_size is {}", tokenizer.vocab_size(), t.vocab_size)));
    }
    // Pooling happens at the end-of-text token: at the largest id under the legacy eos id 2.
    if t.eos_token_id == 2 && tokenizer.eos as usize + 1 != tokenizer.vocab_size() {
        return Err(Error::Invalid(format!(
            "model.text.eos_token_id is 2 (pool at the largest id) but the tokenizer's {} has id {} of {}; set model.text.eos_token_id: {}",
            super::EOS,
            tokenizer.eos,
            tokenizer.vocab_size(),
            tokenizer.eos
        )));
    }
    if t.eos_token_id != 2 && t.eos_token_id != tokenizer.eos as i64 {
        return Err(Error::Invalid(format!("model.text.eos_token_id is {} but the tokenizer's {} has id {}", t.eos_token_id, super::EOS, tokenizer.eos)));
    }
    Ok((tokenizer, json))
}

impl ClipTrainer {
    /// Opens the data and tokenizer, compiles the programs and puts fresh (seeded) weights on every device.
    pub fn new(client: &Client, config: ClipTrainConfig) -> Result<ClipTrainer> {
        config.validate().map_err(Error::Invalid)?;
        let t = &config.train;
        let replicas = t.first_devices(client.device_count(), "CLIP").map_err(Error::Invalid)?;
        let (tokenizer, tokenizer_json) = open_tokenizer(&config)?;
        let model = Clip::new(config.model.clone());
        let optimizer = config.optimizer.build().map_err(Error::Invalid)?;
        let started = std::time::Instant::now();
        let steps = ClipSteps::compile(&ClipSetup {
            client,
            model: &model,
            optimizer: optimizer.as_ref(),
            max_grad_norm: config.optimizer.max_grad_norm,
            per_device: (t.batch_size / replicas) as i64,
            replicas,
            mean: config.data.image_mean,
            std: config.data.image_std,
        })?;
        tracing::info!("compiled the CLIP training programs for {replicas} device(s) in {:.1?}", started.elapsed());
        let train_data = start_loader(&config, &config.data.images, config.train.seed, true, None, 0)?;
        let mut trainer = ClipTrainer { config, replicas, tokenizer, tokenizer_json, steps, state: vec![], step: 0, train_data, eval_data: vec![] };
        if let Some(source) = trainer.config.data.eval_images.clone() {
            let loader = start_loader(&trainer.config, &source, 0, false, Some(1), 0)?;
            for batch in loader.take(trainer.config.train.eval_batches.max(1) as usize) {
                let batch = batch?;
                let ids = trainer.token_ids(&batch)?;
                trainer.eval_data.push((batch.pixels, ids));
            }
            if trainer.eval_data.is_empty() {
                return Err(Error::Invalid(format!(
                    "data.eval_images '{source}' has fewer readable images than one batch (train.batch_size = {})",
                    trainer.config.train.batch_size
                )));
            }
        }
        let initial = trainer.steps.layout.initial_values(trainer.config.train.seed);
        trainer.upload(&initial.iter().collect::<Vec<_>>())?;
        Ok(trainer)
    }

    fn token_ids(&self, batch: &ImageBatch) -> Result<HostTensor> {
        let ids = self.tokenizer.encode_batch(&batch.captions)?;
        Ok(HostTensor::new(&[batch.captions.len() as i64, self.tokenizer.context_length as i64], &ids)?)
    }

    fn upload(&mut self, values: &[&HostTensor]) -> Result<()> {
        self.steps.layout.check(values, "CLIP")?;
        self.state = (0..self.replicas).map(|d| self.steps.train.upload(d, values)).collect::<Result<_>>()?;
        Ok(())
    }

    pub fn layout(&self) -> &NetLayout {
        &self.steps.layout
    }

    pub fn parameter_count(&self) -> i64 {
        self.steps.layout.params.iter().map(|p| p.ty.numel()).sum()
    }

    /// Images the loader left out so far (unreadable or without caption).
    pub fn skipped_images(&self) -> SkipReport {
        self.train_data.skipped()
    }

    /// One update on `pixels [batch, S, S, 3]` in [-1, 1] and token ids `[batch, L]`.
    pub fn train_on(&mut self, pixels: &HostTensor, ids: &HostTensor) -> Result<BTreeMap<String, f64>> {
        let program = &self.steps.train;
        let (ps, is) = (pixels.split_rows(self.replicas)?, ids.split_rows(self.replicas)?);
        let lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
        let inputs: Vec<Vec<Buffer>> = (0..self.replicas).map(|d| program.upload(d, &[&ps[d], &is[d]])).collect::<Result<_>>()?;
        let scalars = update_scalars(program, self.replicas, lr, self.step)?;
        let args: Vec<Vec<&Buffer>> = (0..self.replicas).map(|d| inputs[d].iter().chain(&self.state[d]).chain(&scalars[d]).collect()).collect();
        let outputs = program.execute(&args).map_err(|e| {
            Error::Invalid(format!("CLIP training step {} failed; the weights on the devices may be lost, resume from the last checkpoint: {e}", self.step + 1))
        })?;
        drop(args);
        let mut stats = BTreeMap::new();
        self.state = self.steps.layout.take_updated(outputs, &TRAIN_STATS, &mut stats)?.0;
        stats.insert("lr".into(), lr);
        self.step += 1;
        Ok(stats)
    }

    /// Contrastive loss and image-to-text accuracy on one batch, no update.
    pub fn evaluate_on(&self, pixels: &HostTensor, ids: &HostTensor) -> Result<(f64, f64)> {
        let program = &self.steps.eval;
        let (ps, is) = (pixels.split_rows(self.replicas)?, ids.split_rows(self.replicas)?);
        let n_params = self.steps.layout.params.len();
        let inputs: Vec<Vec<Buffer>> = (0..self.replicas).map(|d| program.upload(d, &[&ps[d], &is[d]])).collect::<Result<_>>()?;
        let args: Vec<Vec<&Buffer>> = (0..self.replicas).map(|d| inputs[d].iter().chain(&self.state[d][..n_params]).collect()).collect();
        let out = download(&program.execute(&args)?[0][0])?.to_f64_vec();
        debug_assert_eq!(out.len(), EVAL_STATS.len());
        Ok((out[0], out[1]))
    }

    /// The parameters by (transformers) name.
    pub fn parameters(&self) -> Result<BTreeMap<String, HostTensor>> {
        let layout = &self.steps.layout;
        layout.params.iter().zip(&self.state[0]).map(|(p, b)| Ok((p.name.clone(), download(b)?))).collect()
    }

    /// The files of a Hugging Face CLIP directory for the current weights:
    /// `config.json`, `model.safetensors`, `tokenizer.json`, `preprocessor_config.json`.
    pub fn hf_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let weights: Vec<(String, HostTensor)> = self.parameters()?.into_iter().collect();
        let mut config = self.config.model.to_hf_json();
        config["text_config"]["bos_token_id"] = self.tokenizer.bos.into();
        config["text_config"]["pad_token_id"] = self.tokenizer.pad.into();
        let side = self.config.model.vision.image_size;
        let pre = Preprocessor { size: side as u32, crop: side as u32, mean: self.config.data.image_mean, std: self.config.data.image_std };
        let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).map_err(|e| Error::Invalid(e.to_string()));
        Ok(vec![
            ("config.json", json(&config)?),
            ("model.safetensors", to_safetensors(&weights)?),
            ("tokenizer.json", self.tokenizer_json.clone().into_bytes()),
            ("preprocessor_config.json", json(&pre.to_hf_json())?),
        ])
    }
}

/// Writes the trainer's current model as a Hugging Face CLIP directory under
/// `location` (`clip/` of a run directory), each file written whole.
pub fn export_hf(trainer: &ClipTrainer, location: &crate::storage::Location, prefix: &str) -> Result<()> {
    for (name, bytes) in trainer.hf_files()? {
        location.put(&format!("{prefix}/{name}"), bytes)?;
    }
    Ok(())
}

impl Trainable for ClipTrainer {
    fn step(&self) -> u64 {
        self.step
    }

    fn train_step(&mut self) -> Result<StepRecord> {
        let batch = self.train_data.next().ok_or_else(|| Error::Invalid("the image loader stopped before the last training step".into()))??;
        let ids = self.token_ids(&batch)?;
        Ok(StepRecord::from_stats(self.train_on(&batch.pixels, &ids)?, self.config.train.batch_size as u64))
    }

    /// Mean contrastive loss over the held-out batches.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.eval_data.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        for (pixels, ids) in &self.eval_data {
            total += self.evaluate_on(pixels, ids)?.0;
        }
        Ok(Some(total / self.eval_data.len() as f64))
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let tensors = self.steps.layout.download(&self.state[0], "")?;
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
        let values = self.steps.layout.pick(checkpoint, "")?;
        self.upload(&values)?;
        self.step = checkpoint.step;
        // One batch per update: the stream resumes after the batches already
        // trained on, as an uninterrupted run would continue (exactly so when
        // every image is readable).
        self.train_data.restart_with(start_loader(&self.config, &self.config.data.images, self.config.train.seed, true, None, checkpoint.step)?);
        Ok(())
    }

    fn describe(&self) -> String {
        describe_model("CLIP", self.parameter_count())
    }

    fn replicas(&self) -> usize {
        self.replicas
    }

    fn stop_on(&mut self, signal: &StopSignal) {
        self.train_data.stop_on(signal.clone());
    }

    fn tensor_types(&self) -> Vec<(String, TensorType)> {
        self.steps.layout.tensor_types("")
    }
}
