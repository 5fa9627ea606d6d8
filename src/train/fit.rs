//! The training loop every model shares, top to bottom: resume, then until
//! the last step: stop if asked, update, log, evaluate, checkpoint on schedule;
//! finally a last checkpoint. The model side is the [`Trainable`] trait.

use super::config::LoopConfig;
use super::metrics::StepMetrics;
use super::restore::{RestoreSink, WholeCheckpoint};
use super::run_dir::RunDir;
use crate::checkpoint::{Checkpoint, CheckpointConfig, Snapshot, StopReason, StopSignal};
use crate::error::{Error, Result};
use crate::graph::TensorType;
use std::collections::BTreeMap;
use std::time::Instant;

/// What one update reports.
#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Examples consumed by this update.
    pub samples: u64,
    pub extra: BTreeMap<String, f64>,
}

impl StepRecord {
    /// A record from a step's named statistics: `loss`, `lr` and `grad_norm`
    /// (NaN when absent) and every other one as an extra.
    pub fn from_stats(mut stats: BTreeMap<String, f64>, samples: u64) -> StepRecord {
        let mut take = |name: &str| stats.remove(name).unwrap_or(f64::NAN);
        let (loss, lr, grad_norm) = (take("loss"), take("lr"), take("grad_norm"));
        StepRecord { loss, lr, grad_norm, samples, extra: stats }
    }
}

/// A model being trained: its compiled steps, weights on device and data.
pub trait Trainable {
    /// Updates applied so far.
    fn step(&self) -> u64;
    /// One update.
    fn train_step(&mut self) -> Result<StepRecord>;
    /// Loss on the validation set; `None` when there is none.
    fn evaluate(&mut self) -> Result<Option<f64>>;
    /// Tensors and run state to save (config and wall time are filled in by the loop).
    fn snapshot(&self) -> Result<Snapshot>;
    /// Continues from a checkpoint (its tensors were checked against [`Self::tensor_types`]).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()>;
    /// Continues from a checkpoint whose tensors arrive one at a time (see
    /// [`RestoreSink`]); by default they are gathered and passed to
    /// [`Self::restore`].
    fn restore_sink(&mut self) -> Box<dyn RestoreSink + '_> {
        Box::new(WholeCheckpoint { model: self, tensors: Vec::new() })
    }
    /// Names and types of the tensors a checkpoint of this model holds.
    fn tensor_types(&self) -> Vec<(String, TensorType)>;
    /// The model and its size for log lines, e.g. "a 1.20M-parameter CLIP".
    fn describe(&self) -> String;
    /// Devices it trains on.
    fn replicas(&self) -> usize;
    /// Makes the data loader's waits for the next batch give way once
    /// `signal` is set (the step then fails with `Error::Stopped`), so a
    /// stalled store cannot hold up a stop. [`fit`] calls it before its first
    /// step, after any restore.
    fn stop_on(&mut self, signal: &StopSignal);
}

/// "a 1.20M-parameter {model}", as [`Trainable::describe`] says it.
pub fn describe_model(model: &str, parameters: i64) -> String {
    format!("a {:.2}M-parameter {model}", parameters as f64 / 1e6)
}

/// How a call of [`fit`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    Finished { step: u64 },
    /// A stop signal arrived; a checkpoint of `step` was committed.
    Stopped { step: u64, reason: StopReason },
    /// The loss became NaN or infinite at `step`; nothing was saved after it.
    Diverged { step: u64, loss: f64 },
}

pub struct FitOptions<'a> {
    pub train: &'a LoopConfig,
    pub checkpoint: &'a CheckpointConfig,
    pub stop: &'a StopSignal,
    /// Title of the loss plot.
    pub title: String,
}

