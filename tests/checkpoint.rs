//! Checkpoints end to end: round trips on local disk, memory and the GCS fake,
//! commit semantics, corruption fallback, fault tolerance, ranged reads,
//! retention, the compatibility check, and the stop signal's sources.

mod support;

use dalle_xla::checkpoint::{
    changed_config_keys, check_compatible, Checkpoint, CheckpointError, CheckpointManager, CheckpointMeta, MetadataWatcher,
    MetadataWatcherConfig, RetentionPolicy, Snapshot, StopReason, StopSignal, WriteOptions, EXIT_PREEMPTED,
};
use dalle_xla::host::BlockedTensor;
use dalle_xla::graph::TensorType;
use dalle_xla::storage::{self, block_on, Location, RetryPolicy};
use dalle_xla::{DType, HostTensor};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::gcs_fake::{Fault, GcsFake};

const CONFIG: &str = "model: {d_model: 8}\noptimizer: {lr: 0.001}\n";

/// Tensors of every dtype (scalar and empty ones included), with values from `seed`.
fn tensors(seed: u64) -> Vec<(String, HostTensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes: [&[i64]; 5] = [&[3, 5], &[7], &[], &[2, 0], &[4, 2, 3]];
    let mut out = Vec::new();
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        let shape = shapes[i % shapes.len()];
        let n: i64 = shape.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|_| match dtype {
                DType::Bool => f64::from(rng.gen_range(0..2)),
                d if d.is_float() => rng.gen_range(-4.0..4.0),
                d if d.is_unsigned() => f64::from(rng.gen_range(0..200)),
                _ => f64::from(rng.gen_range(-100..100)),
            })
            .collect();
        let t = HostTensor::from_f64(dtype, shape, &values).unwrap();
        let name = format!("model.layers.FlaxBartEncoderLayer_{i}.{}.kernel", dtype.name());
        out.push((name.clone(), t.clone()));
        if dtype == DType::F32 {
            out.push((format!("{name}/mu"), t));
        }
    }
    out
}

fn checkpoint(step: u64, seed: u64) -> Checkpoint {
    Checkpoint {
        step,
        tensors: tensors(seed),
        meta: CheckpointMeta {
            samples_seen: step * 16,
            data_position: serde_json::json!({"epoch": 1, "index": step * 16, "order_seed": 7}),
            rng: serde_json::json!({"seed": 42, "counter": step}),
            config_yaml: CONFIG.into(),
            wall_secs: step as f64 * 0.5,
        },
    }
}

/// Tiny files and parts so every checkpoint spans several files and the
/// bigger ones go up as multipart uploads.
fn small_files() -> WriteOptions {
    WriteOptions { max_file_bytes: 64, part_bytes: 96, retry: RetryPolicy::fast(4) }
}

fn keep_all() -> RetentionPolicy {
    RetentionPolicy { keep_last: 100, keep_every: None }
}

fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn local_run(name: &str) -> Location {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(name));
    storage::open(dir.to_str().unwrap()).unwrap()
}

