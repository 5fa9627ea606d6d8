//! DalleBart training on a data-parallel set of devices: the compiled step
//! programs, the weights on every device and the data loaders. The loop that
//! drives it (logging, evaluation, checkpoints) is [`crate::train::fit`].

mod state_upload;

use super::steps::{compile_step_programs, StepPrograms, StepSetup};
use state_upload::{StateUpload, StreamingRestore};
use super::train_config::TrainConfig;
use crate::train::{describe_model, update_scalars, NetLayout, RestoreSink, StepRecord, Trainable};
use crate::checkpoint::{Checkpoint, CheckpointMeta, Snapshot, StopSignal};
use crate::data::{Batch, DataPosition, Dataset, Loader, LoaderSpec};
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::host::{BlockedTensor, HostTensor};
use super::DalleBart;
use crate::nn::Precision;
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program};
use crate::DType;
use std::sync::Arc;
use std::time::Instant;

pub struct Trainer {
    pub config: TrainConfig,
    pub replicas: usize,
    programs: Arc<StepPrograms>,
    /// Per device: parameters, optimizer state, then (with accumulation) gradient and loss accumulators.
    device_state: Vec<Vec<Buffer>>,
    /// Updates done so far.
    pub step: u64,
    /// Examples consumed so far.
    pub samples_seen: u64,
    dataset: Dataset,
    train_data: Loader,
    /// Where the training stream stands after the last completed update:
    /// what a checkpoint saves, also when a step gave up waiting for data
    /// after taking some of its micro-batches.
    trained_position: DataPosition,
    eval_data: Option<Loader>,
}

impl Trainer {
    /// Opens the data, compiles the programs and puts freshly initialised weights on every device.
    pub fn new(client: &Client, config: TrainConfig) -> Result<Trainer> {
        Self::with_programs(client, config, None)
    }

    /// As [`Trainer::new`], reusing `programs` from [`Trainer::programs`] of an earlier
    /// trainer whose config differed only in what the host decides each step (learning
    /// rate and schedule, seed, steps, logging and evaluation intervals, checkpoints);
    /// `None` compiles them. Sweeps use this to compile once for many trials.
    pub fn with_programs(client: &Client, config: TrainConfig, programs: Option<Arc<StepPrograms>>) -> Result<Trainer> {
        let replicas = Self::check_devices(client, &config)?;
        // Before allocating weights or compiling: absurd sizes become an error, not an abort.
        let estimate = crate::models::dallebart::training_memory(&config, replicas)?;
        crate::runtime::memory::check_fits("this DalleBart config", &estimate, client.platform(), replicas, "lower the model sizes or train.batch_size")?;
        let t = &config.train;
        let hosts = config.data.host_count.max(1);
        let m = &config.model;
        let spec = LoaderSpec {
            batch_size: t.batch_size / t.gradient_accumulation / hosts,
            seed: t.seed,
            text_length: m.max_text_length as usize,
            image_length: m.image_length as usize,
            image_vocab: m.image_vocab_size,
            text_vocab: m.encoder_vocab_size,
        };
        let dataset = Dataset::open(&config.data, spec)?;
        let train_data = dataset.train_loader(None)?;
        let eval_data = if t.eval_every > 0 { dataset.eval_loader()? } else { None };
        let programs = match programs {
            Some(p) => {
                let on: &[usize] = p.train.as_ref().or(p.accumulate.as_ref()).map_or(&[], |p| p.exe.device_indices());
                let wanted: Vec<usize> = if t.device_ids.is_empty() { (0..replicas).collect() } else { t.device_ids.clone() };
                if on != wanted.as_slice() {
                    return Err(Error::Invalid(format!("the given programs run on devices {on:?}, this config trains on {wanted:?}")));
                }
                p
            }
            None => Arc::new(Self::compile(client, &config, replicas, eval_data.is_some())?),
        };
        let trained_position = train_data.position().clone();
        let mut trainer = Trainer { config, replicas, programs, device_state: Vec::new(), step: 0, samples_seen: 0, dataset, train_data, trained_position, eval_data };
        let initial = trainer.initial_values()?;
        trainer.load_values(&initial)?;
        Ok(trainer)
    }

