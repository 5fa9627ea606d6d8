//! What the three training stages share: open the run through the shared run
//! directory (resuming its newest checkpoint), train with the shared loop,
//! log progress, and turn the outcome into a stage end.

use super::StageEnd;
use crate::checkpoint::StopSignal;
use crate::error::{Error, Result};
use crate::train::{fit, FitOptions, Outcome, RunDir, StepMetrics, TrainSections, Trainable};

/// Trains `model` (named `what` in logs) to the end of `config`'s schedule
/// in its `train.run_dir`; `Ok(Err(end))` when stopped.
pub fn train(model: &mut dyn Trainable, what: &str, config: &impl TrainSections, stop: &StopSignal) -> Result<std::result::Result<RunDir, StageEnd>> {
    let (train, checkpoint, storage) = config.sections();
    let yaml = serde_yaml::to_string(config).map_err(|e| Error::Invalid(format!("serialising the {what} config: {e}")))?;
    let mut run = RunDir::resume(model, &train.run_dir, storage, &yaml, checkpoint, RunDir::lease(&train.run_dir, storage)?)?;
    tracing::info!("{what}: training {} on {} device(s), steps {}..{} in {}", model.describe(), model.replicas(), model.step(), train.steps, train.run_dir);
    let options = FitOptions { train, checkpoint, stop, title: format!("{what} ({})", train.run_dir) };
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