fn memory_run(name: &str) -> Location {
    storage::open(&format!("memory://{}/run", unique(name))).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn save_and_wait(manager: &CheckpointManager, ckpt: Checkpoint) -> dalle_xla::checkpoint::SaveReport {
    manager.save(ckpt).unwrap();
    manager.wait().unwrap().expect("a save was made")
}

fn object_names(run: &Location) -> Vec<String> {
    let prefix = run.prefix.clone();
    let mut names: Vec<String> = block_on(async {
        use futures::TryStreamExt;
        run.store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await.unwrap()
    });
    let strip = if prefix.as_ref().is_empty() { String::new() } else { format!("{prefix}/") };
    names.iter_mut().for_each(|n| *n = n.strip_prefix(&strip).unwrap_or(n).to_string());
    names.sort();
    names
}

fn round_trip(run: &Location) {
    let manager = CheckpointManager::open_with(run, keep_all(), small_files()).unwrap();
    assert_eq!(manager.latest_committed().unwrap(), None);
    assert!(manager.restore_latest().unwrap().is_none(), "a fresh run has nothing to restore");
    let original = checkpoint(120, 1);
    let report = save_and_wait(&manager, original.clone());
    assert_eq!(report.step, 120);
    assert!(report.files >= 3, "64-byte files should split this checkpoint, got {} file(s)", report.files);
    assert_eq!(manager.latest_committed().unwrap(), Some(120));
    assert_eq!(manager.restore(120).unwrap(), original);
    assert_eq!(manager.restore_latest().unwrap(), Some(original.clone()));

    let manifest = manager.manifest(120).unwrap();
    assert_eq!(manifest.config_sha256, sha256_hex(CONFIG.as_bytes()));
    assert!(manifest.code_version.starts_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(manifest.files.len(), report.files);
    let names: Vec<&str> = manifest.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = original.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want, "the manifest keeps the trainer's order");

    let objects = object_names(run);
    let step_files: Vec<&String> = objects.iter().filter(|n| n.starts_with("checkpoints/step_120/")).collect();
    assert_eq!(step_files.len(), report.files + 2, "{objects:?}");
    assert!(objects.contains(&"checkpoints/step_120/COMMIT".to_string()));
    assert!(objects.contains(&"checkpoints/step_120/metadata.json".to_string()));
}

/// `t` as the blocks of its last axis cut in two (whole when it cannot be),
/// as two devices of a mesh would hold it.
fn column_blocks(t: &HostTensor) -> BlockedTensor {
    let Some(&cols) = t.shape.last() else { return BlockedTensor::whole(t.clone()) };
    if cols < 2 || t.numel() == 0 {
        return BlockedTensor::whole(t.clone());
    }
    let elem = t.dtype.size_in_bytes();
    let rows = t.numel() / cols as usize;
    let left = cols / 2;
    let block = |from: i64, width: i64| {
        let mut shape = t.shape.clone();
        *shape.last_mut().unwrap() = width;
        let mut data = Vec::new();
        for r in 0..rows {
            let start = (r * cols as usize + from as usize) * elem;
            data.extend_from_slice(&t.data[start..start + width as usize * elem]);
        }
        let mut at = vec![0; t.shape.len()];
        *at.last_mut().unwrap() = from;
        (at, HostTensor { dtype: t.dtype, shape, data })
    };
    BlockedTensor::from_blocks(t.dtype, &t.shape, vec![block(left, cols - left), block(0, left)]).unwrap()
}

#[test]
fn a_checkpoint_written_from_device_shards_is_the_one_written_whole() {
    let whole = checkpoint(30, 5);
    let sharded = Snapshot {
        step: whole.step,
        tensors: whole.tensors.iter().map(|(n, t)| (n.clone(), column_blocks(t))).collect(),
        meta: whole.meta.clone(),
    };
    assert!(sharded.tensors.iter().filter(|(_, t)| format!("{t:?}").contains("2 block(s)")).count() >= 5, "most tensors are cut");
    let fake = GcsFake::start();
    for (label, options) in [("small files, multipart", small_files()), ("one file", WriteOptions { retry: RetryPolicy::fast(4), ..WriteOptions::default() })] {
        let (a, b) = (fake.open("bucket", &unique("whole"), RetryPolicy::fast(4)), fake.open("bucket", &unique("sharded"), RetryPolicy::fast(4)));
        let (ma, mb) = (CheckpointManager::open_with(&a, keep_all(), options.clone()).unwrap(), CheckpointManager::open_with(&b, keep_all(), options).unwrap());
        save_and_wait(&ma, whole.clone());
        mb.save(sharded.clone()).unwrap();
        mb.wait().unwrap().expect("saved");
        // The same files, byte for byte (their hashes and sizes are in the manifest).
        assert_eq!(ma.manifest(30).unwrap().files, mb.manifest(30).unwrap().files, "{label}");
        assert_eq!(mb.restore(30).unwrap(), whole, "{label}");
    }
}

#[test]
fn round_trip_on_local_disk() {
    round_trip(&local_run("roundtrip"));
}

#[test]
fn round_trip_in_memory() {
    round_trip(&memory_run("roundtrip"));
}

#[test]
fn round_trip_on_the_gcs_fake_commits_last_and_create_only() {
    let fake = GcsFake::start();
    round_trip(&fake.open("bucket", "runs/rt", RetryPolicy::fast(2)));
    let writes: Vec<_> = fake.log().into_iter().filter(|l| l.method == "PUT" || l.method == "POST").collect();
    let last = writes.last().unwrap();
    assert_eq!(last.key, "runs/rt/checkpoints/step_120/COMMIT");
    assert_eq!(last.if_generation_match.as_deref(), Some("0"), "COMMIT is written create-only");
    assert!(writes.iter().any(|l| l.query.iter().any(|(k, _)| k == "partNumber")), "large files go up in parts");
    assert_eq!(fake.open_uploads(), 0);
    let initiated = fake.log().iter().filter(|l| l.query.iter().any(|(k, _)| k == "uploads")).count();
    assert_eq!(initiated, 4, "three tensor files and metadata.json, each started once");
}

#[test]
fn a_step_without_commit_is_never_loaded() {
    let run = memory_run("uncommitted");
    let manager = CheckpointManager::open_with(&run, keep_all(), small_files()).unwrap();
    save_and_wait(&manager, checkpoint(10, 1));
    // A later save that died before its COMMIT: all files there, no marker.
    save_and_wait(&manager, checkpoint(20, 2));
    block_on(run.store.delete(&run.child("checkpoints/step_20/COMMIT"))).unwrap();
    assert_eq!(manager.committed_steps().unwrap(), vec![10]);
    assert_eq!(manager.restore_latest().unwrap().unwrap().step, 10);
    let err = manager.restore(20).unwrap_err().to_string();
    assert!(err.contains("step 20") && err.contains("COMMIT is missing"), "{err}");
}

#[test]
fn a_corrupt_committed_step_falls_back_to_the_previous_one() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/corrupt", RetryPolicy::fast(1));
    let manager = CheckpointManager::open_with(&run, keep_all(), small_files()).unwrap();
    let good = checkpoint(10, 1);
    save_and_wait(&manager, good.clone());
    save_and_wait(&manager, checkpoint(20, 2));
    let victim = manager.manifest(20).unwrap().files[1].name.clone();
    let key = format!("runs/corrupt/checkpoints/step_20/{victim}");
    let mut bytes = fake.object("bucket", &key).unwrap().data;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fake.put_object("bucket", &key, bytes);

    let report = manager.restore_latest_report().unwrap();
    assert_eq!(report.checkpoint, Some(good));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].step, 20);
    assert!(report.skipped[0].reason.contains(&victim) && report.skipped[0].reason.contains("SHA-256"), "{}", report.skipped[0].reason);

    // Tampering with metadata.json breaks the hash recorded in COMMIT.
    let meta_key = "runs/corrupt/checkpoints/step_10/metadata.json";
    let mut meta = fake.object("bucket", meta_key).unwrap().data;
    meta.extend_from_slice(b" ");
    fake.put_object("bucket", meta_key, meta);
    let err = manager.restore_latest().unwrap_err().to_string();
    assert!(err.contains("2 committed checkpoint(s) and none is usable") && err.contains("metadata.json has SHA-256"), "{err}");
}