    /// Validates `config` against `client` and returns the number of replicas it trains on
    /// (`train.device_ids`, `train.devices`, or every device when that is 0).
    pub fn check_devices(client: &Client, config: &TrainConfig) -> Result<usize> {
        config.validate().map_err(Error::Invalid)?;
        let t = &config.train;
        let replicas = if !t.device_ids.is_empty() {
            t.device_ids.len()
        } else if t.devices == 0 {
            client.device_count()
        } else {
            t.devices
        };
        if replicas > client.device_count() {
            return Err(Error::Invalid(format!(
                "train.devices is {replicas} but the {} client has {} devices",
                client.platform(),
                client.device_count()
            )));
        }
        if let Some(d) = t.device_ids.iter().find(|&&d| d >= client.device_count()) {
            return Err(Error::Invalid(format!(
                "train.device_ids names device {d} but the {} client has devices 0..{}",
                client.platform(),
                client.device_count()
            )));
        }
        // On a mesh the batch is split over its data axis only.
        let split = match &t.mesh {
            Some(mesh) => {
                mesh.validate(replicas).map_err(Error::Invalid)?;
                if config.data.host_count > 1 {
                    return Err(Error::Invalid("train.mesh with data.host_count > 1 is not supported yet: one host drives the whole mesh".into()));
                }
                mesh.data
            }
            None => replicas,
        };
        let per_update = split * t.gradient_accumulation;
        if t.batch_size % per_update != 0 {
            return Err(Error::Invalid(format!(
                "train.batch_size ({}) must be divisible by {} x train.gradient_accumulation ({split} x {})",
                t.batch_size,
                if t.mesh.is_some() { "the mesh's data axis" } else { "devices" },
                t.gradient_accumulation
            )));
        }
        let hosts = config.data.host_count.max(1);
        if t.batch_size % (per_update * hosts) != 0 {
            return Err(Error::Invalid(format!(
                "train.batch_size ({}) must be divisible by devices x train.gradient_accumulation x data.host_count ({replicas} x {} x {hosts})",
                t.batch_size, t.gradient_accumulation
            )));
        }
        Ok(replicas)
    }

    /// The training programs of `config` on `client` exactly as a run compiles them,
    /// without opening its data or allocating weights (`dalle info` reads their memory).
    /// Returns the replica count and the programs; `with_eval` adds the eval program.
    pub fn compile_programs(client: &Client, config: &TrainConfig, with_eval: bool) -> Result<(usize, StepPrograms)> {
        let replicas = Self::check_devices(client, config)?;
        Ok((replicas, Self::compile(client, config, replicas, with_eval)?))
    }

    fn compile(client: &Client, config: &TrainConfig, replicas: usize, has_eval_data: bool) -> Result<StepPrograms> {
        let t = &config.train;
        // On a mesh the step is one program over the global batch.
        let (per_update, program_replicas) = if t.mesh.is_some() { (t.gradient_accumulation, 1) } else { (replicas * t.gradient_accumulation, replicas) };
        let compute = DType::parse(&t.dtype).ok_or_else(|| Error::Invalid(format!("train.dtype must be f32 or bf16, got '{}'", t.dtype)))?;
        let model = DalleBart::new(config.model.clone(), Precision { compute });
        let optimizer = config.optimizer.build().map_err(Error::Invalid)?;
        let started = Instant::now();
        let programs = compile_step_programs(&StepSetup {
            client,
            model: &model,
            optimizer: optimizer.as_ref(),
            max_grad_norm: config.optimizer.max_grad_norm,
            per_device: (t.batch_size / per_update) as i64,
            replicas: program_replicas,
            devices: (!t.device_ids.is_empty()).then(|| t.device_ids.clone()),
            accumulation: t.gradient_accumulation,
            with_eval: has_eval_data && t.eval_every > 0,
            mesh: t.mesh,
        })?;
        let list: Vec<&Program> = [&programs.train, &programs.accumulate, &programs.apply, &programs.eval].into_iter().flatten().collect();
        let from_cache = list.iter().filter(|p| p.from_cache).count();
        tracing::info!(
            "compiled the training programs for {replicas} device(s) in {:.1?} ({from_cache} of {} from the compile cache): {} parameter tensors, {:.2}M parameters",
            started.elapsed(),
            list.len(),
            programs.layout.params.len(),
            programs.layout.params.iter().map(|p| p.ty.numel()).sum::<i64>() as f64 / 1e6
        );
        for p in &list {
            tracing::info!("  {}: {}", p.name, p.compile_note());
        }
        Ok(programs)
    }