/// Trains `model` in `run` until `train.steps`, a stop signal or divergence.
pub fn fit(model: &mut dyn Trainable, run: &mut RunDir, opts: &FitOptions, mut on_log: impl FnMut(&StepMetrics)) -> Result<Outcome> {
    let session = Instant::now();
    model.stop_on(opts.stop);
    let t = opts.train;
    let mut schedule = opts.checkpoint.schedule(model.step(), Instant::now()).map_err(Error::Invalid)?;
    let mut last_saved = None;
    let mut window = (Instant::now(), 0u64);
    let mut metrics_unwritten = false;

    while model.step() < t.steps {
        // Another writer took the run over (this process was presumed dead):
        // saving now would mix two runs' histories.
        run.lease.check()?;
        if let Some(reason) = opts.stop.reason() {
            return stop(&*model, run, session, &mut last_saved, reason);
        }
        let r = match model.train_step() {
            Ok(r) => r,
            // A wait inside the step (for data) gave way to a stop request;
            // nothing was updated, so the current state is the one to save.
            Err(Error::Stopped(what)) => match opts.stop.reason() {
                Some(reason) => {
                    tracing::info!("stopped while {what}");
                    return stop(&*model, run, session, &mut last_saved, reason);
                }
                None => return Err(Error::Stopped(what)),
            },
            Err(e) => return Err(e),
        };
        window.1 += r.samples;
        let step = model.step();
        if !r.loss.is_finite() {
            return Ok(Outcome::Diverged { step, loss: r.loss });
        }
        let eval_due = t.eval_every > 0 && (step % t.eval_every == 0 || step == t.steps);
        if step % t.log_every == 0 || eval_due || step == t.steps {
            let eval_loss = if eval_due { model.evaluate()? } else { None };
            let m = StepMetrics {
                step,
                loss: r.loss,
                lr: r.lr,
                grad_norm: r.grad_norm,
                samples_per_sec: window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9),
                eval_loss,
                extra: r.extra,
            };
            // Storage trouble must not stop training: the log stays whole in
            // memory and the next write that gets through includes everything.
            metrics_unwritten = match run.metrics.append(m.clone()) {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!("could not write the metrics of step {step} (kept, written with the next ones): {e}");
                    true
                }
            };
            if eval_due {
                if let Err(e) = run.metrics.write_plot(&opts.title) {
                    tracing::warn!("could not write the loss plot at step {step} (redrawn at the next evaluation): {e}");
                }
            }
            on_log(&m);
            window = (Instant::now(), 0);
        }
        if schedule.due(step, Instant::now()) {
            save(&*model, run, session.elapsed().as_secs_f64(), &mut last_saved)?;
            schedule.mark_saved(step, Instant::now());
        }
    }
    run.lease.check()?;
    save(&*model, run, session.elapsed().as_secs_f64(), &mut last_saved)?;
    run.checkpoints.wait()?;
    // The final checkpoint is committed, so the run is done; metrics that still
    // cannot be written are reported, not a reason to train again.
    if metrics_unwritten {
        if let Err(e) = run.metrics.write() {
            tracing::error!("the last metrics records could not be written to {}: {e}", run.location.url);
        }
    }
    if let Err(e) = run.metrics.write_plot(&opts.title) {
        tracing::error!("the loss plot could not be written to {}: {e}", run.location.url);
    }
    Ok(Outcome::Finished { step: model.step() })
}

/// Commits a final checkpoint after a stop request.
fn stop(model: &dyn Trainable, run: &RunDir, session: Instant, last_saved: &mut Option<u64>, reason: StopReason) -> Result<Outcome> {
    tracing::warn!("stopping at step {} ({reason}): writing a final checkpoint", model.step());
    save(model, run, session.elapsed().as_secs_f64(), last_saved)?;
    run.checkpoints.wait()?;
    Ok(Outcome::Stopped { step: model.step(), reason })
}

/// Hands a checkpoint of the current step to the background writer (once per step).
fn save(model: &dyn Trainable, run: &RunDir, session_secs: f64, last_saved: &mut Option<u64>) -> Result<()> {
    if *last_saved == Some(model.step()) {
        return Ok(());
    }
    let started = Instant::now();
    let mut ckpt = model.snapshot()?;
    ckpt.meta.config_yaml = run.config_yaml.clone();
    ckpt.meta.wall_secs = run.earlier_wall_secs + session_secs;
    run.checkpoints.save(ckpt)?;
    tracing::info!("checkpoint of step {} handed to the writer; training paused {:.0} ms for it", model.step(), started.elapsed().as_secs_f64() * 1e3);
    *last_saved = Some(model.step());
    Ok(())
}
