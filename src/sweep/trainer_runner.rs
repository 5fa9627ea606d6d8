//! Sweep trials trained for real: each trial is an ordinary DalleBart training run
//! (the shared [`fit`] loop) in its own run directory, so it checkpoints and
//! resumes like any run, on the devices the sweep gives it.

use super::report::describe_overrides;
use super::runner::{Decision, TrialOutcome, TrialRunner, TrialSpec};
use crate::checkpoint::{StopReason, StopSignal};
use crate::error::{Error, Result};
use crate::pjrt::Client;
use crate::storage::Location;
use crate::models::dallebart::{StepPrograms, TrainConfig, Trainer};
use crate::train::{fit, FitOptions, Outcome, RunDir};
use serde_yaml::Value;
use std::sync::Arc;
use std::time::Instant;

/// Trains each trial with [`Trainer`] on one shared PJRT client.
pub struct TrainerRunner {
    client: Client,
    /// Set by the process (SIGTERM, Ctrl-C, preemption notice): the running trial
    /// saves a checkpoint and the sweep ends, to be resumed by running it again.
    stop: StopSignal,
    /// The last trial's compiled programs and what they were compiled for: a learning-rate
    /// sweep, or a trial resumed for the next rung, compiles nothing again.
    programs: Option<(String, Arc<StepPrograms>)>,
}

impl TrainerRunner {
    pub fn new(client: Client) -> TrainerRunner {
        TrainerRunner { client, stop: StopSignal::new(), programs: None }
    }

    /// Ends trials early (checkpoint committed, [`TrialOutcome::Interrupted`]) once `stop` is set:
    /// before the next update, or during a wait for data.
    pub fn with_stop_signal(mut self, stop: StopSignal) -> TrainerRunner {
        self.stop = stop;
        self
    }
}

/// A trial's config as the trainer reads it, with everything a sweep needs checked.
fn parse_config(value: &Value) -> Result<TrainConfig> {
    let config: TrainConfig = crate::config::from_value(value.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
    config.validate().map_err(Error::Invalid)?;
    if config.train.eval_every == 0 {
        return Err(Error::Invalid(
            "train.eval_every is 0, but trials are ranked by eval loss: set it so evaluations fall within the step budget".into(),
        ));
    }
    Ok(config)
}

/// What a trial's compiled programs depend on: its config without the settings the host
/// applies each step (see [`Trainer::with_programs`]). Everything else stays in, so two
/// configs with the same key can always share programs.
fn program_key(config: &TrainConfig) -> Result<String> {
    let mut c = config.clone();
    c.optimizer.learning_rate = 1.0;
    c.optimizer.schedule = Default::default();
    c.train.steps = 0;
    c.train.seed = 0;
    c.train.run_dir.clear();
    c.train.log_every = 1;
    c.train.eval_every = u64::from(c.train.eval_every > 0);
    c.train.eval_batches = 1;
    c.checkpoint = Default::default();
    serde_json::to_string(&c).map_err(|e| Error::Invalid(format!("config key: {e}")))
}

impl TrialRunner for TrainerRunner {
    fn check_config(&self, config: &Value) -> Result<()> {
        parse_config(config).map(|_| ())
    }

    fn run(
        &mut self,
        trial: &TrialSpec,
        run_dir: &Location,
        budget_steps: u64,
        report: &mut dyn FnMut(u64, f64) -> Decision,
    ) -> Result<TrialOutcome> {
        let mut config = parse_config(&trial.config)?;
        config.train.steps = budget_steps;
        config.train.run_dir = run_dir.url.clone();
        if !trial.devices.is_empty() {
            config.train.devices = 0;
            config.train.device_ids = trial.devices.clone();
        }
        let eval_every = config.train.eval_every;
        let key = program_key(&config)?;
        let reusable = self.programs.as_ref().filter(|(k, _)| *k == key).map(|(_, p)| p.clone());
        let mut trainer = Trainer::with_programs(&self.client, config.clone(), reusable)?;
        self.programs = Some((key, trainer.programs()));
        let config_yaml = serde_yaml::to_string(&config).map_err(|e| Error::Invalid(format!("trial {}: config to YAML: {e}", trial.id)))?;
        let lease = RunDir::lease(&run_dir.url, &config.storage)?;
        let mut run = RunDir::resume(&mut trainer, &run_dir.url, &config.storage, &config_yaml, &config.checkpoint, lease)?;
        tracing::info!(
            "trial {} ({}): steps {}..{budget_steps} on device(s) {:?}",
            trial.id,
            describe_overrides(&trial.overrides),
            trainer.step,
            trainer.device_indices()
        );

        // The evaluations up to the checkpoint are not redone: report them again so the
        // sweep's record of this trial is whole whatever it saved before a preemption.
        let resumed_at = trainer.step;
        for m in run.metrics.records() {
            if let Some(loss) = m.eval_loss.filter(|_| m.step <= budget_steps) {
                if report(m.step, loss) == Decision::Stop {
                    return Ok(TrialOutcome::Completed { steps: resumed_at, wall_time_s: run.earlier_wall_secs });
                }
            }
        }
        if resumed_at >= budget_steps {
            return Ok(TrialOutcome::Completed { steps: resumed_at, wall_time_s: run.earlier_wall_secs });
        }

        // fit's stop flag serves both the sweep ("stop this trial", set here) and
        // the process ("stop everything", its parent, which also ends a wait for
        // data at once); remember which one asked.
        let trial_stop = self.stop.child();
        let (mut sweep_said_stop, mut missing_eval) = (false, false);
        let options = FitOptions {
            train: &config.train,
            checkpoint: &config.checkpoint,
            stop: &trial_stop,
            title: format!("sweep trial {} ({})", trial.id, describe_overrides(&trial.overrides)),
        };
        let started = Instant::now();
        let outcome = fit(&mut trainer, &mut run, &options, |m| {
            match m.eval_loss {
                Some(loss) => {
                    tracing::info!("trial {}: step {} eval loss {loss:.4} (training loss {:.4})", trial.id, m.step, m.loss);
                    if report(m.step, loss) == Decision::Stop {
                        sweep_said_stop = true;
                        trial_stop.request(StopReason::Requested);
                    }
                }
                None if m.step % eval_every == 0 => {
                    missing_eval = true;
                    trial_stop.request(StopReason::Requested);
                }
                None => {}
            }
        })?;
        let wall_time_s = run.earlier_wall_secs + started.elapsed().as_secs_f64();
        let skipped = trainer.data_counts().bad_rows();
        if skipped > 0 {
            tracing::warn!("trial {}: {skipped} bad data rows were skipped ({})", trial.id, trainer.data_counts());
        }
        Ok(match outcome {
            Outcome::Finished { step } => TrialOutcome::Completed { steps: step, wall_time_s },
            Outcome::Diverged { step, loss } => {
                TrialOutcome::Diverged { steps: step, wall_time_s, reason: format!("training loss {loss} at step {step}") }
            }
            Outcome::Stopped { .. } if missing_eval => TrialOutcome::Failed {
                message: "the data has no validation split, so the trial has no eval loss to be ranked by (see data.*)".into(),
            },
            Outcome::Stopped { step, .. } if sweep_said_stop => TrialOutcome::Completed { steps: step, wall_time_s },
            Outcome::Stopped { step, reason } => TrialOutcome::Interrupted { steps: step, reason: reason.to_string() },
        })
    }
}
