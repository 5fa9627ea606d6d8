//! Preemption-safe training, end to end through the `dalle train` binary:
//! runs killed at random moments (also in the middle of a save) and rerun end
//! bit-identical to a run that never stopped and only ever resume from a
//! committed step; SIGTERM commits a checkpoint and exits with status 75; a run
//! directory on the loopback GCS fake survives injected faults and an outage;
//! retention and config changes behave as configured; a run stopped on one
//! device mesh resumes on another.

mod support;

use dalle_xla::checkpoint::{Checkpoint, CheckpointManager, RetentionPolicy, EXIT_PREEMPTED};
use dalle_xla::storage::{self, block_on, Location, RetryPolicy};
use dalle_xla::HostTensor;
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::gcs_fake::{Fault, GcsFake, FAKE_SERVICE_ACCOUNT_KEY};
use support::train_process::{train_command, TrainProcess};

/// Settings that decide the trained weights, shared by every run compared to
/// the reference. `d_model=64` and 1 MiB files make a save three tensor files
/// (about 2 MB), so a kill often lands inside one.
const MODEL: [&str; 3] = ["model.d_model=64", "train.steps=30", "checkpoint.max_file_mib=1"];
const LAST_STEP: u64 = 30;

/// Bound on any single `dalle train` process (they take seconds).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

fn with_model(extra: &[&'static str]) -> Vec<&'static str> {
    MODEL.iter().chain(extra).copied().collect()
}

/// A fresh directory for one run.
fn scratch(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("preempt-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    dir.to_str().expect("utf-8 temp path").to_string()
}

/// Step directories of a run: committed ones and ones holding files but no COMMIT.
#[derive(Debug, Default)]
struct StepDirs {
    committed: BTreeSet<u64>,
    uncommitted: BTreeSet<u64>,
}

impl StepDirs {
    fn of(run: &Location) -> StepDirs {
        let prefix = run.child("checkpoints");
        let keys: Vec<String> =
            block_on(async { run.store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await }).expect("list the run");
        let mut files: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for key in keys {
            let rest = key.strip_prefix(&format!("{prefix}/")).unwrap_or(&key);
            let Some((dir, file)) = rest.split_once('/') else { continue };
            if let Some(step) = dir.strip_prefix("step_").and_then(|s| s.parse::<u64>().ok()) {
                files.entry(step).or_default().push(file.to_string());
            }
        }
        let mut dirs = StepDirs::default();
        for (step, names) in files {
            if names.iter().any(|n| n == "COMMIT") {
                dirs.committed.insert(step);
            } else {
                dirs.uncommitted.insert(step);
            }
        }
        dirs
    }

    fn newest_committed(&self) -> Option<u64> {
        self.committed.last().copied()
    }
}

fn local(url: &str) -> Location {
    storage::open(url).expect("open the run directory")
}

fn load(run: &Location, step: u64) -> Checkpoint {
    let manager = CheckpointManager::open(run, RetentionPolicy { keep_last: 1000, keep_every: None }).expect("open the checkpoints");
    manager.restore(step).unwrap_or_else(|e| panic!("restore step {step} of {}: {e}", run.url))
}

/// The step a run's log says it resumed from; `None` for a fresh start.
fn resumed_from(log: &[String]) -> Option<u64> {
    if log.iter().any(|l| l.contains("starting a new run")) {
        return None;
    }
    let line = log.iter().find(|l| l.contains("resuming") && l.contains(" from step ")).unwrap_or_else(|| panic!("no resume line in:\n{}", log.join("\n")));
    let number = line.rsplit(" from step ").next().and_then(|s| s.split_whitespace().next()).expect("a step number");
    Some(number.parse().unwrap_or_else(|_| panic!("bad step in '{line}'")))
}

/// Checks that a run started from the newest step that was committed before it
/// started (never from a newer, uncommitted one); returns how many uncommitted
/// newer steps it had to pass over.
fn assert_resumed_from_newest_commit(before: &StepDirs, log: &[String]) -> usize {
    let resumed = resumed_from(log);
    assert_eq!(resumed, before.newest_committed(), "the run must resume from the newest committed step; step dirs before it started: {before:?}");
    let newer_uncommitted = before.uncommitted.iter().filter(|s| Some(**s) > resumed).count();
    if let Some(step) = resumed {
        assert!(before.committed.contains(&step), "resumed from step {step}, which had no COMMIT: {before:?}");
    }
    newer_uncommitted
}

fn tensors_of(checkpoint: &Checkpoint) -> &[(String, HostTensor)] {
    &checkpoint.tensors
}

/// The final checkpoint of an uninterrupted run with [`MODEL`] settings.
fn reference() -> &'static Checkpoint {
    static REFERENCE: OnceLock<Checkpoint> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let url = scratch("reference");
        let (status, log) = TrainProcess::spawn(train_command(&url, &MODEL)).finish(PROCESS_TIMEOUT);
        assert!(status.success(), "the reference run failed: {status}\n{}", log.join("\n"));
        load(&local(&url), LAST_STEP)
    })
}

