//! What the two training stages share: open the run through the shared run
//! directory (resuming its newest checkpoint), train with the shared loop,
//! log progress, and turn the outcome into a stage end.

use super::StageEnd;
use crate::checkpoint::{CheckpointConfig, StopSignal};
use crate::error::{Error, Result};
use crate::storage::StorageOptions;
use crate::train::{fit, FitOptions, LoopConfig, Outcome, RunDir, StepMetrics, Trainable};

pub struct TrainingRun<'a> {
    pub what: &'a str,
    pub run_dir: &'a str,
    pub config_yaml: String,
    pub train: &'a LoopConfig,
    pub checkpoint: &'a CheckpointConfig,
    pub storage: &'a StorageOptions,
    pub stop: &'a StopSignal,
}

/// Trains `model` to the end of its schedule; `Ok(Err(end))` when stopped.
pub fn train(model: &mut dyn Trainable, t: &TrainingRun) -> Result<std::result::Result<RunDir, StageEnd>> {
    let (mut run, restored) = RunDir::open_with(t.run_dir, t.storage, &t.config_yaml, t.checkpoint, &model.tensor_types())?;
    if let Some(checkpoint) = &restored {
        model.restore(checkpoint)?;
    }
    tracing::info!("{}: steps {}..{} in {}", t.what, model.step(), t.train.steps, t.run_dir);
    let options = FitOptions { train: t.train, checkpoint: t.checkpoint, stop: t.stop, title: format!("{} ({})", t.what, t.run_dir) };
    let what = t.what;
    let outcome = fit(model, &mut run, &options, |m: &StepMetrics| {
        let eval = m.eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default();
        tracing::info!("{what}: step {} loss {:.4}{eval}, {:.1} samples/s", m.step, m.loss, m.samples_per_sec);
    })?;
    match outcome {
        Outcome::Finished { .. } => Ok(Ok(run)),
        Outcome::Stopped { reason, step } => {
            tracing::warn!("{what}: stopped at step {step}; a checkpoint is committed and a rerun continues from it");
            Ok(Err(StageEnd::Stopped(reason)))
        }
        Outcome::Diverged { step, loss } => Err(Error::Invalid(format!(
            "{what}: the loss became {loss} at step {step}; lower its learning rate in the pipeline config and rerun with --restart"
        ))),
    }
}

/// The last evaluation loss and the last training loss of a run's metrics.
pub fn final_losses(run: &RunDir) -> (Option<f64>, Option<f64>) {
    let records = run.metrics.records();
    let eval = records.iter().rev().find_map(|m| m.eval_loss);
    let train = records.last().map(|m| m.loss);
    (train, eval)
}