    /// The compiled programs, for [`Trainer::with_programs`].
    pub fn programs(&self) -> Arc<StepPrograms> {
        self.programs.clone()
    }

    /// Client device indices of the replicas, in replica order.
    pub fn device_indices(&self) -> &[usize] {
        self.program().exe.device_indices()
    }

    pub fn layout(&self) -> &NetLayout {
        &self.programs.layout
    }

    /// Any program: all of them run on the same devices, so any can upload.
    fn program(&self) -> &Program {
        self.programs.uploader()
    }

    /// Parameters from `model.init_from` or else from the seed and each name; optimizer state zero.
    fn initial_values(&self) -> Result<Vec<HostTensor>> {
        let layout = &self.programs.layout;
        let Some(weights) = super::init_from::initial_weights(&self.config.model)? else {
            return Ok(layout.initial_values(self.config.train.seed));
        };
        let origin = format!("model.init_from ({})", self.config.model.init_from.as_deref().unwrap_or_default());
        Ok(layout.starting_from(crate::weights::select_params(&weights, &layout.params, &origin)?))
    }

    /// Puts parameters and optimizer state (in [`NetLayout::names`] order) on every device.
    pub fn load_values(&mut self, values: &[HostTensor]) -> Result<()> {
        self.load_borrowed_values(&values.iter().collect::<Vec<_>>())
    }

    /// [`load_values`](Self::load_values) from borrowed tensors.
    fn load_borrowed_values(&mut self, values: &[&HostTensor]) -> Result<()> {
        self.programs.layout.check(values, "DalleBart training state")?;
        let mut upload = StateUpload::new(self);
        for (index, value) in values.iter().enumerate() {
            upload.put(index, value)?;
        }
        self.device_state = upload.finish()?;
        Ok(())
    }

    /// The state on the devices; an error after a restore that failed halfway.
    fn device_state(&self) -> Result<&[Vec<Buffer>]> {
        if self.device_state.is_empty() {
            return Err(Error::Invalid("the DalleBart trainer holds no weights: its last restore failed; restore a checkpoint first".into()));
        }
        Ok(&self.device_state)
    }

    /// Parameters and optimizer state with their names: from the first
    /// device, or put together from every device's shard on a mesh.
    pub fn values(&self) -> Result<Vec<(String, HostTensor)>> {
        Ok(self.blocked_values()?.into_iter().map(|(n, t)| (n, t.into_whole())).collect())
    }

    /// Parameters and optimizer state with their names, each as the distinct
    /// shards its devices hold (a checkpoint is written from these).
    pub fn blocked_values(&self) -> Result<Vec<(String, BlockedTensor)>> {
        let layout = &self.programs.layout;
        let names = layout.names();
        let state = self.device_state()?;
        let Some(mesh) = &self.programs.mesh else {
            return names.into_iter().zip(&state[0]).map(|(n, b)| Ok((n, BlockedTensor::whole(download(b)?)))).collect();
        };
        let types = layout.params.iter().map(|p| &p.ty).chain(layout.state.iter().map(|(_, s)| &s.ty));
        names
            .into_iter()
            .zip(types)
            .enumerate()
            .map(|(k, (n, ty))| {
                let holders = mesh.of(&n, &ty.shape)?.block_holders(&ty.shape, &mesh.mesh);
                let blocks = holders.into_iter().map(|(d, start)| Ok((start, download(&state[d][k])?))).collect::<Result<_>>()?;
                let blocked = BlockedTensor::from_blocks(ty.dtype, &ty.shape, blocks).map_err(|e| Error::Invalid(format!("'{n}': {e}")))?;
                Ok((n, blocked))
            })
            .collect()
    }

    /// Parameters only, by name.
    pub fn parameters(&self) -> Result<Vec<(String, HostTensor)>> {
        let n = self.programs.layout.params.len();
        Ok(self.values()?.into_iter().take(n).collect())
    }