fn assert_matches_reference(run: &Location) {
    let finished = load(run, LAST_STEP);
    let reference = reference();
    assert_eq!(finished.tensors.len(), reference.tensors.len());
    for ((name, got), (want_name, want)) in tensors_of(&finished).iter().zip(tensors_of(reference)) {
        assert_eq!(name, want_name);
        assert!(got == want, "tensor '{name}' of {} differs from the uninterrupted run", run.url);
    }
    assert_eq!(finished.meta.samples_seen, reference.meta.samples_seen);
    assert_eq!(finished.meta.data_position, reference.meta.data_position, "the data position must match too");
}

fn gcs_command(fake: &GcsFake, url: &str, sets: &[&str]) -> std::process::Command {
    let fast_retries = ["storage.retry.initial_backoff_secs=0.01", "storage.retry.max_backoff_secs=0.1"];
    let sets: Vec<&str> = sets.iter().copied().chain(fast_retries).collect();
    let mut command = train_command(url, &sets);
    command.env("GOOGLE_BASE_URL", fake.base_url()).env("GOOGLE_SERVICE_ACCOUNT_KEY", FAKE_SERVICE_ACCOUNT_KEY);
    command
}

/// Runs to the end and returns the log; the run must succeed.
fn run_to_end(command: std::process::Command) -> Vec<String> {
    let (status, log) = TrainProcess::spawn(command).finish(PROCESS_TIMEOUT);
    assert!(status.success(), "dalle train failed with {status}:\n{}", log.join("\n"));
    log
}

#[test]
fn sigkill_at_random_moments_then_rerunning_ends_bit_identical() {
    // On the GCS fake with every checkpoint upload slowed down, a save takes
    // longer than an update, so the writer is nearly always inside one.
    let fake = GcsFake::start();
    fake.inject_for_key(100_000, Fault::Delay(Duration::from_millis(25)), Some("PUT"), "checkpoints/step_");
    let url = "gs://preempt/sigkill";
    let run = fake.open("preempt", "sigkill", RetryPolicy::fast(3));
    let sets = with_model(&["checkpoint.every_steps=1"]);
    // A kill comes right after the k-th progress or hand-off log line once
    // training is under way; kind and k come from a seeded RNG.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20240604);
    let (mut kills, mut passed_over, mut left_partial) = (0, 0, 0);
    for round in 0.. {
        assert!(round < 12, "the run did not finish after {round} rounds");
        // A COMMIT the killed process sent whole lands once its delay is
        // over: list the bucket only after that.
        fake.wait_idle();
        let before = StepDirs::of(&run);
        let mut process = TrainProcess::spawn(gcs_command(&fake, url, &sets));
        let mut killed = false;
        if kills < 3 && process.wait_for_line("progress step=", PROCESS_TIMEOUT).is_some() {
            let kind = if rng.gen_bool(0.75) { "handed to the writer" } else { "progress step=" };
            let count = rng.gen_range(1..8);
            if (0..count).all(|_| process.wait_for_line(kind, PROCESS_TIMEOUT).is_some()) {
                process.kill();
                killed = true;
            }
        }
        let (status, log) = process.finish(PROCESS_TIMEOUT);
        passed_over += assert_resumed_from_newest_commit(&before, &log);
        if killed && !status.success() {
            kills += 1;
            fake.wait_idle();
            let after = StepDirs::of(&run);
            if after.uncommitted.iter().any(|s| Some(*s) > after.newest_committed()) {
                left_partial += 1;
            }
            continue;
        }
        assert!(status.success(), "the last round failed: {status}\n{}", log.join("\n"));
        break;
    }
    eprintln!("{kills} kills, {left_partial} of them during a save; resumes passed over {passed_over} uncommitted newer step(s)");
    assert_eq!(kills, 3, "every kill landed before the run finished");
    assert!(left_partial >= 1, "no kill landed inside a save");
    assert_matches_reference(&run);
}

