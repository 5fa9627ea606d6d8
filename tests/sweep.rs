//! The sweep driver against a fake trainer whose eval loss is a known function of
//! the learning rate: it finds the best LR, survives being killed, races trials
//! through successive halving, and records divergence and failures.

use dalle_xla::storage::{self, Location};
use dalle_xla::sweep::{
    run_sweep, run_sweep_parallel, Decision, SweepConfig, SweepSummary, TrialOutcome, TrialRecord, TrialRunner, TrialSpec,
    TrialStatus,
};
use dalle_xla::Result;
use object_store::{ObjectStoreExt, PutPayload};
use serde_yaml::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------- the fake trainer

/// Above this LR the fake run explodes (finite but 10x the loss).
const EXPLODE_LR: f64 = 3e-2;
/// Above this LR it produces NaN.
const NAN_LR: f64 = 5e-2;

/// Eval loss of a healthy run: a parabola in log10(lr) with its minimum at 1e-3,
/// decreasing with steps, plus a small penalty for warmup.
fn true_loss(lr: f64, warmup: i64, step: u64) -> f64 {
    2.0 + 0.5 * (lr.log10() + 3.0).powi(2) + 3.0 / (1.0 + step as f64 / 50.0) + 0.001 * warmup as f64
}

/// What the fake reports at `step` (its `n`-th evaluation, from 1).
fn reported_loss(lr: f64, warmup: i64, step: u64, n: u64) -> f64 {
    let l = true_loss(lr, warmup, step);
    match n {
        1 => l,
        _ if lr > NAN_LR => f64::NAN,
        _ if lr > EXPLODE_LR => l * 10.0,
        _ => l,
    }
}

fn lr_of(overrides: &[(String, Value)]) -> f64 {
    overrides.iter().find(|(k, _)| k == "optimizer.learning_rate").and_then(|(_, v)| v.as_f64()).expect("lr override")
}

fn get(cfg: &Value, path: &str) -> Value {
    path.split('.').fold(cfg.clone(), |v, k| v.get(k).cloned().unwrap_or(Value::Null))
}

#[derive(Clone, Debug, PartialEq)]
struct Call {
    id: String,
    budget: u64,
    resumed_from: u64,
    devices: Vec<usize>,
}

/// Trains nothing: walks steps, reports `reported_loss` every `train.eval_every`
/// steps, and checkpoints `(step, seconds)` into its run directory after each
/// evaluation and at the end, like a trainer would.
#[derive(Clone, Default)]
struct FakeTrainer {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Panic (as if the process were killed) once this many evaluations were reported in total.
    crash_after_reports: Option<usize>,
    reports: Arc<AtomicUsize>,
    /// Trials whose `run` returns an error.
    fail_ids: HashSet<String>,
    /// Devices currently held by running trials (shared by all workers of a parallel sweep).
    busy_devices: Arc<Mutex<HashSet<usize>>>,
}

