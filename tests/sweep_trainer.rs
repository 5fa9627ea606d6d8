//! Sweeps of real training runs on the tiny config with CPU devices: the trainer
//! runner finds the learning rate with the lowest eval loss, flags a huge one,
//! survives being killed mid-trial, and runs trials side by side on disjoint
//! devices with the same results as one after another.
mod common;
use common::*;

use dalle_xla::checkpoint::{CheckpointConfig, CheckpointManager};
use dalle_xla::graph::{all_reduce_sum, Graph};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::storage::{self, Location};
use dalle_xla::sweep::{
    run_sweep, run_sweep_parallel, Decision, SweepConfig, SweepState, TrainerRunner, TrialOutcome, TrialRecord, TrialRunner,
    TrialSpec, TrialStatus, TRIALS_DIR,
};
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::MetricsLog;
use dalle_xla::{DType, HostTensor, Result};
use serde_yaml::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------- helpers

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh in-memory sweep directory.
fn fresh_dir(tag: &str) -> Location {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    storage::open(&format!("memory://sweep-trainer-tests/{tag}-{}-{n}", std::process::id())).unwrap()
}

fn sweep(yaml: &str) -> SweepConfig {
    SweepConfig::from_yaml(yaml, "test sweep", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn lr_of(t: &TrialRecord) -> f64 {
    t.overrides.iter().find(|(k, _)| k == "optimizer.learning_rate").and_then(|(_, v)| v.as_f64()).expect("lr override")
}

fn read_text(dir: &Location, name: &str) -> String {
    String::from_utf8(dir.get(name).unwrap().unwrap_or_else(|| panic!("{name} written"))).unwrap()
}

/// `results.csv` without the wall-time column (the one thing two identical sweeps
/// cannot share) and the body of `best.yaml` (its first line names the directory).
fn outputs_without_timing(dir: &Location) -> (Vec<String>, String) {
    let csv = read_text(dir, "results.csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let wall = header.iter().position(|h| *h == "wall_time_s").expect("wall_time_s column");
    // Only the last column (note) may hold quoted commas: split off the columns before it.
    let rows = csv
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.splitn(header.len(), ',').collect();
            fields.remove(wall);
            fields.join(",")
        })
        .collect();
    let best = read_text(dir, "best.yaml").lines().skip(1).collect::<Vec<_>>().join("\n");
    (rows, best)
}

/// The finite eval losses a trial's own run directory logged, as (step, loss).
fn logged_evals(dir: &Location, id: &str) -> Vec<(u64, f64)> {
    let log = MetricsLog::open(&dir.join(TRIALS_DIR).join(id), u64::MAX).unwrap();
    log.records().iter().filter_map(|m| m.eval_loss.filter(|l| l.is_finite()).map(|l| (m.step, l))).collect()
}

fn runner() -> TrainerRunner {
    TrainerRunner::new(client())
}

/// Wraps the trainer runner: records which devices each call got, and can panic
/// (as if the process were killed) right after a given number of reported evaluations.
#[derive(Clone)]
struct Observed {
    calls: Arc<Mutex<Vec<(String, Vec<usize>)>>>,
    reports: Arc<AtomicUsize>,
    crash_after_reports: Option<usize>,
}

impl Observed {
    fn new(crash_after_reports: Option<usize>) -> Self {
        Observed { calls: Arc::default(), reports: Arc::default(), crash_after_reports }
    }
}

impl TrialRunner for Observed {
    fn run(&mut self, trial: &TrialSpec, run_dir: &Location, budget: u64, report: &mut dyn FnMut(u64, f64) -> Decision) -> Result<TrialOutcome> {
        self.calls.lock().unwrap().push((trial.id.clone(), trial.devices.clone()));
        let (reports, limit) = (self.reports.clone(), self.crash_after_reports);
        let mut counted = |step: u64, loss: f64| {
            let decision = report(step, loss);
            if limit == Some(reports.fetch_add(1, Ordering::SeqCst) + 1) {
                panic!("simulated kill at step {step} of {}", trial.id);
            }
            decision
        };
        runner().run(trial, run_dir, budget, &mut counted)
    }

    fn check_config(&self, config: &Value) -> Result<()> {
        runner().check_config(config)
    }
}

// ---------------------------------------------------------------- the LR sweep

#[test]
fn lr_sweep_picks_the_middle_rate_and_flags_the_huge_one() {
    let sweep = sweep(
        "
base: configs/tiny.yaml
base_overrides: [train.eval_every=20, train.devices=1, model.encoder_vocab_size=4, model.max_text_length=3, data.num_captions=32]
space:
  optimizer.learning_rate: [1.0e-4, 3.0e-3, 1.0]
strategy: grid
objective: { steps: 60 }
",
    );
    let dir = fresh_dir("lr");
    let summary = run_sweep(&sweep, &dir, &mut runner()).unwrap();
    let by_lr = |lr: f64| summary.trials.iter().find(|t| lr_of(t) == lr).unwrap();
    let (slow, good, huge) = (by_lr(1e-4), by_lr(3e-3), by_lr(1.0));

    assert_eq!(summary.best.as_deref(), Some(good.id.as_str()), "{:#?}", summary.trials);
    for t in [slow, good] {
        assert_eq!(t.status, TrialStatus::Completed, "{t:?}");
        assert_eq!(t.steps, 60);
        assert_eq!(t.history.iter().map(|h| h.0).collect::<Vec<_>>(), vec![20, 40, 60]);
        assert!(t.wall_time_s > 0.0);
    }
    // The sweep's record is what the trials' own runs logged.
    for t in &summary.trials {
        assert_eq!(t.history, logged_evals(&dir, &t.id), "{}", t.id);
    }
    // 3e-3 really learns: well below the loss of guessing uniformly over the image codes.
    let base: TrainConfig = dalle_xla::config::from_value(sweep.base.clone()).unwrap();
    let uniform = (base.model.image_vocab_size as f64 + 1.0).ln();
    let good_loss = good.final_loss().unwrap();
    assert!(good_loss < uniform - 0.5, "3e-3 ends at {good_loss}, guessing gives {uniform}");
    assert!(good_loss < slow.final_loss().unwrap());
    // An LR of 1 blows up: diverged, or at least clearly the worst.
    match huge.status {
        TrialStatus::Diverged => assert!(huge.message.is_some() && huge.steps < 60, "{huge:?}"),
        _ => {
            let worst = huge.final_loss().unwrap();
            assert!(worst > slow.final_loss().unwrap() && worst > good_loss + 0.5, "{:#?}", summary.trials);
        }
    }

    let best: TrainConfig = serde_yaml::from_str(&read_text(&dir, "best.yaml")).unwrap();
    assert_eq!(best.optimizer.learning_rate, 3e-3);
    for png in ["curves.png", "loss_vs_lr.png"] {
        image::load_from_memory(&dir.get(png).unwrap().expect(png)).expect("PNG decodes");
    }
}

// ---------------------------------------------------------------- kill and resume

/// `configs/tiny.yaml` with a checkpoint every 10 steps, as a file the sweep can name
/// (`base_overrides` can only change keys the base file has).
fn checkpointing_base() -> String {
    let tiny = std::fs::read_to_string("configs/tiny.yaml").unwrap();
    let path = std::env::temp_dir().join(format!("sweep-trainer-base-{}.yaml", std::process::id()));
    std::fs::write(&path, format!("{tiny}\ncheckpoint:\n  every_steps: 10\n")).unwrap();
    path.display().to_string()
}

fn killable_sweep() -> SweepConfig {
    sweep(&format!(
        "
base: {}
base_overrides: [train.eval_every=10, train.devices=1]
space:
  optimizer.learning_rate: [1.0e-3, 1.0e-2]
strategy: grid
objective: {{ steps: 40 }}
",
        checkpointing_base()
    ))
}

#[test]
fn a_killed_sweep_resumes_its_trial_from_a_checkpoint_and_ends_like_an_uninterrupted_one() {
    let sweep = killable_sweep();
    let clean = fresh_dir("clean");
    run_sweep(&sweep, &clean, &mut runner()).unwrap();

    // Killed at the second trial's third evaluation (step 30): its step-20 checkpoint is committed.
    let dir = fresh_dir("killed");
    let mut doomed = Observed::new(Some(4 + 3));
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_sweep(&sweep, &dir, &mut doomed)));
    assert!(crashed.is_err(), "the sweep was killed");
    assert!(dir.get("results.md").unwrap().is_none(), "no report from a killed sweep");
    let stored = SweepState::load(&dir).unwrap().expect("the state survives the kill");
    let statuses: Vec<TrialStatus> = stored.trials.iter().map(|t| t.status).collect();
    assert_eq!(statuses, vec![TrialStatus::Completed, TrialStatus::Running]);
    let killed_id = stored.trials[1].id.clone();
    let killed_run = dir.join(TRIALS_DIR).join(&killed_id);
    let committed = CheckpointManager::open(&killed_run, CheckpointConfig::default().retention()).unwrap().latest_committed().unwrap();
    assert_eq!(committed, Some(20), "the trial will resume from step 20, not from scratch");

    let rerun = Observed::new(None);
    let summary = run_sweep(&sweep, &dir, &mut rerun.clone()).unwrap();
    let ran: Vec<String> = rerun.calls.lock().unwrap().iter().map(|c| c.0.clone()).collect();
    assert_eq!(ran, vec![killed_id.clone()], "only the interrupted trial runs again");
    assert!(summary.trials.iter().all(|t| t.status == TrialStatus::Completed));

    assert_eq!(outputs_without_timing(&dir), outputs_without_timing(&clean));
    let clean_state = SweepState::load(&clean).unwrap().unwrap();
    for (a, b) in summary.trials.iter().zip(&clean_state.trials) {
        assert_eq!(a.history, b.history, "trial {}: the same evaluations, bit for bit", a.id);
    }
    // Its run directory holds one consistent log: evaluations up to the checkpoint kept, the rest redone once.
    assert_eq!(logged_evals(&dir, &killed_id).iter().map(|e| e.0).collect::<Vec<_>>(), vec![10, 20, 30, 40]);
}