#[test]
fn sigkill_in_the_middle_of_a_save_on_gcs_resumes_from_the_previous_commit() {
    let fake = GcsFake::start();
    let url = "gs://preempt/killed-mid-save";
    let run = fake.open("preempt", "killed-mid-save", RetryPolicy::fast(3));
    let sets = with_model(&["checkpoint.every_steps=1"]);
    let mut process = TrainProcess::spawn(gcs_command(&fake, url, &sets));
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let wait = |what: &str, done: &dyn Fn() -> bool, process: &mut TrainProcess| {
        while !done() {
            assert!(Instant::now() < deadline && process.is_running(), "training ended before {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Once a step is committed, hold the second tensor file of the next save
    // that reaches it, so the process is surely inside that save when killed.
    wait("a step was committed", &|| fake.keys("preempt").iter().any(|k| k.ends_with("/COMMIT")), &mut process);
    let seen = fake.arrivals().len();
    fake.inject_for_key(1, Fault::Delay(Duration::from_secs(2)), Some("PUT"), "/tensors-00001");
    let held = || fake.arrivals()[seen..].iter().find(|(m, k)| m == "PUT" && k.contains("/tensors-00001")).map(|(_, k)| k.clone());
    wait("a save reached its second file", &|| held().is_some(), &mut process);
    process.kill();
    let (status, _) = process.finish(PROCESS_TIMEOUT);
    assert!(!status.success(), "the process was killed");

    let key = held().expect("seen above");
    let step: u64 = key.split("step_").nth(1).and_then(|s| s.split('/').next()).and_then(|s| s.parse().ok()).expect("a step directory");
    let before = StepDirs::of(&run);
    assert!(before.uncommitted.contains(&step), "step {step} is half written: {before:?}");
    assert!(before.newest_committed().is_some_and(|s| s < step), "{before:?}");
    let log = run_to_end(gcs_command(&fake, url, &sets));
    assert!(assert_resumed_from_newest_commit(&before, &log) >= 1, "the half-written step {step} was passed over");
    assert_matches_reference(&run);
    assert_eq!(fake.open_uploads(), 0);
}

#[test]
fn sigterm_commits_a_checkpoint_and_exits_75_then_the_rerun_resumes_from_it() {
    let url = scratch("sigterm");
    let run = local(&url);
    // Saves every 7 steps, so the checkpoint found after the stop is the stop's own.
    let sets = with_model(&["checkpoint.every_steps=7"]);
    let mut process = TrainProcess::spawn(train_command(&url, &sets));
    process.wait_for_line("progress step=4 ", PROCESS_TIMEOUT).expect("training reaches step 4");
    process.terminate();
    let (status, log) = process.finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(EXIT_PREEMPTED), "log:\n{}", log.join("\n"));
    let line = log.iter().find(|l| l.starts_with("stopped at step ")).unwrap_or_else(|| panic!("no stop message:\n{}", log.join("\n")));
    let stopped: u64 = line["stopped at step ".len()..].split_whitespace().next().and_then(|s| s.parse().ok()).expect("a step number");
    assert!((4..LAST_STEP).contains(&stopped), "{line}");

    let dirs = StepDirs::of(&run);
    let newest = dirs.committed.iter().chain(&dirs.uncommitted).max().copied();
    assert_eq!(newest, Some(stopped), "the newest step dir is the stop's checkpoint: {dirs:?}");
    assert!(dirs.committed.contains(&stopped), "and it is committed: {dirs:?}");

    let log = run_to_end(train_command(&url, &sets));
    assert_eq!(resumed_from(&log), Some(stopped));
    assert_matches_reference(&run);
}

#[test]
fn a_run_stopped_on_one_mesh_resumes_on_another() {
    // 63 image codes: the image embedding's and lm_head's 64 rows split over a
    // model axis of 2. Ten steps, saved after each.
    let on = |mesh: &'static str| with_model(&["model.image_vocab_size=63", "train.steps=10", "checkpoint.every_steps=1", "checkpoint.keep_last=100", mesh]);
    let (data_axis, model_axis) = ("train.mesh={data: 2, model: 1}", "train.mesh={data: 1, model: 2}");
    let reference_url = scratch("mesh-reference");
    run_to_end(train_command(&reference_url, &on(data_axis)));
    let reference = local(&reference_url);

    let url = scratch("mesh-move");
    let run = local(&url);
    let mut process = TrainProcess::spawn(train_command(&url, &on(data_axis)));
    process.wait_for_line("progress step=4 ", PROCESS_TIMEOUT).expect("training reaches step 4");
    process.terminate();
    let (status, log) = process.finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(EXIT_PREEMPTED), "log:\n{}", log.join("\n"));
    let stopped = StepDirs::of(&run).newest_committed().expect("the stop committed a checkpoint");
    assert!((4..10).contains(&stopped), "stopped at step {stopped}");
    let (at_stop, want) = (load(&run, stopped), load(&reference, stopped));
    for ((name, got), (_, want)) in at_stop.tensors.iter().zip(&want.tensors) {
        assert!(got == want, "up to the stop the run is the reference's, bit for bit: '{name}' differs at step {stopped}");
    }

    let log = run_to_end(train_command(&url, &on(model_axis)));
    assert_eq!(resumed_from(&log), Some(stopped));
    let change = log.iter().find(|l| l.contains("resuming with config changes")).unwrap_or_else(|| panic!("no change logged:\n{}", log.join("\n")));
    assert!(change.contains("train.mesh"), "{change}");
    // The steps after the move split the contractions over the model axis,
    // so they sum in another order: the same training, within float rounding.
    let (moved, want) = (load(&run, 10), load(&reference, 10));
    assert_eq!(moved.tensors.len(), want.tensors.len());
    for ((name, got), (want_name, want)) in moved.tensors.iter().zip(&want.tensors) {
        assert_eq!((name, &got.dtype, &got.shape), (want_name, &want.dtype, &want.shape), "the checkpoint's layout does not depend on the mesh");
        let worst = got.to_f64_vec().iter().zip(want.to_f64_vec()).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0, f64::max);
        assert!(worst <= 1e-5, "'{name}' after {} steps on the other mesh differs by {worst:e}", 10 - stopped);
    }
    assert_eq!((moved.meta.samples_seen, &moved.meta.data_position), (want.meta.samples_seen, &want.meta.data_position));
}