/// [`checkpoint`] with two 5 KiB tensors, each a file of its own that a
/// restore reads in 21 ranges of 256 bytes.
fn with_big_tensors(step: u64, seed: u64) -> (Checkpoint, WriteOptions) {
    let mut ckpt = checkpoint(step, seed);
    let values: Vec<f64> = (0..1280).map(|i| (i as f64 * 0.37 + seed as f64).sin()).collect();
    let big = HostTensor::from_f64(DType::F32, &[32, 40], &values).unwrap();
    ckpt.tensors.push(("model.big.kernel".into(), big.clone()));
    ckpt.tensors.push(("model.big.kernel/mu".into(), big));
    (ckpt, WriteOptions { max_file_bytes: 4096, part_bytes: 256, retry: RetryPolicy::fast(2) })
}

#[test]
fn a_restore_reads_its_files_in_ranges_several_at_a_time() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/ranges", RetryPolicy::fast(2));
    let (original, options) = with_big_tensors(40, 1);
    let manager = CheckpointManager::open_with(&run, keep_all(), options).unwrap();
    save_and_wait(&manager, original.clone());
    fake.clear_log();
    // Every read of the step waits, so requests overlap whenever the reader lets them.
    fake.inject_for_key(1000, Fault::Delay(Duration::from_millis(20)), Some("GET"), "checkpoints/step_40/");
    fake.take_peak_in_flight();
    assert_eq!(manager.restore(40).unwrap(), original);
    let peak = fake.take_peak_in_flight();
    let manifest = manager.manifest(40).unwrap();
    let big_file = &manifest.tensors.iter().find(|t| t.name == "model.big.kernel").unwrap().file;
    let reads_of_big_file = fake.log().iter().filter(|l| l.method == "GET" && l.key.ends_with(big_file.as_str())).count();
    assert_eq!(reads_of_big_file, 21, "a file of {} bytes is read in ranges of 256", manifest.files.iter().find(|f| &f.name == big_file).unwrap().bytes);
    assert!((2..=8).contains(&peak), "{peak} requests at once: several, and never more than 8");
}