// ---------------------------------------------------------------- devices

#[test]
fn trials_side_by_side_on_disjoint_devices_match_trials_one_after_another() {
    let yaml = "
base: configs/tiny.yaml
base_overrides: [train.eval_every=10]
space:
  optimizer.learning_rate: [1.0e-3, 1.0e-2]
strategy: grid
objective: { steps: 20 }
parallelism: { trials_in_parallel: 2, devices_per_trial: 4 }
";
    let sweep = sweep(yaml);
    // One after another, each trial on the devices of the first slot (0..4).
    let sequential = fresh_dir("sequential");
    let one_by_one = Observed::new(None);
    run_sweep(&sweep, &sequential, &mut one_by_one.clone()).unwrap();
    assert!(one_by_one.calls.lock().unwrap().iter().all(|c| c.1 == vec![0, 1, 2, 3]));

    let parallel = fresh_dir("parallel");
    let side_by_side = Observed::new(None);
    let factory = |_slot: usize| -> Result<Box<dyn TrialRunner + Send>> { Ok(Box::new(side_by_side.clone())) };
    let summary = run_sweep_parallel(&sweep, &parallel, &factory).unwrap();
    assert!(summary.trials.iter().all(|t| t.status == TrialStatus::Completed), "{:#?}", summary.trials);
    let mut used: Vec<Vec<usize>> = side_by_side.calls.lock().unwrap().iter().map(|c| c.1.clone()).collect();
    used.sort();
    used.dedup();
    assert_eq!(used, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]], "both halves of the client were used");

    assert_eq!(outputs_without_timing(&parallel), outputs_without_timing(&sequential));
}