const SECONDS_PER_STEP: f64 = 0.01;

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn read_checkpoint(dir: &Location) -> (u64, f64) {
    match block(dir.store.get(&dir.child("ckpt.json"))) {
        Ok(got) => {
            let bytes = block(got.bytes()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
        Err(_) => (0, 0.0),
    }
}

fn write_checkpoint(dir: &Location, step: u64) {
    let bytes = serde_json::to_vec(&(step, step as f64 * SECONDS_PER_STEP)).unwrap();
    block(dir.store.put(&dir.child("ckpt.json"), PutPayload::from(bytes))).unwrap();
}

impl TrialRunner for FakeTrainer {
    fn run(
        &mut self,
        trial: &TrialSpec,
        run_dir: &Location,
        budget_steps: u64,
        report: &mut dyn FnMut(u64, f64) -> Decision,
    ) -> Result<TrialOutcome> {
        {
            let mut busy = self.busy_devices.lock().unwrap();
            for d in &trial.devices {
                assert!(busy.insert(*d), "device {d} given to {} while another trial holds it", trial.id);
            }
        }
        let (start, _) = read_checkpoint(run_dir);
        self.calls.lock().unwrap().push(Call {
            id: trial.id.clone(),
            budget: budget_steps,
            resumed_from: start,
            devices: trial.devices.clone(),
        });
        let outcome = self.train(trial, run_dir, start, budget_steps, report);
        let mut busy = self.busy_devices.lock().unwrap();
        for d in &trial.devices {
            busy.remove(d);
        }
        outcome
    }
}

impl FakeTrainer {
    fn train(
        &self,
        trial: &TrialSpec,
        run_dir: &Location,
        start: u64,
        budget: u64,
        report: &mut dyn FnMut(u64, f64) -> Decision,
    ) -> Result<TrialOutcome> {
        if self.fail_ids.contains(&trial.id) {
            return Err(dalle_xla::Error::Invalid(format!("out of memory in trial {}", trial.id)));
        }
        // The trial's config is the base config with its overrides: read what a trainer would.
        let lr = get(&trial.config, "optimizer.learning_rate").as_f64().expect("lr in the trial config");
        let warmup = get(&trial.config, "optimizer.schedule.warmup_steps").as_i64().expect("warmup in the trial config");
        let every = get(&trial.config, "train.eval_every").as_u64().expect("eval_every in the trial config");
        let mut step = start;
        while step < budget {
            step += 1;
            if step.is_multiple_of(every) {
                let loss = reported_loss(lr, warmup, step, step / every);
                let decision = report(step, loss);
                if let Some(limit) = self.crash_after_reports {
                    if self.reports.fetch_add(1, Ordering::SeqCst) + 1 == limit {
                        panic!("simulated kill after {limit} reports");
                    }
                }
                write_checkpoint(run_dir, step);
                if decision == Decision::Stop {
                    return Ok(TrialOutcome::Completed { steps: step, wall_time_s: step as f64 * SECONDS_PER_STEP });
                }
            }
        }
        write_checkpoint(run_dir, step);
        Ok(TrialOutcome::Completed { steps: step, wall_time_s: step as f64 * SECONDS_PER_STEP })
    }
}

// ---------------------------------------------------------------- helpers

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh in-memory sweep directory.
fn fresh_dir(tag: &str) -> Location {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    storage::open(&format!("memory://sweep-tests/{tag}-{}-{n}", std::process::id())).unwrap()
}

fn read(dir: &Location, name: &str) -> Option<Vec<u8>> {
    let got = block(dir.store.get(&dir.child(name))).ok()?;
    Some(block(got.bytes()).unwrap().to_vec())
}

fn read_text(dir: &Location, name: &str) -> String {
    String::from_utf8(read(dir, name).unwrap_or_else(|| panic!("{name} written"))).unwrap()
}

fn sweep(yaml: &str) -> SweepConfig {
    SweepConfig::from_yaml(yaml, "test sweep", &[]).unwrap()
}

const RANDOM_LR: &str = "
base: configs/tiny.yaml
base_overrides: [train.eval_every=10]
space:
  optimizer.learning_rate: { distribution: log_uniform, min: 1.0e-5, max: 1.0e-1 }
strategy: random
num_trials: 10
seed: 5
objective: { steps: 60 }
";

const ASHA_LR: &str = "
base: configs/tiny.yaml
base_overrides: [train.eval_every=10]
space:
  optimizer.learning_rate: { distribution: log_uniform, min: 1.0e-5, max: 1.0e-1 }
strategy: asha
num_trials: 12
seed: 11
asha: { reduction_factor: 3, min_steps: 20 }
objective: { steps: 180 }
";

fn status_of(s: &SweepSummary, id: &str) -> TrialStatus {
    s.trials.iter().find(|t| t.id == id).unwrap().status
}

/// The table files and the best config body (its first comment line names the directory).
fn outputs(dir: &Location) -> (String, String, String) {
    let best = read(dir, "best.yaml").map(|b| String::from_utf8(b).unwrap()).unwrap_or_default();
    let best_body = best.lines().skip(1).collect::<Vec<_>>().join("\n");
    (read_text(dir, "results.md"), read_text(dir, "results.csv"), best_body)
}

fn healthy(t: &TrialRecord) -> bool {
    lr_of(&t.overrides) <= EXPLODE_LR
}

// ---------------------------------------------------------------- tests

#[test]
fn random_sweep_finds_the_lowest_loss_and_marks_divergence() {
    let sweep = sweep(RANDOM_LR);
    let dir = fresh_dir("random");
    let mut runner = FakeTrainer::default();
    let summary = run_sweep(&sweep, &dir, &mut runner).unwrap();
    assert_eq!(summary.trials.len(), 10);

    // The best trial, computed independently from each trial's LR.
    let expected_best = summary
        .trials
        .iter()
        .filter(|t| healthy(t))
        .min_by(|a, b| true_loss(lr_of(&a.overrides), 0, 60).total_cmp(&true_loss(lr_of(&b.overrides), 0, 60)))
        .unwrap();
    assert_eq!(summary.best.as_deref(), Some(expected_best.id.as_str()));
    // configs/tiny.yaml warms up for 10 steps.
    let want = true_loss(lr_of(&expected_best.overrides), 10, 60);
    assert!((summary.best_objective.unwrap() - want).abs() < 1e-12);

    // Divergence is recorded per trial, and only for the LRs that blow up.
    let diverging: Vec<&TrialRecord> = summary.trials.iter().filter(|t| !healthy(t)).collect();
    assert!(!diverging.is_empty(), "the seed should sample some LRs above {EXPLODE_LR}");
    for t in &summary.trials {
        if healthy(t) {
            assert_eq!(t.status, TrialStatus::Completed, "{} lr {}", t.id, lr_of(&t.overrides));
            assert_eq!(t.steps, 60);
            assert_eq!(t.history.len(), 6);
            assert!((t.wall_time_s - 0.6).abs() < 1e-9);
        } else {
            assert_eq!(t.status, TrialStatus::Diverged, "{} lr {}", t.id, lr_of(&t.overrides));
            assert_eq!(t.steps, 20, "stopped at the first bad evaluation");
            assert!(t.message.as_deref().unwrap().contains("step 20"), "{:?}", t.message);
        }
    }

    // Outputs: tables, plots that decode, and a best config that is the base plus the best LR.
    let (md, csv, _) = outputs(&dir);
    assert!(md.contains(&format!("Best: **{}**", expected_best.id)), "{md}");
    assert_eq!(csv.lines().count(), 11, "header and one row per trial");
    assert!(csv.starts_with("trial,optimizer.learning_rate,status,final_eval_loss,best_eval_loss,steps,wall_time_s,note"));
    for t in &summary.trials {
        let row = csv.lines().find(|l| l.starts_with(&format!("{},", t.id))).unwrap();
        assert!(row.contains(t.status.as_str()), "{row}");
    }
    for png in ["curves.png", "loss_vs_lr.png"] {
        let img = image::load_from_memory(&read(&dir, png).unwrap()).expect("PNG decodes");
        assert_eq!((img.width(), img.height()), (900, 560), "{png}");
    }
    assert!(summary.report.skipped.is_empty(), "{:?}", summary.report.skipped);

    let best: Value = serde_yaml::from_str(&read_text(&dir, "best.yaml")).unwrap();
    let mut expected: Value = serde_yaml::from_str(&std::fs::read_to_string("configs/tiny.yaml").unwrap()).unwrap();
    expected["optimizer"]["learning_rate"] = Value::from(lr_of(&expected_best.overrides));
    expected["train"]["eval_every"] = Value::from(10);
    assert_eq!(best, expected, "best.yaml is the base config with the best trial's overrides");

    // Each trial ran exactly once, in its own directory, on all devices.
    let calls = runner.calls.lock().unwrap();
    assert_eq!(calls.len(), 10);
    assert!(calls.iter().all(|c| c.budget == 60 && c.resumed_from == 0 && c.devices.is_empty()));
}

#[test]
fn grid_sweep_runs_every_combination_and_records_both_kinds_of_divergence() {
    let sweep = sweep(
        "
base: configs/tiny.yaml
base_overrides: [train.eval_every=10]
space:
  optimizer.learning_rate: [1.0e-4, 1.0e-3, 1.0e-2, 4.0e-2, 8.0e-2]
  optimizer.schedule.warmup_steps: { values: [0, 10] }
strategy: grid
objective: { steps: 30, divergence_factor: 4.0 }
",
    );
    let dir = fresh_dir("grid");
    let summary = run_sweep(&sweep, &dir, &mut FakeTrainer::default()).unwrap();
    assert_eq!(summary.trials.len(), 10);
    let combos: Vec<(f64, i64)> =
        summary.trials.iter().map(|t| (lr_of(&t.overrides), t.overrides[1].1.as_i64().unwrap())).collect();
    let mut expected = Vec::new();
    for lr in [1e-4, 1e-3, 1e-2, 4e-2, 8e-2] {
        for w in [0, 10] {
            expected.push((lr, w));
        }
    }
    assert_eq!(combos, expected);
    assert_eq!(summary.best.as_deref(), Some("t002"), "lr 1e-3 with no warmup");

    for t in &summary.trials {
        let lr = lr_of(&t.overrides);
        let msg = t.message.clone().unwrap_or_default();
        if lr > NAN_LR {
            assert_eq!(t.status, TrialStatus::Diverged);
            assert!(msg.contains("NaN"), "{msg}");
        } else if lr > EXPLODE_LR {
            assert_eq!(t.status, TrialStatus::Diverged);
            assert!(msg.contains("above 4 x the first eval loss"), "{msg}");
            assert_eq!(t.history.len(), 2, "the exploding evaluation is kept");
        } else {
            assert_eq!(t.status, TrialStatus::Completed);
        }
    }
}

#[test]
fn a_runner_error_fails_the_trial_and_the_sweep_goes_on() {
    let sweep = sweep(RANDOM_LR);
    let dir = fresh_dir("fail");
    let mut runner = FakeTrainer { fail_ids: HashSet::from(["t001".to_string()]), ..Default::default() };
    let summary = run_sweep(&sweep, &dir, &mut runner).unwrap();
    assert_eq!(status_of(&summary, "t001"), TrialStatus::Failed);
    let t1 = summary.trials.iter().find(|t| t.id == "t001").unwrap();
    assert!(t1.message.as_deref().unwrap().contains("out of memory in trial t001"));
    assert!(read_text(&dir, "results.md").contains("out of memory in trial t001"));
    let ran: HashSet<String> = runner.calls.lock().unwrap().iter().map(|c| c.id.clone()).collect();
    assert_eq!(ran.len(), 10, "every trial after the failed one still ran");
    assert!(summary.trials.iter().filter(|t| t.id != "t001" && healthy(t)).all(|t| t.status == TrialStatus::Completed));
}

/// Successive halving computed independently: at each rung keep the best
/// max(1, entered / eta) of the trials that finished it healthy.
fn expected_halving(lrs: &[f64], rungs: &[u64], eta: usize, every: u64) -> Vec<(TrialStatus, u64)> {
    let mut result: Vec<Option<(TrialStatus, u64)>> = vec![None; lrs.len()];
    let mut entered: Vec<usize> = (0..lrs.len()).collect();
    for (k, &budget) in rungs.iter().enumerate() {
        let mut finished = Vec::new();
        for &i in &entered {
            if lrs[i] > EXPLODE_LR {
                // Diverges at its second evaluation, whichever rung that falls in.
                if result[i].is_none() && 2 * every <= budget {
                    result[i] = Some((TrialStatus::Diverged, 2 * every));
                }
            } else {
                finished.push(i);
            }
        }
        finished.retain(|&i| result[i].is_none());
        if k + 1 == rungs.len() {
            for i in finished {
                result[i] = Some((TrialStatus::Completed, budget));
            }
            break;
        }
        let keep = (entered.len() / eta).max(1);
        finished.sort_by(|&a, &b| true_loss(lrs[a], 0, budget).total_cmp(&true_loss(lrs[b], 0, budget)).then(a.cmp(&b)));
        for &i in &finished[keep.min(finished.len())..] {
            result[i] = Some((TrialStatus::Stopped, budget));
        }
        entered = finished.into_iter().take(keep).collect();
        entered.sort_unstable();
    }
    result.into_iter().map(|r| r.expect("every trial ends somewhere")).collect()
}

#[test]
fn asha_stops_exactly_the_trials_it_should() {
    let sweep = sweep(ASHA_LR);
    assert_eq!(sweep.rungs(), vec![20, 60, 180]);
    let dir = fresh_dir("asha");
    let mut runner = FakeTrainer::default();
    let summary = run_sweep(&sweep, &dir, &mut runner).unwrap();
    let lrs: Vec<f64> = summary.trials.iter().map(|t| lr_of(&t.overrides)).collect();
    assert!(lrs.iter().any(|&lr| lr > EXPLODE_LR), "the seed should include diverging LRs: {lrs:?}");
    let expected = expected_halving(&lrs, &[20, 60, 180], 3, 10);
    let got: Vec<(TrialStatus, u64)> = summary.trials.iter().map(|t| (t.status, t.steps)).collect();
    assert_eq!(got, expected, "lrs {lrs:?}");
    assert_eq!(got.iter().filter(|(s, _)| *s == TrialStatus::Completed).count(), 1, "12 -> 4 -> 1");

    // Promoted trials resume from their rung checkpoint instead of starting over.
    let calls = runner.calls.lock().unwrap();
    for c in calls.iter().filter(|c| c.budget > 20) {
        assert!(c.resumed_from == 20 || c.resumed_from == 60, "{c:?}");
    }
    let winner = summary.best.clone().unwrap();
    let winner_budgets: Vec<u64> = calls.iter().filter(|c| c.id == winner).map(|c| c.budget).collect();
    assert_eq!(winner_budgets, vec![20, 60, 180]);
}

/// Kills a sweep after `crash_after` evaluations, reruns it, and checks it ends
/// exactly like a sweep that was never interrupted.
fn kill_and_resume(yaml: &str, crash_after: usize) {
    let sweep = sweep(yaml);
    let clean_dir = fresh_dir("clean");
    run_sweep(&sweep, &clean_dir, &mut FakeTrainer::default()).unwrap();

    let dir = fresh_dir("killed");
    let mut doomed = FakeTrainer { crash_after_reports: Some(crash_after), ..Default::default() };
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_sweep(&sweep, &dir, &mut doomed)));
    assert!(crashed.is_err(), "the sweep was killed after {crash_after} reports");
    assert!(read(&dir, "results.md").is_none(), "no report from a killed sweep");

    let stored = dalle_xla::sweep::SweepState::load(&dir).unwrap().expect("state survives the kill");
    let finished_before: HashSet<String> =
        stored.trials.iter().filter(|t| t.status.is_final()).map(|t| t.id.clone()).collect();
    let interrupted: Vec<&TrialRecord> = stored.trials.iter().filter(|t| t.status == TrialStatus::Running).collect();
    assert_eq!(interrupted.len(), 1, "exactly one trial was mid-run");

    let mut rerun = FakeTrainer::default();
    let summary = run_sweep(&sweep, &dir, &mut rerun).unwrap();
    let calls = rerun.calls.lock().unwrap();
    for c in calls.iter() {
        assert!(!finished_before.contains(&c.id), "finished trial {} ran again", c.id);
    }
    let resumed = calls.iter().find(|c| c.id == interrupted[0].id).expect("the interrupted trial resumed");
    // The kill came after an evaluation was recorded but before its checkpoint, so the
    // trial resumes one eval interval back and reports that evaluation again.
    let last_recorded = interrupted[0].history.last().expect("the killed trial had reported").0;
    assert_eq!(resumed.resumed_from, last_recorded - 10, "{resumed:?}");
    assert!(summary.trials.iter().all(|t| t.status.is_final()));

    assert_eq!(outputs(&dir), outputs(&clean_dir), "crash after {crash_after} reports");
    let clean_state = dalle_xla::sweep::SweepState::load(&clean_dir).unwrap().unwrap();
    let resumed_state = dalle_xla::sweep::SweepState::load(&dir).unwrap().unwrap();
    assert_eq!(clean_state, resumed_state, "the stored record is the same too");
}