#[test]
fn a_gcs_run_directory_rides_out_injected_faults() {
    let fake = GcsFake::start();
    let url = "gs://preempt/faults";
    fake.inject(1, Fault::Status(503), Some("GET"));
    // Saves 10 steps apart, so none is superseded by the next while it retries.
    fake.inject_for_key(2, Fault::Status(503), Some("PUT"), "checkpoints/step_10/tensors");
    fake.inject_for_key(1, Fault::Drop, Some("PUT"), "checkpoints/step_20/metadata.json");
    fake.inject_for_key(3, Fault::Delay(Duration::from_millis(300)), Some("PUT"), "checkpoints/step_30/");
    fake.inject_for_key(1, Fault::Status(500), Some("PUT"), "checkpoints/step_30/COMMIT");
    let log = run_to_end(gcs_command(&fake, url, &with_model(&["checkpoint.every_steps=10"])));
    assert!(!log.iter().any(|l| l.contains("was not saved")), "every save got through:\n{}", log.join("\n"));

    let statuses: Vec<u16> = fake.log().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3, "both 503 faults were served");
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 0).count(), 1, "the dropped connection happened");
    let run = fake.open("preempt", "faults", RetryPolicy::fast(3));
    let dirs = StepDirs::of(&run);
    assert_eq!(dirs.committed, BTreeSet::from([10, 20, 30]));
    assert!(dirs.uncommitted.is_empty(), "{dirs:?}");
    assert_eq!(fake.open_uploads(), 0);
    assert_matches_reference(&run);
}

