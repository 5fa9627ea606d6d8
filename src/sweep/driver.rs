//! Running a sweep: plan or resume the trials, race them through the rungs
//! (one rung for grid and random), record every evaluation, then write the report.

use super::config::{Strategy, SweepConfig};
use super::report::{self, Report};
use super::runner::{Decision, TrialOutcome, TrialRunner, TrialSpec};
use super::state::{SweepState, TrialRecord, TrialStatus};
use crate::error::{Error, Result};
use crate::storage::Location;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The directory under the sweep directory that holds the trials' run directories.
pub const TRIALS_DIR: &str = "trials";

/// What a finished sweep produced.
#[derive(Clone, Debug)]
pub struct SweepSummary {
    /// Every trial's final record, in trial order.
    pub trials: Vec<TrialRecord>,
    /// The completed trial with the lowest objective at the full budget.
    pub best: Option<String>,
    pub best_objective: Option<f64>,
    /// Files written under the sweep directory and outputs that could not be made (with why).
    pub report: Report,
}

/// Builds runners for concurrent trials: called once per worker slot (0..trials_in_parallel).
pub type RunnerFactory<'a> = dyn Fn(usize) -> Result<Box<dyn TrialRunner + Send>> + Sync + 'a;

/// Runs (or resumes) the sweep in `dir`, one trial at a time, each on the devices of
/// slot 0 (`parallelism.devices_per_trial`, or all devices when that is 0).
pub fn run_sweep(sweep: &SweepConfig, dir: &Location, runner: &mut dyn TrialRunner) -> Result<SweepSummary> {
    let state = prepare(sweep, dir, &|cfg| runner.check_config(cfg))?;
    let shared = Shared { sweep, dir, state: Mutex::new(state) };
    race(&shared, &mut |jobs| {
        for (trial, budget) in jobs {
            run_job(&shared, runner, trial, budget, sweep.parallelism.devices(0))?;
        }
        Ok(())
    })?;
    finish(shared)
}