#[test]
fn killed_random_sweep_resumes_to_the_same_table() {
    for crash_after in [1, 4, 13, 31] {
        kill_and_resume(RANDOM_LR, crash_after);
    }
}

#[test]
fn killed_asha_sweep_resumes_to_the_same_table() {
    for crash_after in [3, 12, 25, 29, 36] {
        kill_and_resume(ASHA_LR, crash_after);
    }
}

#[test]
fn parallel_sweep_gives_disjoint_devices_and_the_same_results() {
    let yaml = format!("{ASHA_LR}parallelism: {{ trials_in_parallel: 4, devices_per_trial: 2 }}\n");
    let sweep = sweep(&yaml);
    let sequential_dir = fresh_dir("seq");
    run_sweep(&sweep, &sequential_dir, &mut FakeTrainer::default()).unwrap();

    let dir = fresh_dir("par");
    let shared = FakeTrainer::default();
    let factory = |_slot: usize| -> Result<Box<dyn TrialRunner + Send>> { Ok(Box::new(shared.clone())) };
    let summary = run_sweep_parallel(&sweep, &dir, &factory).unwrap();
    assert_eq!(outputs(&dir), outputs(&sequential_dir));
    assert_eq!(summary.trials.iter().filter(|t| t.status == TrialStatus::Completed).count(), 1);

    let calls = shared.calls.lock().unwrap();
    let sets: HashSet<Vec<usize>> = calls.iter().map(|c| c.devices.clone()).collect();
    for set in &sets {
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(set.iter().all(|&d| d < 8));
        assert!(set[0] % 2 == 0 && set[1] == set[0] + 1, "slot-aligned pairs: {set:?}");
    }
}

