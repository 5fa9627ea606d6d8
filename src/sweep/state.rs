//! The sweep's durable record, `sweep_state.json` in the sweep directory: every
//! trial's overrides, status and evaluations. It is rewritten whole (one put)
//! after every change, so a preempted sweep picks up exactly where it stopped.

use super::config::{Metric, PlannedTrial, SweepConfig};
use super::store;
use crate::error::{Error, Result};
use crate::storage::Location;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub const STATE_FILE: &str = "sweep_state.json";
const STATE_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Not started.
    Pending,
    /// Started and not finished: resumed from its checkpoint on the next run.
    Running,
    /// Finished a successive-halving rung and waits for the next one.
    Paused,
    /// Trained the full budget.
    Completed,
    /// Stopped by successive halving after a rung.
    Stopped,
    Diverged,
    Failed,
}

impl TrialStatus {
    /// Whether the trial will never run again.
    pub fn is_final(self) -> bool {
        matches!(self, TrialStatus::Completed | TrialStatus::Stopped | TrialStatus::Diverged | TrialStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Paused => "paused",
            TrialStatus::Completed => "completed",
            TrialStatus::Stopped => "stopped",
            TrialStatus::Diverged => "diverged",
            TrialStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: String,
    pub overrides: Vec<(String, Value)>,
    pub status: TrialStatus,
    /// (step, eval loss), increasing steps, finite losses only (a non-finite one ends
    /// the trial and is kept in `message`).
    pub history: Vec<(u64, f64)>,
    pub steps: u64,
    pub wall_time_s: f64,
    /// The largest step budget this trial has finished.
    pub budget_done: u64,
    /// Why it diverged or failed.
    pub message: Option<String>,
}

impl TrialRecord {
    pub fn new(planned: &PlannedTrial) -> TrialRecord {
        TrialRecord {
            id: planned.id.clone(),
            overrides: planned.overrides.clone(),
            status: TrialStatus::Pending,
            history: Vec::new(),
            steps: 0,
            wall_time_s: 0.0,
            budget_done: 0,
            message: None,
        }
    }

    /// Adds an evaluation. A step at or before the last recorded one means the runner
    /// resumed from an earlier checkpoint and is replaying: later entries are replaced.
    pub fn record_eval(&mut self, step: u64, loss: f64) {
        self.history.retain(|&(s, _)| s < step);
        self.history.push((step, loss));
    }

    pub fn final_loss(&self) -> Option<f64> {
        self.history.last().map(|&(_, l)| l)
    }

    pub fn best_loss(&self) -> Option<f64> {
        self.history.iter().map(|&(_, l)| l).reduce(f64::min)
    }

    /// The objective as of `budget` steps: the last (or lowest) eval at or before it.
    pub fn objective_at(&self, budget: u64, metric: Metric) -> Option<f64> {
        let mut upto = self.history.iter().filter(|&&(s, _)| s <= budget).map(|&(_, l)| l);
        match metric {
            Metric::EvalLoss => upto.next_back(),
            Metric::BestEvalLoss => upto.reduce(f64::min),
        }
    }
}

/// What a sweep directory was created for, to refuse resuming it with a different sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub strategy: String,
    pub seed: u64,
    pub rungs: Vec<u64>,
    pub base: String,
    pub base_overrides: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepState {
    pub version: u32,
    pub plan: PlanRecord,
    pub trials: Vec<TrialRecord>,
}

impl SweepState {
    /// A fresh state for `sweep`: every planned trial pending.
    pub fn plan(sweep: &SweepConfig) -> Result<SweepState> {
        Ok(SweepState {
            version: STATE_VERSION,
            plan: PlanRecord {
                strategy: sweep.strategy.name().to_string(),
                seed: sweep.seed,
                rungs: sweep.rungs(),
                base: sweep.base_path.clone(),
                base_overrides: sweep.base_overrides.clone(),
            },
            trials: sweep.trials()?.iter().map(TrialRecord::new).collect(),
        })
    }

    /// The state stored under `dir`, if any.
    pub fn load(dir: &Location) -> Result<Option<SweepState>> {
        let Some(bytes) = store::read_optional(dir, STATE_FILE)? else { return Ok(None) };
        let state: SweepState = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!("{}/{STATE_FILE} is not a sweep state: {e}", dir.url.trim_end_matches('/')))
        })?;
        if state.version != STATE_VERSION {
            return Err(Error::Invalid(format!(
                "{}/{STATE_FILE} has state version {} but this build reads version {STATE_VERSION}",
                dir.url.trim_end_matches('/'),
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Writes the whole state in one put.
    pub fn save(&self, dir: &Location) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(format!("cannot encode the sweep state: {e}")))?;
        store::write(dir, STATE_FILE, bytes)
    }

    /// Errors unless `self` (stored) was made for the same sweep as `fresh` (planned now).
    pub fn check_same_sweep(&self, fresh: &SweepState, dir: &Location) -> Result<()> {
        let differs = |what: String| {
            Error::Invalid(format!(
                "{} holds a different sweep ({what}); restore the original sweep file or use a new sweep directory",
                dir.url
            ))
        };
        if self.plan != fresh.plan {
            return Err(differs(format!("stored plan {:?}, this sweep file plans {:?}", self.plan, fresh.plan)));
        }
        if self.trials.len() != fresh.trials.len() {
            return Err(differs(format!("{} trials stored, {} planned", self.trials.len(), fresh.trials.len())));
        }
        for (old, new) in self.trials.iter().zip(&fresh.trials) {
            // Compare as JSON: the stored overrides went through JSON once already.
            let same = old.id == new.id
                && serde_json::to_value(&old.overrides).ok() == serde_json::to_value(&new.overrides).ok();
            if !same {
                return Err(differs(format!("trial {} has overrides {:?}, now planned {:?}", old.id, old.overrides, new.overrides)));
            }
        }
        Ok(())
    }
}
