//! Soak test (not part of the default run; minutes long):
//!
//! ```sh
//! cargo test --test soak -- --ignored --nocapture
//! ```
//!
//! Kills `dalle train` with SIGKILL at 50 seeded random moments, 25 on local
//! disk and 25 on the GCS fake (where every checkpoint upload is slowed, so
//! many kills land inside a save), rerunning after each. Every rerun must take
//! over the dead process's writer lease and resume from the newest committed
//! step; the finished runs' tensors, data position and metrics must equal an
//! uninterrupted run's, and no step directory may be left committed but
//! unreadable. Prints the counts.

mod support;

use dalle_xla::checkpoint::{Checkpoint, CheckpointManager, RetentionPolicy};
use dalle_xla::storage::{self, block_on, Location};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use support::gcs_fake::{Fault, GcsFake, FAKE_SERVICE_ACCOUNT_KEY};
use support::train_process::{train_command, TrainProcess};

const SETS: [&str; 5] = ["model.d_model=64", "train.steps=60", "checkpoint.max_file_mib=1", "checkpoint.every_steps=1", "checkpoint.keep_last=3"];
const LAST_STEP: u64 = 60;
const KILLS_PER_STORE: usize = 25;
const TIMEOUT: Duration = Duration::from_secs(180);

fn scratch(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.to_str().unwrap().to_string()
}

/// Committed and uncommitted step directories of a run.
fn steps(run: &Location) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let prefix = run.child("checkpoints");
    let keys: Vec<String> = block_on(async { run.store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await }).unwrap();
    let (mut committed, mut all) = (BTreeSet::new(), BTreeSet::new());
    for key in keys {
        let rest = key.strip_prefix(&format!("{prefix}/")).unwrap_or(&key);
        let Some((dir, file)) = rest.split_once('/') else { continue };
        if let Some(step) = dir.strip_prefix("step_").and_then(|s| s.parse::<u64>().ok()) {
            all.insert(step);
            if file == "COMMIT" {
                committed.insert(step);
            }
        }
    }
    let uncommitted = all.difference(&committed).copied().collect();
    (committed, uncommitted)
}

fn load(run: &Location, step: u64) -> Checkpoint {
    CheckpointManager::open(run, RetentionPolicy { keep_last: 1000, keep_every: None }).unwrap().restore(step).unwrap_or_else(|e| panic!("step {step} of {}: {e}", run.url))
}

fn metrics(run: &Location) -> Vec<(u64, String)> {
    let text = String::from_utf8(run.get("metrics.jsonl").unwrap().unwrap_or_default()).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), format!("{}", v["loss"]))
        })
        .collect()
}

struct Counts {
    kills: usize,
    inside_saves: usize,
    lease_takeovers: usize,
}

/// Kills and reruns until `kills` kills happened and a rerun finished.
fn soak(command: &dyn Fn() -> std::process::Command, run: &Location, rng: &mut rand::rngs::StdRng, kills: usize) -> Counts {
    let mut counts = Counts { kills: 0, inside_saves: 0, lease_takeovers: 0 };
    for round in 0.. {
        assert!(round < kills * 3 + 5, "the run did not finish after {round} rounds");
        let mut process = TrainProcess::spawn(command());
        let mut killed = false;
        if counts.kills < kills && process.wait_for_line("progress step=", TIMEOUT).is_some() {
            let kind = if rng.gen_bool(0.7) { "handed to the writer" } else { "progress step=" };
            if (0..rng.gen_range(1..4)).all(|_| process.wait_for_line(kind, TIMEOUT).is_some()) {
                process.kill();
                killed = true;
            }
        }
        let (status, log) = process.finish(TIMEOUT);
        if log.iter().any(|l| l.contains("taking over the writer lease")) {
            counts.lease_takeovers += 1;
        }
        if killed && !status.success() {
            counts.kills += 1;
            let (committed, uncommitted) = steps(run);
            if uncommitted.iter().any(|s| Some(s) > committed.last()) {
                counts.inside_saves += 1;
            }
            // Every committed step left behind is readable.
            for step in committed {
                load(run, step);
            }
            continue;
        }
        assert!(status.success(), "round {round} failed: {status}\n{}", log.join("\n"));
        break;
    }
    counts
}

#[test]
#[ignore = "minutes long: cargo test --test soak -- --ignored --nocapture"]
fn sigkill_fifty_times_on_local_disk_and_gcs_ends_like_an_uninterrupted_run() {
    let reference_url = scratch("reference");
    let (status, log) = TrainProcess::spawn(train_command(&reference_url, &SETS)).finish(TIMEOUT);
    assert!(status.success(), "{}", log.join("\n"));
    let reference_run = storage::open(&reference_url).unwrap();
    let reference = load(&reference_run, LAST_STEP);
    let reference_metrics = metrics(&reference_run);
    let mut rng = rand::rngs::StdRng::seed_from_u64(16_2026);

    let local_url = scratch("local");
    let local = storage::open(&local_url).unwrap();
    let local_counts = soak(&|| train_command(&local_url, &SETS), &local, &mut rng, KILLS_PER_STORE);

    let fake = GcsFake::start();
    fake.inject_for_key(1_000_000, Fault::Delay(Duration::from_millis(20)), Some("PUT"), "checkpoints/step_");
    let gcs = fake.open("soak", "run", dalle_xla::storage::RetryPolicy::fast(3));
    let gcs_command = || {
        let mut c = train_command("gs://soak/run", &SETS);
        c.args(["--set", "storage.retry.initial_backoff_secs=0.01", "--set", "storage.retry.max_backoff_secs=0.1"]);
        c.env("GOOGLE_BASE_URL", fake.base_url()).env("GOOGLE_SERVICE_ACCOUNT_KEY", FAKE_SERVICE_ACCOUNT_KEY);
        c
    };
    let gcs_counts = soak(&gcs_command, &gcs, &mut rng, KILLS_PER_STORE);

    for (name, run) in [("local", &local), ("gcs", &gcs)] {
        let finished = load(run, LAST_STEP);
        assert!(finished.tensors == reference.tensors, "{name}: the tensors differ from the uninterrupted run");
        assert_eq!(finished.meta.data_position, reference.meta.data_position, "{name}: data position");
        assert_eq!(finished.meta.samples_seen, reference.meta.samples_seen, "{name}: samples seen");
        // Each step's metrics once, equal to the uninterrupted run's.
        let mut logged = metrics(run);
        logged.dedup_by_key(|(step, _)| *step);
        assert_eq!(logged, reference_metrics, "{name}: metrics");
    }
    for (name, c) in [("local disk", &local_counts), ("GCS fake", &gcs_counts)] {
        println!("{name}: {} SIGKILLs, {} inside a save, {} lease takeovers; resumed to the same tensors, data position and metrics", c.kills, c.inside_saves, c.lease_takeovers);
    }
    assert_eq!(local_counts.kills + gcs_counts.kills, 2 * KILLS_PER_STORE);
    assert!(local_counts.inside_saves + gcs_counts.inside_saves > 0, "no kill landed inside a save");
}