#[test]
fn a_changed_sweep_file_is_refused_in_an_existing_directory() {
    let dir = fresh_dir("changed");
    run_sweep(&sweep(RANDOM_LR), &dir, &mut FakeTrainer::default()).unwrap();
    let changed = sweep(&RANDOM_LR.replace("seed: 5", "seed: 6"));
    let err = run_sweep(&changed, &dir, &mut FakeTrainer::default()).unwrap_err().to_string();
    assert!(err.contains("different sweep") && err.contains("new sweep directory"), "{err}");

    // Rerunning the finished sweep itself runs nothing and reproduces the outputs.
    let before = outputs(&dir);
    let mut again = FakeTrainer::default();
    run_sweep(&sweep(RANDOM_LR), &dir, &mut again).unwrap();
    assert!(again.calls.lock().unwrap().is_empty());
    assert_eq!(outputs(&dir), before);
}

/// Accepts only learning rates up to 1e-2, like a trainer that validates its config.
struct PickyTrainer(FakeTrainer);

impl TrialRunner for PickyTrainer {
    fn run(&mut self, trial: &TrialSpec, run_dir: &Location, budget: u64, report: &mut dyn FnMut(u64, f64) -> Decision) -> Result<TrialOutcome> {
        self.0.run(trial, run_dir, budget, report)
    }