#[test]
fn a_file_of_another_size_than_its_manifest_says_makes_the_step_corrupt() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/sizes", RetryPolicy::fast(1));
    let (good, options) = with_big_tensors(10, 1);
    let manager = CheckpointManager::open_with(&run, keep_all(), options).unwrap();
    save_and_wait(&manager, good.clone());
    save_and_wait(&manager, with_big_tensors(20, 2).0);
    let manifest = manager.manifest(20).unwrap();
    let victim = manifest.files.iter().max_by_key(|f| f.bytes).unwrap();
    let key = format!("runs/sizes/checkpoints/step_20/{}", victim.name);
    let original = fake.object("bucket", &key).unwrap().data;
    let size = original.len();
    let edits: [(&str, Vec<u8>); 3] =
        [("cut short", original[..size / 2].to_vec()), ("emptied", Vec::new()), ("grown", [original.as_slice(), b"x"].concat())];
    for (what, data) in edits {
        let now = data.len();
        fake.put_object("bucket", &key, data);
        let report = manager.restore_latest_report().unwrap();
        assert_eq!(report.checkpoint.as_ref(), Some(&good), "{what}: falls back to step 10");
        let reason = &report.skipped.first().unwrap_or_else(|| panic!("{what}: step 20 was not skipped")).reason;
        assert!(reason.contains(&format!("{} has {now} bytes, the manifest says {size}", victim.name)), "{what}: {reason}");
    }
    fake.put_object("bucket", &key, original);
    assert_eq!(manager.restore_latest().unwrap().unwrap().step, 20, "whole again, step 20 restores");
}

#[test]
fn commit_is_create_only_and_a_committed_step_is_not_rewritten() {
    let run = local_run("create-only");
    let manager = CheckpointManager::open_with(&run, keep_all(), small_files()).unwrap();
    let first = checkpoint(5, 1);
    save_and_wait(&manager, first.clone());
    let overwrite = block_on(run.store.put_opts(
        &run.child("checkpoints/step_5/COMMIT"),
        PutPayload::from_static(b"other"),
        PutOptions { mode: PutMode::Create, ..Default::default() },
    ));
    assert!(matches!(overwrite, Err(object_store::Error::AlreadyExists { .. })), "{overwrite:?}");

    // Saving the same step again (a resume that stops at once) keeps the verified original.
    let report = save_and_wait(&manager, checkpoint(5, 99));
    assert!(report.already_committed);
    assert_eq!(manager.restore(5).unwrap(), first);

    // A committed step that fails verification is replaced by the new save.
    let victim = manager.manifest(5).unwrap().files[0].name.clone();
    block_on(run.store.put(&run.child(&format!("checkpoints/step_5/{victim}")), PutPayload::from_static(b"junk"))).unwrap();
    let replacement = checkpoint(5, 2);
    let report = save_and_wait(&manager, replacement.clone());
    assert!(!report.already_committed);
    assert_eq!(manager.restore(5).unwrap(), replacement);
}