fn tiny(overrides: &[&str]) -> TrainConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(std::path::Path::new("configs/tiny.yaml"), &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

#[test]
fn a_trainer_on_chosen_devices_runs_there_and_shares_its_programs_only_with_the_same_devices() {
    let config = tiny(&["train.device_ids=[4, 5, 6, 7]", "optimizer.learning_rate=0.01"]);
    let mut upper = Trainer::new(&client(), config.clone()).unwrap();
    assert_eq!(upper.device_indices(), &[4, 5, 6, 7]);

    // Another learning rate and seed reuse the compiled programs; only the host-side values differ.
    let mut other = config.clone();
    other.optimizer.learning_rate = 0.001;
    let mut shared = Trainer::with_programs(&client(), other, Some(upper.programs())).unwrap();
    assert_eq!(shared.device_indices(), &[4, 5, 6, 7]);
    let (a, b) = (upper.train_step().unwrap(), shared.train_step().unwrap());
    assert_eq!(a.loss, b.loss, "the same weights and batch before any update");
    assert_eq!((a.lr, b.lr), (config.optimizer.schedule.lr(0.01, 0), config.optimizer.schedule.lr(0.001, 0)));
    let (a, b) = (upper.train_step().unwrap(), shared.train_step().unwrap());
    assert!(a.loss != b.loss, "the learning rate took effect: {} vs {}", a.loss, b.loss);

    let err = Trainer::with_programs(&client(), tiny(&["train.devices=4"]), Some(upper.programs())).err().expect("refused").to_string();
    assert!(err.contains("run on devices [4, 5, 6, 7]") && err.contains("trains on [0, 1, 2, 3]"), "{err}");
}

#[test]
fn device_choices_that_cannot_work_are_clear_errors() {
    let err = |overrides: &[&str]| match TrainConfig::load(std::path::Path::new("configs/tiny.yaml"), &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
        Ok((config, _)) => Trainer::new(&client(), config).err().expect("refused").to_string(),
        Err(e) => e.to_string(),
    };
    let twice = err(&["train.device_ids=[1, 1]"]);
    assert!(twice.contains("train.device_ids lists device 1 twice"), "{twice}");
    let disagree = err(&["train.device_ids=[0, 1]", "train.devices=4"]);
    assert!(disagree.contains("train.devices (4) disagrees with train.device_ids (2 devices)"), "{disagree}");
    let missing = err(&["train.device_ids=[6, 8]"]);
    assert!(missing.contains("train.device_ids names device 8") && missing.contains("0..8"), "{missing}");
}

#[test]
fn a_program_compiled_for_chosen_devices_runs_on_them() {
    let g = Graph::new("sum_over_replicas");
    let x = g.param("x", DType::F32, &[2]);
    let total = all_reduce_sum(&x).unwrap();
    let options = ProgramOptions::replicated(2).on_devices(vec![6, 1]);
    let program = Program::compile(&client(), &g, &[&total], &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(program.exe.device_indices(), &[6, 1]);

    let (a, b) = (HostTensor::from_f64(DType::F32, &[2], &[1.0, 2.0]).unwrap(), HostTensor::from_f64(DType::F32, &[2], &[10.0, 20.0]).unwrap());
    let uploaded = program.upload(0, &[&a]).unwrap();
    assert_eq!(uploaded[0].device_id().unwrap(), client().devices()[6].id, "replica 0 lives on device 6");
    let out = program.run_replicated(&[vec![&a], vec![&b]]).unwrap();
    for replica in &out {
        assert_eq!(replica[0].to_f64_vec(), vec![11.0, 22.0]);
    }

    let compile = |devices: Vec<usize>| Program::compile(&client(), &g, &[&total], &ProgramOptions::replicated(2).on_devices(devices)).err().expect("refused").to_string();
    let few = compile(vec![3]);
    assert!(few.contains("2 replica(s) x 1 partition(s) but was given 1 devices"), "{few}");
    let far = compile(vec![0, 9]);
    assert!(far.contains("device index 9 is out of range") && far.contains("has 8 devices"), "{far}");
    let twice = compile(vec![2, 2]);
    assert!(twice.contains("device index 2 is listed twice"), "{twice}");
}

#[test]
fn a_sweep_whose_trials_never_evaluate_is_refused_before_training() {
    let sweep = sweep(
        "
base: configs/tiny.yaml
base_overrides: [train.eval_every=0]
space:
  optimizer.learning_rate: [1.0e-3, 1.0e-2]
strategy: grid
objective: { steps: 20 }
",
    );
    let dir = fresh_dir("no-eval");
    let err = run_sweep(&sweep, &dir, &mut runner()).unwrap_err().to_string();
    assert!(err.contains("trial t000") && err.contains("train.eval_every is 0"), "{err}");
    assert!(dir.get("sweep_state.json").unwrap().is_none(), "nothing started");
}

#[test]
fn a_process_stop_interrupts_a_trial_before_its_next_update() {
    // The process's stop reaches the trial's own stop signal at once, not at
    // its next logged step: a stop already requested ends the trial before
    // any update, with a checkpoint to resume from.
    let stop = dalle_xla::checkpoint::StopSignal::new();
    stop.request(dalle_xla::checkpoint::StopReason::Terminate);
    let mut runner = runner().with_stop_signal(stop);
    let config = serde_yaml::to_value(tiny(&["train.log_every=10", "train.eval_every=10", "train.devices=2"])).unwrap();
    let trial = TrialSpec { id: "t000".into(), overrides: vec![], config, devices: vec![] };
    let dir = fresh_dir("stopped-trial");
    let outcome = runner.run(&trial, &dir, 20, &mut |_, _| Decision::Continue).unwrap();
    match outcome {
        TrialOutcome::Interrupted { steps, .. } => assert_eq!(steps, 0, "the trial trained before it saw the stop"),
        other => panic!("expected an interrupted trial, got {other:?}"),
    }
    let committed = CheckpointManager::open(&dir, CheckpointConfig::default().retention()).unwrap().committed_steps().unwrap();
    assert_eq!(committed, vec![0], "the stopped trial's state is committed");
}