/// Runs (or resumes) the sweep with `parallelism.trials_in_parallel` trials at a time,
/// each on its own thread with its own runner from `factory`, on disjoint device sets.
/// Rungs still end together, so the outcome does not depend on which trial finishes first.
pub fn run_sweep_parallel(sweep: &SweepConfig, dir: &Location, factory: &RunnerFactory<'_>) -> Result<SweepSummary> {
    let mut runners = (0..sweep.parallelism.trials_in_parallel)
        .map(|slot| factory(slot).map_err(|e| Error::Invalid(format!("cannot create the runner for worker {slot}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let state = prepare(sweep, dir, &|cfg| runners[0].check_config(cfg))?;
    let shared = Shared { sweep, dir, state: Mutex::new(state) };
    race(&shared, &mut |jobs| {
        let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for (slot, runner) in runners.iter_mut().enumerate() {
                let (queue, first_error, shared) = (&queue, &first_error, &shared);
                s.spawn(move || loop {
                    if lock(first_error).is_some() {
                        return;
                    }
                    let Some((trial, budget)) = lock(queue).pop_front() else { return };
                    if let Err(e) = run_job(shared, runner.as_mut(), trial, budget, sweep.parallelism.devices(slot)) {
                        lock(first_error).get_or_insert(e);
                        return;
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    finish(shared)
}

struct Shared<'a> {
    sweep: &'a SweepConfig,
    dir: &'a Location,
    state: Mutex<SweepState>,
}

/// A poisoned lock only means another worker panicked; the state it guards is
/// always saved whole, so carry on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Plans the sweep, checks every trial's config, and loads the stored state (refusing a
/// directory that holds a different sweep) or stores the fresh plan.
fn prepare(sweep: &SweepConfig, dir: &Location, check: &dyn Fn(&serde_yaml::Value) -> Result<()>) -> Result<SweepState> {
    let fresh = SweepState::plan(sweep)?;
    for t in &fresh.trials {
        let cfg = sweep.trial_config(&t.overrides)?;
        check(&cfg).map_err(|e| Error::Invalid(format!("trial {} ({}): {e}", t.id, report::describe_overrides(&t.overrides))))?;
    }
    match SweepState::load(dir)? {
        Some(stored) => {
            stored.check_same_sweep(&fresh, dir)?;
            Ok(stored)
        }
        None => {
            fresh.save(dir)?;
            Ok(fresh)
        }
    }
}

/// Runs the rungs in order. `execute` runs a batch of (trial index, budget) jobs; after each
/// rung but the last, the best `1/reduction_factor` of the trials that entered it go on.
fn race(shared: &Shared<'_>, execute: &mut dyn FnMut(Vec<(usize, u64)>) -> Result<()>) -> Result<()> {
    let sweep = shared.sweep;
    let rungs = sweep.rungs();
    let mut entered: Vec<usize> = (0..lock(&shared.state).trials.len()).collect();
    for (k, &budget) in rungs.iter().enumerate() {
        let jobs: Vec<(usize, u64)> = {
            let st = lock(&shared.state);
            entered.iter().filter(|&&i| !st.trials[i].status.is_final() && st.trials[i].budget_done < budget).map(|&i| (i, budget)).collect()
        };
        execute(jobs)?;
        if k + 1 == rungs.len() {
            break;
        }
        let Strategy::SuccessiveHalving { reduction_factor, .. } = sweep.strategy else { break };
        let mut st = lock(&shared.state);
        let promoted = promote(&st.trials, &entered, budget, reduction_factor, sweep.objective.metric);
        let mut changed = false;
        for &i in &entered {
            let t = &mut st.trials[i];
            if !promoted.contains(&i) && t.status == TrialStatus::Paused {
                t.status = TrialStatus::Stopped;
                t.message = Some(format!("stopped by successive halving after the {budget}-step rung"));
                changed = true;
            }
        }
        if changed {
            st.save(shared.dir)?;
        }
        entered = promoted;
    }
    Ok(())
}

/// The trials (indices into `trials`) that go on from the rung at `budget`: of the
/// `entered` ones, the `max(1, n / eta)` with the lowest objective at the budget among
/// those that finished it (ties go to the earlier trial).
pub(super) fn promote(
    trials: &[TrialRecord],
    entered: &[usize],
    budget: u64,
    eta: u64,
    metric: super::config::Metric,
) -> Vec<usize> {
    let keep = (entered.len() as u64 / eta).max(1) as usize;
    let mut ranked: Vec<(f64, usize)> = entered
        .iter()
        .filter(|&&i| trials[i].budget_done >= budget)
        .filter_map(|&i| trials[i].objective_at(budget, metric).map(|o| (o, i)))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut promoted: Vec<usize> = ranked.into_iter().take(keep).map(|(_, i)| i).collect();
    promoted.sort_unstable();
    promoted
}

/// Runs one trial up to `budget` and records how it went. Only storage failures are errors;
/// anything the trial does (diverge, fail, return an error) is recorded and the sweep goes on.
fn run_job(shared: &Shared<'_>, runner: &mut dyn TrialRunner, index: usize, budget: u64, devices: Vec<usize>) -> Result<()> {
    let sweep = shared.sweep;
    let spec = {
        let mut st = lock(&shared.state);
        st.trials[index].status = TrialStatus::Running;
        st.save(shared.dir)?;
        let t = &st.trials[index];
        TrialSpec { id: t.id.clone(), overrides: t.overrides.clone(), config: sweep.trial_config(&t.overrides)?, devices }
    };
    let run_dir = shared.dir.join(TRIALS_DIR).join(&spec.id);
    let factor = sweep.objective.divergence_factor;
    let mut diverged: Option<String> = None;
    let mut save_error: Option<Error> = None;
    let started = Instant::now();
    let result = runner.run(&spec, &run_dir, budget, &mut |step, loss| {
        if diverged.is_some() || save_error.is_some() {
            return Decision::Stop;
        }
        let mut st = lock(&shared.state);
        let t = &mut st.trials[index];
        if !loss.is_finite() {
            diverged = Some(format!("eval loss {loss} at step {step}"));
            return Decision::Stop;
        }
        t.record_eval(step, loss);
        let first = t.history[0].1;
        if loss > factor * first {
            diverged = Some(format!("eval loss {loss:.4} at step {step} is above {factor} x the first eval loss {first:.4}"));
        }
        if let Err(e) = st.save(shared.dir) {
            save_error = Some(e);
        }
        if diverged.is_some() || save_error.is_some() {
            Decision::Stop
        } else {
            Decision::Continue
        }
    });
    if let Some(e) = save_error {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut st = lock(&shared.state);
    let last_rung = sweep.objective.steps;
    let t = &mut st.trials[index];
    match (result, diverged) {
        (Ok(TrialOutcome::Completed { steps, wall_time_s }), Some(reason))
        | (Ok(TrialOutcome::Diverged { steps, wall_time_s, .. }), Some(reason))
        | (Ok(TrialOutcome::Diverged { steps, wall_time_s, reason }), None) => {
            t.steps = steps;
            t.wall_time_s = wall_time_s;
            t.status = TrialStatus::Diverged;
            t.message = Some(reason);
        }
        (Ok(TrialOutcome::Completed { steps, wall_time_s }), None) => {
            t.steps = steps;
            t.wall_time_s = wall_time_s;
            if t.objective_at(budget, sweep.objective.metric).is_none() {
                t.status = TrialStatus::Failed;
                t.message = Some(format!(
                    "no evaluation reported by step {budget}: the trial's eval interval must fit in its step budget"
                ));
            } else {
                t.budget_done = budget;
                t.status = if budget >= last_rung { TrialStatus::Completed } else { TrialStatus::Paused };
                // Ranked as it stands, but the table should say it trained less than asked.
                t.message = (steps < budget).then(|| format!("ended at step {steps}, before its {budget}-step budget"));
            }
        }
        (Ok(TrialOutcome::Interrupted { steps, reason }), _) => {
            // Still `Running`: the next run of the sweep resumes it from its checkpoint.
            t.steps = steps;
            let id = t.id.clone();
            st.save(shared.dir)?;
            return Err(Error::Invalid(format!(
                "the sweep was interrupted ({reason}) during trial {id} at step {steps}; its checkpoint is saved, run the same command to resume"
            )));
        }
        (Ok(TrialOutcome::Failed { message }), _) => {
            t.wall_time_s += elapsed;
            t.status = TrialStatus::Failed;
            t.message = Some(message);
        }
        (Err(e), _) => {
            t.wall_time_s += elapsed;
            t.status = TrialStatus::Failed;
            t.message = Some(e.to_string());
        }
    }
    st.save(shared.dir)
}

fn finish(shared: Shared<'_>) -> Result<SweepSummary> {
    let state = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
    let best = report::best_trial(shared.sweep, &state.trials);
    let report = report::write(shared.sweep, &state.trials, shared.dir)?;
    Ok(SweepSummary {
        best: best.map(|(t, _)| t.id.clone()),
        best_objective: best.map(|(_, o)| o),
        trials: state.trials,
        report,
    })
}