#[test]
fn injected_faults_are_retried_and_the_save_succeeds() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/faults", RetryPolicy::fast(4));
    let manager = CheckpointManager::open_with(&run, keep_all(), small_files()).unwrap();
    fake.inject(3, Fault::Status(503), Some("PUT"));
    fake.inject(1, Fault::Drop, Some("PUT"));
    fake.inject(1, Fault::Status(500), Some("POST"));
    fake.inject(1, Fault::Drop, Some("GET"));
    fake.inject(2, Fault::Delay(Duration::from_millis(50)), Some("PUT"));
    let original = checkpoint(30, 3);
    save_and_wait(&manager, original.clone());
    assert_eq!(manager.failed_saves(), 0);
    assert_eq!(manager.restore_latest().unwrap(), Some(original));
    let log = fake.log();
    assert_eq!(log.iter().filter(|l| l.status >= 500).count(), 4);
    assert_eq!(log.iter().filter(|l| l.status == 0).count(), 2, "both dropped connections happened");
}

#[test]
fn a_save_that_fails_for_good_is_reported_and_the_next_one_works() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/down", RetryPolicy::fast(1));
    let options = WriteOptions { retry: RetryPolicy::fast(1), ..small_files() };
    let manager = CheckpointManager::open_with(&run, keep_all(), options).unwrap();
    fake.inject(usize::MAX, Fault::Status(503), None);
    manager.save(checkpoint(40, 4)).unwrap();
    match manager.wait() {
        Err(CheckpointError::SaveFailed { step, message }) => {
            assert_eq!(step, 40);
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("expected a failed save, got {other:?}"),
    }
    assert_eq!(manager.failed_saves(), 1);
    fake.clear_faults();
    assert_eq!(manager.latest_committed().unwrap(), None, "nothing half-written counts as committed");
    let good = checkpoint(50, 5);
    save_and_wait(&manager, good.clone());
    assert_eq!(manager.restore_latest().unwrap(), Some(good));
}

#[test]
fn retention_keeps_the_last_k_and_every_mth() {
    let run = memory_run("retention");
    let policy = RetentionPolicy { keep_last: 2, keep_every: Some(30) };
    let manager = CheckpointManager::open_with(&run, policy, small_files()).unwrap();
    // An interrupted save older than everything: garbage once a newer step commits.
    block_on(run.store.put(&run.child("checkpoints/step_5/tensors-00000-of-00001.safetensors"), PutPayload::from_static(b"x"))).unwrap();
    let mut deleted = Vec::new();
    for step in (10..=70).step_by(10) {
        deleted.extend(save_and_wait(&manager, checkpoint(step, step)).deleted_steps);
    }
    assert_eq!(manager.committed_steps().unwrap(), vec![30, 60, 70]);
    deleted.sort_unstable();
    assert_eq!(deleted, vec![5, 10, 20, 40, 50]);
    let dirs: std::collections::BTreeSet<String> =
        object_names(&run).iter().filter_map(|n| n.split('/').nth(1).map(str::to_string)).collect();
    assert_eq!(dirs.into_iter().collect::<Vec<_>>(), ["step_30", "step_60", "step_70"], "no files of deleted steps remain");
}