#[test]
fn a_storage_outage_during_a_save_is_logged_and_training_goes_on() {
    let fake = GcsFake::start();
    let url = "gs://preempt/outage";
    // Every request for step 10 fails, as do the first three metrics writes
    // (two attempts each). Saves 10 steps apart and quick retries, so the
    // failing save is over long before the next trigger.
    fake.inject_for_key(100_000, Fault::Status(503), None, "checkpoints/step_10/");
    fake.inject_for_key(6, Fault::Status(503), Some("PUT"), "metrics.jsonl");
    let sets = with_model(&["checkpoint.every_steps=10", "storage.retry.max_retries=1"]);
    let log = run_to_end(gcs_command(&fake, url, &sets));
    let has = |text: &str| log.iter().any(|l| l.contains(text));
    assert!(has("checkpoint step 10 was not saved"), "the failed save is logged:\n{}", log.join("\n"));
    assert!(has("checkpoint step 20 committed"), "the next trigger saves");
    assert!(has("could not write the metrics of step 3 ") && !has("could not write the metrics of step 4 "), "three metrics writes failed");
    assert!(has("could not write the metrics of step 1 "), "the failed metrics write is logged");

    let run = fake.open("preempt", "outage", RetryPolicy::fast(3));
    let dirs = StepDirs::of(&run);
    assert_eq!(dirs.committed, BTreeSet::from([20, 30]));
    assert!(!dirs.uncommitted.contains(&10), "{dirs:?}");
    let metrics = String::from_utf8(run.get("metrics.jsonl").expect("read metrics").expect("metrics written")).expect("utf-8");
    let steps: Vec<u64> =
        metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["step"].as_u64().expect("a step")).collect();
    assert_eq!(steps, (1..=LAST_STEP).collect::<Vec<_>>(), "no metrics record was lost to the outage");
    assert_matches_reference(&run);
}

#[test]
fn retention_through_the_cli_keeps_the_last_two_and_every_tenth() {
    let url = scratch("retention");
    let sets = ["train.steps=30", "checkpoint.every_steps=5", "checkpoint.keep_last=2", "checkpoint.keep_every=10"];
    run_to_end(train_command(&url, &sets));
    let dirs = StepDirs::of(&local(&url));
    assert_eq!(dirs.committed, BTreeSet::from([10, 20, 25, 30]));
    assert!(dirs.uncommitted.is_empty(), "{dirs:?}");
}

#[test]
fn a_shape_changing_config_is_refused_and_a_learning_rate_change_is_accepted() {
    let url = scratch("config-change");
    run_to_end(train_command(&url, &["train.steps=4", "checkpoint.every_steps=2"]));

    let (status, log) = TrainProcess::spawn(train_command(&url, &["train.steps=6", "model.d_model=64"])).finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(1), "refused:\n{}", log.join("\n"));
    let error = log.iter().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error message:\n{}", log.join("\n")));
    assert!(error.contains("cannot resume") && error.contains("tensor '"), "the message names the tensor: {error}");
    assert!(error.contains("[64]") || error.contains("64]"), "and the new shape: {error}");
    assert_eq!(StepDirs::of(&local(&url)).committed, BTreeSet::from([2, 4]), "the refused run wrote nothing");

    let log = run_to_end(train_command(&url, &["train.steps=6", "checkpoint.every_steps=2", "optimizer.learning_rate=0.001"]));
    assert_eq!(resumed_from(&log), Some(4));
    let change = log.iter().find(|l| l.contains("resuming with config changes")).unwrap_or_else(|| panic!("no change logged:\n{}", log.join("\n")));
    assert!(change.contains("optimizer.learning_rate"), "{change}");
    assert_eq!(StepDirs::of(&local(&url)).newest_committed(), Some(6));
}

#[test]
fn a_malformed_gcs_endpoint_variable_is_named_before_compiling() {
    let mut command = train_command("gs://preempt/bad-endpoint", &[]);
    command.env("GOOGLE_BASE_URL", "storage.example.com");
    let (status, log) = TrainProcess::spawn(command).finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert!(log.iter().any(|l| l.contains("GOOGLE_BASE_URL") && l.contains("storage.example.com")), "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("compiled the training programs")), "fails before compiling");
}