    /// Elements of parameters and optimizer state each device holds (all of
    /// them without a mesh, its shards on one).
    pub fn elements_per_device(&self) -> Result<Vec<i64>> {
        let n = self.programs.layout.names().len();
        self.device_state()?.iter().map(|d| d[..n].iter().map(|b| Ok(b.dims()?.iter().product::<i64>())).sum()).collect()
    }

    pub fn parameter_count(&self) -> i64 {
        self.programs.layout.params.iter().map(|p| p.ty.numel()).sum()
    }

    /// Rows read and skipped by the training stream so far.
    pub fn data_counts(&self) -> &crate::data::DataCounts {
        self.train_data.counts()
    }

    /// Where the training stream stands after the last update (saved with checkpoints).
    pub fn data_position(&self) -> &DataPosition {
        &self.trained_position
    }

    /// Uploads each device's shard of `batch` (on a mesh: the shard of its data index).
    fn upload_batch(&self, batch: &Batch) -> Result<Vec<Vec<Buffer>>> {
        upload_batch(self.program(), batch, self.replicas, self.programs.mesh.as_ref().map(|m| m.mesh))
    }

    /// Runs `program` on (per-device extra inputs, device state[range], scalars) and returns outputs.
    fn execute(program: &Program, lead: &[Vec<Buffer>], state: &[Vec<Buffer>], tail: &[Vec<Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        let args: Vec<Vec<&Buffer>> =
            (0..state.len()).map(|d| lead.get(d).into_iter().flatten().chain(&state[d]).chain(tail.get(d).into_iter().flatten()).collect()).collect();
        program.execute(&args)
    }

    /// One update: `gradient_accumulation` micro-batches, then the optimizer step.
    pub fn train_step(&mut self) -> Result<StepRecord> {
        self.device_state()?;
        let lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
        // Every micro-batch first: a data error or a stop while waiting for
        // data then leaves the state on the devices untouched.
        let micro = if self.programs.train.is_some() { 1 } else { self.config.train.gradient_accumulation };
        let batches = (0..micro).map(|_| self.train_data.next_batch()).collect::<Result<Vec<_>>>()?;
        let inputs = batches.iter().map(|b| self.upload_batch(b)).collect::<Result<Vec<_>>>()?;
        let scalars = update_scalars(self.program(), self.replicas, lr, self.step)?;
        let mut state = std::mem::take(&mut self.device_state);
        let outputs = match &self.programs.train {
            Some(train) => Self::execute(train, &inputs[0], &state, &scalars),
            None => self.accumulate_then_apply(&inputs, &mut state, &scalars),
        };
        let mut outputs = outputs.map_err(|e| {
            Error::Invalid(format!("training step {} failed; the weights on the devices may be lost, resume from the last checkpoint: {e}", self.step + 1))
        })?;
        let kept = self.programs.layout.names().len() + if self.programs.apply.is_some() { self.programs.layout.params.len() + 1 } else { 0 };
        let (mut loss, mut grad_norm) = (f64::NAN, f64::NAN);
        for (d, out) in outputs.iter_mut().enumerate() {
            let scalars_out = out.split_off(kept);
            if d == 0 {
                loss = download(&scalars_out[0])?.to_f64_vec()[0];
                grad_norm = download(&scalars_out[1])?.to_f64_vec()[0];
            }
        }
        drop(state);
        self.device_state = outputs;
        self.trained_position = self.train_data.position().clone();
        self.step += 1;
        self.samples_seen += self.config.train.batch_size as u64;
        Ok(StepRecord { loss, grad_norm, lr, samples: self.config.train.batch_size as u64, ..Default::default() })
    }

    /// Gradient accumulation: each micro-batch's gradients added into the
    /// accumulators held after the weights in `state`, then one optimizer step.
    fn accumulate_then_apply(&self, inputs: &[Vec<Vec<Buffer>>], state: &mut [Vec<Buffer>], scalars: &[Vec<Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        let accumulate = self.programs.accumulate.as_ref().expect("compiled with accumulation");
        let apply = self.programs.apply.as_ref().expect("compiled with accumulation");
        let n_weights = self.programs.layout.names().len();
        let n_params = self.programs.layout.params.len();
        for micro_inputs in inputs {
            // (batch, params, acc, loss_acc): pass params then the accumulators, which come back updated.
            let args: Vec<Vec<&Buffer>> =
                (0..self.replicas).map(|d| micro_inputs[d].iter().chain(&state[d][..n_params]).chain(&state[d][n_weights..]).collect()).collect();
            for (d, acc) in accumulate.execute(&args)?.into_iter().enumerate() {
                state[d].truncate(n_weights);
                state[d].extend(acc);
            }
        }
        Self::execute(apply, &[], state, scalars)
    }

    /// Mean loss over `eval_batches` held-out batches (the same batches every time).
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        let (Some(program), Some(_)) = (&self.programs.eval, self.eval_data.as_ref()) else { return Ok(None) };
        // A fresh loader, so every evaluation sees the same batches.
        let mut data = self.dataset.eval_loader()?.ok_or_else(|| Error::Invalid("the validation split disappeared".into()))?;
        let n_params = self.programs.layout.params.len();
        let state = self.device_state()?;
        let mut total = 0.0;
        let batches = self.config.train.eval_batches.max(1);
        for _ in 0..batches {
            let batch = data.next_batch()?;
            let inputs = upload_batch(program, &batch, self.replicas, self.programs.mesh.as_ref().map(|m| m.mesh))?;
            let args: Vec<Vec<&Buffer>> =
                (0..self.replicas).map(|d| inputs[d].iter().chain(&state[d][..n_params]).collect()).collect();
            let out = program.execute(&args)?;
            total += download(&out[0][0])?.to_f64_vec()[0];
        }
        Ok(Some(total / batches as f64))
    }
}

impl Trainable for Trainer {
    fn step(&self) -> u64 {
        self.step
    }