#[test]
fn a_request_while_a_save_is_in_flight_is_coalesced() {
    let fake = GcsFake::start();
    let run = fake.open("bucket", "runs/coalesce", RetryPolicy::fast(1));
    let manager = CheckpointManager::open_with(&run, keep_all(), small_files()).unwrap();
    // The first write stalls, so step 1 is still in flight while 2 and 3 arrive.
    fake.inject(1, Fault::Delay(Duration::from_millis(400)), Some("PUT"));
    manager.save(checkpoint(1, 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.log().is_empty() && fake.keys("bucket").is_empty() {
        assert!(Instant::now() < deadline, "the first save never reached the store");
        std::thread::yield_now();
    }
    let t = Instant::now();
    manager.save(checkpoint(2, 2)).unwrap();
    manager.save(checkpoint(3, 3)).unwrap();
    assert!(t.elapsed() < Duration::from_millis(200), "save() must not wait for the one in flight");
    assert!(manager.is_busy());
    assert_eq!(manager.wait().unwrap().unwrap().step, 3);
    assert_eq!(manager.superseded_saves(), 1);
    assert_eq!(manager.committed_steps().unwrap(), vec![1, 3]);
}

#[test]
fn malformed_checkpoints_are_refused_at_save() {
    let manager = CheckpointManager::open(&memory_run("malformed"), RetentionPolicy::default()).unwrap();
    let mut ckpt = checkpoint(1, 1);
    ckpt.tensors.push(ckpt.tensors[0].clone());
    let err = manager.save(ckpt).unwrap_err().to_string();
    assert!(err.contains("appears twice"), "{err}");
    let err = CheckpointManager::open(&memory_run("bad-policy"), RetentionPolicy { keep_last: 0, keep_every: None }).err().unwrap();
    assert!(err.to_string().contains("checkpoint.keep_last"), "{err}");
}

#[test]
fn shape_changes_are_refused_and_config_changes_listed() {
    let saved = checkpoint(7, 1);
    let expected: Vec<(String, TensorType)> = saved.tensors.iter().map(|(n, t)| (n.clone(), TensorType::new(t.dtype, &t.shape))).collect();
    check_compatible(&saved, &expected).unwrap();

    let mut wider = expected.clone();
    wider[0].1 = TensorType::new(wider[0].1.dtype, &[3, 6]);
    let err = check_compatible(&saved, &wider).unwrap_err().to_string();
    assert!(err.contains(&format!("'{}'", expected[0].0)) && err.contains("[3, 5]") && err.contains("[3, 6]"), "{err}");

    let mut renamed = expected.clone();
    renamed[1].0 = "model.new_layer.kernel".into();
    let err = check_compatible(&saved, &renamed).unwrap_err().to_string();
    assert!(err.contains("'model.new_layer.kernel'") && err.contains("does not"), "{err}");

    let fewer = &expected[..expected.len() - 1];
    let err = check_compatible(&saved, fewer).unwrap_err().to_string();
    assert!(err.contains(&format!("'{}'", expected.last().unwrap().0)) && err.contains("the model does not"), "{err}");

    let new_config = "model: {d_model: 8}\noptimizer: {lr: 0.0005}\n";
    assert_eq!(changed_config_keys(&saved.meta.config_yaml, new_config).unwrap(), vec!["optimizer.lr"]);
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_metadata_watcher_fires_on_preemption_and_maintenance() {
    use support::metadata_fake::MetadataFake;
    for (event, reason) in [("preempted", StopReason::Preempted), ("maintenance", StopReason::Maintenance)] {
        let server = MetadataFake::start();
        let signal = StopSignal::new();
        let config = MetadataWatcherConfig { base_url: server.base_url(), interval: Duration::from_millis(10), ..Default::default() };
        let watcher = MetadataWatcher::start(config, signal.clone()).unwrap();
        wait_until("the watcher polled a few times", || server.requests() >= 4);
        assert!(!signal.is_set(), "nothing to report yet");
        match event {
            "preempted" => server.set_preempted(true),
            _ => server.set_maintenance_event("TERMINATE_ON_HOST_MAINTENANCE"),
        }
        wait_until("the stop signal is set", || signal.is_set());
        assert_eq!(signal.reason(), Some(reason));
        wait_until("the watcher thread ends", || watcher.is_finished());
        assert_eq!(server.refused(), 0, "every request carried Metadata-Flavor: Google");
        assert_eq!(watcher.failed_polls(), 0);
    }
}

#[test]
fn an_unreachable_metadata_server_is_counted_not_fatal() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let signal = StopSignal::new();
    let config = MetadataWatcherConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        interval: Duration::from_millis(5),
        request_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let watcher = MetadataWatcher::start(config, signal.clone()).unwrap();
    wait_until("two failed polls", || watcher.failed_polls() >= 2);
    assert!(!signal.is_set());
    drop(watcher);
    assert!(MetadataWatcher::start(MetadataWatcherConfig { base_url: "https://x".into(), ..Default::default() }, signal).is_err());
}

#[test]
fn sigterm_sets_the_stop_signal_instead_of_killing_the_process() {
    let signal = StopSignal::new();
    signal.install_os_handlers().unwrap();
    assert!(!signal.is_set());
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    wait_until("the handler ran", || signal.is_set());
    assert_eq!(signal.reason(), Some(StopReason::Terminate));
    assert_eq!(StopReason::Terminate.exit_code(), EXIT_PREEMPTED);
    assert_ne!(EXIT_PREEMPTED, 0);
    assert_ne!(EXIT_PREEMPTED, 1);
}