    fn check_config(&self, config: &Value) -> Result<()> {
        let lr = get(config, "optimizer.learning_rate").as_f64().unwrap_or(f64::NAN);
        if lr > 1e-2 {
            return Err(dalle_xla::Error::Invalid(format!("optimizer.learning_rate {lr} is above 0.01")));
        }
        Ok(())
    }
}

#[test]
fn configs_the_runner_rejects_stop_the_sweep_before_any_trial_runs() {
    let dir = fresh_dir("picky");
    let mut runner = PickyTrainer(FakeTrainer::default());
    let err = run_sweep(&sweep(RANDOM_LR), &dir, &mut runner).unwrap_err().to_string();
    assert!(err.contains("trial t") && err.contains("optimizer.learning_rate=") && err.contains("above 0.01"), "{err}");
    assert!(runner.0.calls.lock().unwrap().is_empty(), "nothing ran");
    assert!(read(&dir, "sweep_state.json").is_none(), "no state for a sweep that never started");
}

#[test]
fn killed_parallel_sweep_resumes_to_the_same_table() {
    let yaml = format!("{ASHA_LR}parallelism: {{ trials_in_parallel: 3, devices_per_trial: 1 }}\n");
    let sweep = sweep(&yaml);
    let clean = fresh_dir("par-clean");
    run_sweep(&sweep, &clean, &mut FakeTrainer::default()).unwrap();
    for crash_after in [5, 22] {
        let dir = fresh_dir("par-killed");
        let doomed = FakeTrainer { crash_after_reports: Some(crash_after), ..Default::default() };
        let factory = |_slot: usize| -> Result<Box<dyn TrialRunner + Send>> { Ok(Box::new(doomed.clone())) };
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_sweep_parallel(&sweep, &dir, &factory)));
        assert!(crashed.is_err(), "killed after {crash_after} reports");
        let fresh = FakeTrainer::default();
        let factory = |_slot: usize| -> Result<Box<dyn TrialRunner + Send>> { Ok(Box::new(fresh.clone())) };
        run_sweep_parallel(&sweep, &dir, &factory).unwrap();
        assert_eq!(outputs(&dir), outputs(&clean), "crash after {crash_after} reports");
    }
}
