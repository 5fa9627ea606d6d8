//! The training loop: reads top to bottom — build the step, initialise the
//! weights on every device, then for each update feed a sharded batch, run
//! the step, swap in the updated weights, log and evaluate.

use super::config::TrainConfig;
use super::metrics::{MetricsWriter, StepMetrics};
use super::step::{compile_eval_step, compile_train_step, StepLayout};
use crate::data::{Batch, Synthetic};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::dallebart::DalleBart;
use crate::nn::Precision;
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program};
use crate::DType;
use std::path::PathBuf;
use std::time::Instant;

pub struct Trainer {
    pub config: TrainConfig,
    pub replicas: usize,
    step_program: Program,
    eval_program: Option<Program>,
    layout: StepLayout,
    /// Per device: parameters then optimizer state, in step-argument order.
    weights: Vec<Vec<Buffer>>,
    /// Updates done so far.
    pub step: u64,
    train_data: Synthetic,
    eval_data: Synthetic,
    /// Index of the next training example in the stream.
    pub data_position: u64,
    metrics: MetricsWriter,
}

impl Trainer {
    pub fn new(client: &Client, config: TrainConfig) -> Result<Trainer> {
        config.validate().map_err(Error::Invalid)?;
        let t = &config.train;
        let replicas = if t.devices == 0 { client.device_count() } else { t.devices };
        if replicas > client.device_count() {
            return Err(Error::Invalid(format!(
                "train.devices is {replicas} but the {} client has {} devices",
                client.platform(),
                client.device_count()
            )));
        }
        if t.batch_size % replicas != 0 {
            return Err(Error::Invalid(format!(
                "train.batch_size ({}) must be divisible by the number of devices ({replicas})",
                t.batch_size
            )));
        }
        let per_device = (t.batch_size / replicas) as i64;
        let compute = DType::parse(&t.dtype).unwrap_or(DType::F32);
        let model = DalleBart::new(config.model.clone(), Precision { compute });
        let optimizer = config.optimizer.build().map_err(Error::Invalid)?;
        let (step_program, layout) =
            compile_train_step(client, &model, optimizer.as_ref(), config.optimizer.max_grad_norm, per_device, replicas)?;
        tracing::info!(
            "compiled train step for {replicas} device(s) in {:.1?}: {} parameter tensors",
            step_program.compile_time,
            layout.params.len()
        );
        let eval_program =
            if t.eval_every > 0 { Some(compile_eval_step(client, &model, per_device, replicas)?) } else { None };

        let weights = Self::initial_weights(&step_program, &layout, t.seed, replicas)?;
        let synthetic = |seed: u64| Synthetic {
            seed,
            text_vocab: config.model.encoder_vocab_size,
            image_vocab: config.model.image_vocab_size,
            text_length: config.model.max_text_length as usize,
            image_length: config.model.image_length as usize,
            num_captions: config.data.num_captions,
        };
        let metrics = MetricsWriter::new(&PathBuf::from(&t.run_dir))?;
        std::fs::write(
            PathBuf::from(&t.run_dir).join("config.yaml"),
            serde_yaml::to_string(&config).map_err(|e| Error::Invalid(e.to_string()))?,
        )
        .map_err(|e| Error::io(format!("write config to {}", t.run_dir), e))?;
        Ok(Trainer {
            train_data: synthetic(t.seed),
            eval_data: synthetic(t.seed ^ 0x5EED_E7A1),
            config,
            replicas,
            step_program,
            eval_program,
            layout,
            weights,
            step: 0,
            data_position: 0,
            metrics,
        })
    }

    /// Host-initialised parameters (from the seed and each name) and zero optimizer state, on every device.
    fn initial_weights(program: &Program, layout: &StepLayout, seed: u64, replicas: usize) -> Result<Vec<Vec<Buffer>>> {
        let mut host: Vec<HostTensor> =
            layout.params.iter().map(|p| p.init.sample(seed, &p.name, p.ty.dtype, &p.ty.shape)).collect();
        host.extend(layout.state.iter().map(|(_, s)| HostTensor::zeros(s.ty.dtype, &s.ty.shape)));
        let refs: Vec<&HostTensor> = host.iter().collect();
        (0..replicas).map(|d| program.upload(d, &refs)).collect()
    }

    pub fn parameter_count(&self) -> i64 {
        self.layout.params.iter().map(|p| p.ty.numel()).sum()
    }

