//! What the sweep asks of whoever trains a trial.

use crate::error::Result;
use crate::storage::Location;
use serde_yaml::Value;

/// One trial as the runner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialSpec {
    /// Stable id (`t000`, `t001`, ...); also the name of its run directory.
    pub id: String,
    /// Dotted config keys and the values this trial uses.
    pub overrides: Vec<(String, Value)>,
    /// The base training config with `overrides` applied: the config to train with.
    pub config: Value,
    /// Device indices this trial may use; empty means all of the client's devices.
    /// Trials running at the same time always get disjoint sets.
    pub devices: Vec<usize>,
}

/// The sweep's answer to each reported evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// End the trial now (it diverged); return `TrialOutcome::Completed` with the steps done.
    Stop,
}

/// How a call to [`TrialRunner::run`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TrialOutcome {
    /// Trained up to the budget, or up to where `report` said stop.
    Completed {
        steps: u64,
        /// Training seconds of this trial so far, including earlier (resumed) calls where
        /// the runner knows them (e.g. from its checkpoint).
        wall_time_s: f64,
    },
    /// The runner itself saw the run blow up (e.g. a NaN training loss).
    Diverged { steps: u64, wall_time_s: f64, reason: String },
    /// The trial cannot go on; the sweep records `message` and moves on.
    Failed { message: String },
    /// The process was asked to stop (preemption, Ctrl-C) and the trial saved its state
    /// at `steps`: the trial stays unfinished and the sweep ends, to be resumed by
    /// running it again.
    Interrupted { steps: u64, reason: String },
}

/// Trains trials. Implemented by the trainer for real sweeps and by fakes in tests.
pub trait TrialRunner {
    /// Runs (or resumes) one trial in its own run directory up to `budget_steps` steps,
    /// calling `report(step, eval_loss)` after each evaluation; returns how it ended.
    ///
    /// The same trial may be called again with the same or a larger budget (after a
    /// preemption, or when successive halving promotes it): it must resume from its
    /// checkpoint in `run_dir`, re-reporting any evaluations after that checkpoint.
    /// An `Err` is recorded as a failed trial, not as a failed sweep.
    fn run(
        &mut self,
        trial: &TrialSpec,
        run_dir: &Location,
        budget_steps: u64,
        report: &mut dyn FnMut(u64, f64) -> Decision,
    ) -> Result<TrialOutcome>;

    /// Checks a trial's config before the sweep starts, so a bad search space is
    /// reported once up front instead of as N failed trials. The default accepts all.
    fn check_config(&self, _config: &Value) -> Result<()> {
        Ok(())
    }
}