    fn train_step(&mut self) -> Result<StepRecord> {
        Trainer::train_step(self)
    }

    fn evaluate(&mut self) -> Result<Option<f64>> {
        Trainer::evaluate(self)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let position = serde_json::to_value(&self.trained_position).map_err(|e| Error::Invalid(format!("data position: {e}")))?;
        Ok(Snapshot {
            step: self.step,
            tensors: self.blocked_values()?,
            meta: CheckpointMeta {
                samples_seen: self.samples_seen,
                data_position: position,
                // Training draws no random numbers on device (no dropout); the seed fixes initialisation and data order.
                rng: serde_json::json!({ "seed": self.config.train.seed }),
                ..Default::default()
            },
        })
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let mut sink = self.restore_sink();
        for (name, tensor) in &checkpoint.tensors {
            sink.put(name, tensor)?;
        }
        sink.finish(checkpoint.step, &checkpoint.meta)
    }

    /// The weights on the devices are freed first, so that a restore never
    /// holds two training states on a device (mega's 10 GiB per v3 core
    /// would not fit twice). A restore that fails halfway leaves the trainer
    /// without weights: its steps are then an error until a restore succeeds.
    fn restore_sink(&mut self) -> Box<dyn RestoreSink + '_> {
        self.device_state = Vec::new();
        let upload = StateUpload::new(self);
        Box::new(StreamingRestore { trainer: self, upload })
    }

    fn describe(&self) -> String {
        describe_model("DalleBart", self.parameter_count())
    }

    fn replicas(&self) -> usize {
        self.replicas
    }

    fn stop_on(&mut self, signal: &StopSignal) {
        self.train_data.stop_on(signal.clone());
    }

    fn tensor_types(&self) -> Vec<(String, TensorType)> {
        self.programs.layout.tensor_types("")
    }
}

/// Uploads `batch` to the `devices` of `program`: a shard per device, or on a
/// mesh the shard of each device's data index (devices along the model axis
/// get the same one).
fn upload_batch(program: &Program, batch: &Batch, devices: usize, mesh: Option<crate::train::Mesh>) -> Result<Vec<Vec<Buffer>>> {
    let split = mesh.map_or(devices, |m| m.data);
    let model = mesh.map_or(1, |m| m.model);
    let shards = batch.shard(split)?;
    (0..devices)
        .map(|d| {
            let s = &shards[d / model];
            program.upload(d, &[&s.input_ids, &s.attention_mask, &s.labels])
        })
        .collect()
}
