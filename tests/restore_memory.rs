//! A restore uploads straight from the checkpoint it read, and a resume
//! streams the checkpoint into the devices file by file: the host never holds
//! further copies of the whole state (for mega with Shampoo, 80 GiB of whole
//! tensors), and the devices never hold two states. Its own test binary,
//! because it measures the peaks of the whole process's heap and memory.
mod common;
use common::*;
use dalle_xla::checkpoint::{CheckpointManager, RetentionPolicy};
use dalle_xla::host::heap;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::storage::{self, StorageOptions};
use dalle_xla::train::{RunDir, Trainable};
use std::sync::Mutex;

const MIB: f64 = (1 << 20) as f64;

/// The tests measure the process's peaks, so they take turns.
static ALONE: Mutex<()> = Mutex::new(());

/// About 50 MiB of parameters and AdamW state on one device.
fn config(extra: &[&str]) -> TrainConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let overrides: Vec<String> = ["train.devices=1", "train.eval_every=0", "model.d_model=256", "model.encoder_ffn_dim=1024", "model.decoder_ffn_dim=1024"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

/// Resident memory of this process (`VmRSS`) or its peak since the last
/// [`reset_resident_peak`] (`VmHWM`), in bytes.
fn resident(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect(field);
    kib * 1024.0
}

fn reset_resident_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM through /proc/self/clear_refs");
}

#[test]
fn resuming_streams_the_checkpoint_and_never_holds_two_states_on_the_devices() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    // Files of 1 MiB: the stream holds a few of them at a time.
    let config = config(&["checkpoint.max_file_mib=1"]);
    let url = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("streamed-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&url);
    let url = url.to_str().unwrap().to_string();
    let mut trainer = Trainer::new(&client(), config.clone()).unwrap();
    trainer.train_step().unwrap();
    let manager = CheckpointManager::open_with(&storage::open(&url).unwrap(), RetentionPolicy::default(), config.checkpoint.write_options(Default::default())).unwrap();
    manager.save(trainer.snapshot().unwrap().to_checkpoint()).unwrap();
    manager.wait().unwrap();
    drop(manager);
    let want = trainer.values().unwrap();
    let state: usize = want.iter().map(|(_, t)| t.data.len()).sum();
    drop(trainer);

    // A new process's trainer holds fresh weights on its devices when it resumes.
    let mut resumed = Trainer::new(&client(), config.clone()).unwrap();
    let storage_options = StorageOptions::default();
    let lease = RunDir::lease(&url, &storage_options).unwrap();
    let resident_before = resident("VmRSS:");
    reset_resident_peak();
    let heap_before = heap::reset_peak();
    let run = RunDir::resume(&mut resumed, &url, &storage_options, "config: test", &config.checkpoint, lease).unwrap();
    let heap_extra = (heap::peak() - heap_before) as f64;
    let resident_extra = resident("VmHWM:") - resident_before;
    drop(run);
    // Streamed: a few 1 MiB files and tensors at a time (13 MiB measured); read
    // whole first, the checkpoint alone would add the state's 55 MiB.
    assert!(heap_extra < 0.35 * state as f64, "resuming {:.1} MiB of state held {:.1} MiB more heap at its peak", state as f64 / MIB, heap_extra / MIB);
    // The plugin's device buffers are host memory here: the fresh weights
    // leave before the restored ones arrive, or the peak would rise by the
    // whole state.
    assert!(
        resident_extra < 0.5 * state as f64,
        "resuming {:.1} MiB of state raised the resident peak by {:.1} MiB",
        state as f64 / MIB,
        resident_extra / MIB
    );
    assert_eq!(resumed.step, 1);
    assert!(resumed.values().unwrap() == want, "the resumed state is the saved one, bit for bit");
}

#[test]
fn restoring_holds_no_extra_copies_of_the_checkpoint() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let config = config(&[]);
    let mut trainer = Trainer::new(&client(), config.clone()).unwrap();
    trainer.train_step().unwrap();
    let checkpoint = trainer.snapshot().unwrap().to_checkpoint();
    drop(trainer);
    let state: usize = checkpoint.tensors.iter().map(|(_, t)| t.data.len()).sum();
    assert!(state as f64 > 40.0 * MIB, "the state is {:.1} MiB", state as f64 / MIB);
    let mut trainer = Trainer::new(&client(), config).unwrap();

    let before = heap::reset_peak();
    trainer.restore(&checkpoint).unwrap();
    let extra = heap::peak() - before;
    // The device buffers are the plugin's, not on this heap; each copy of the
    // checkpoint our code makes on the way is (0.04 MiB measured; one copy
    // of this 55 MiB state adds 55 MiB).
    assert!(
        (extra as f64) < 0.1 * state as f64,
        "restoring {:.1} MiB of state held {:.1} MiB more at its peak",
        state as f64 / MIB,
        extra as f64 / MIB
    );
    assert_eq!(trainer.values().unwrap().into_iter().map(|(_, t)| t).collect::<Vec<_>>(), checkpoint.tensors.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());
}