    fn next_batch(&mut self) -> Result<Batch> {
        let n = self.config.train.batch_size as u64;
        let examples: Vec<_> = (self.data_position..self.data_position + n).map(|i| self.train_data.example(i)).collect();
        self.data_position += n;
        Batch::from_examples(&examples)
    }

    /// Uploads each shard of `batch` to its device.
    fn upload_batch(&self, program: &Program, batch: &Batch) -> Result<Vec<Vec<Buffer>>> {
        batch
            .shard(self.replicas)?
            .iter()
            .enumerate()
            .map(|(d, s)| program.upload(d, &[&s.input_ids, &s.attention_mask, &s.labels]))
            .collect()
    }

    /// One update; returns (loss, grad norm) of this step.
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let batch = self.next_batch()?;
        let lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
        let inputs = self.upload_batch(&self.step_program, &batch)?;
        let scalars: Vec<Vec<Buffer>> = (0..self.replicas)
            .map(|d| {
                self.step_program
                    .upload(d, &[&HostTensor::scalar(lr as f32), &HostTensor::scalar((self.step + 1) as f32)])
            })
            .collect::<Result<_>>()?;
        let args: Vec<Vec<&Buffer>> = (0..self.replicas)
            .map(|d| inputs[d].iter().chain(self.weights[d].iter()).chain(scalars[d].iter()).collect())
            .collect();
        let mut outputs = self.step_program.execute(&args)?;
        drop(args);
        let n_weights = self.weights[0].len();
        let mut loss = 0.0;
        let mut norm = 0.0;
        for (d, out) in outputs.iter_mut().enumerate() {
            let scalars_out = out.split_off(n_weights);
            if d == 0 {
                loss = download(&scalars_out[0])?.to_f64_vec()[0];
                norm = download(&scalars_out[1])?.to_f64_vec()[0];
            }
        }
        self.weights = outputs;
        self.step += 1;
        Ok((loss, norm))
    }

    /// Mean loss over `eval_batches` held-out batches.
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        let Some(program) = &self.eval_program else { return Ok(None) };
        let n = self.config.train.batch_size as u64;
        let n_params = self.layout.params.len();
        let mut total = 0.0;
        for b in 0..self.config.train.eval_batches {
            let examples: Vec<_> = (b * n..(b + 1) * n).map(|i| self.eval_data.example(i)).collect();
            let inputs = self.upload_batch(program, &Batch::from_examples(&examples)?)?;
            let args: Vec<Vec<&Buffer>> =
                (0..self.replicas).map(|d| inputs[d].iter().chain(self.weights[d][..n_params].iter()).collect()).collect();
            let out = program.execute(&args)?;
            total += download(&out[0][0])?.to_f64_vec()[0];
        }
        Ok(Some(total / self.config.train.eval_batches.max(1) as f64))
    }

    /// Trains for `train.steps` updates, logging every `log_every`.
    pub fn run(&mut self, mut on_log: impl FnMut(&StepMetrics)) -> Result<Vec<StepMetrics>> {
        let mut history = Vec::new();
        let mut window = Instant::now();
        let mut window_steps = 0u64;
        while self.step < self.config.train.steps {
            let lr = self.config.optimizer.schedule.lr(self.config.optimizer.learning_rate, self.step);
            let (loss, grad_norm) = self.train_step()?;
            window_steps += 1;
            if !loss.is_finite() {
                return Err(Error::Invalid(format!("loss became {loss} at step {}", self.step)));
            }
            let t = &self.config.train;
            let eval_due = t.eval_every > 0 && self.step % t.eval_every == 0;
            if self.step % t.log_every == 0 || eval_due || self.step == t.steps {
                let eval_loss = if eval_due || self.step == t.steps { self.evaluate()? } else { None };
                let secs = window.elapsed().as_secs_f64().max(1e-9);
                let m = StepMetrics {
                    step: self.step,
                    loss,
                    lr,
                    grad_norm,
                    samples_per_sec: (window_steps * t.batch_size as u64) as f64 / secs,
                    eval_loss,
                };
                self.metrics.append(&m)?;
                on_log(&m);
                history.push(m);
                window = Instant::now();
                window_steps = 0;
            }
        }
        Ok(history)
    }

    /// Parameters by name, from the first device.
    pub fn parameters(&self) -> Result<Vec<(String, HostTensor)>> {
        self.layout
            .params
            .iter()
            .zip(&self.weights[0])
            .map(|(p, b)| Ok((p.name.clone(), download(b)?)))
            .collect()
    }
}
