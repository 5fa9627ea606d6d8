//! Checkpoint save/restore throughput and the training stall a save causes.
//!
//!   cargo bench --profile dev --bench checkpoint            # `small` (~40 MB)
//!   DALLE_BENCH_MINI=1 cargo bench --profile dev --bench checkpoint   # also `mini` (~1.75 GB)
//!
//! For each size and backend (local disk, the loopback GCS fake, and the fake
//! with each request held to 100 MB/s, as one connection to a cloud store is) it reports:
//! the stall, split into the host copy of the tensors (what the trainer does
//! after fetching them from the device; a memcpy of every byte) and the
//! `save()` call itself (handing them to the writer thread); then save and
//! restore throughput in MB/s, including safetensors encoding and SHA-256.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use dalle_xla::checkpoint::{Checkpoint, CheckpointManager, CheckpointMeta, RetentionPolicy, WriteOptions};
use dalle_xla::storage::{self, Location, RetryPolicy};
use dalle_xla::{DType, HostTensor};
use std::time::Instant;

/// Tensors totalling `total` f32 values, in pieces of at most `piece` values,
/// like a model's parameter list (plus two small factored optimizer states per
/// piece, as Adafactor keeps).
fn tensors(total: usize, piece: usize) -> Vec<(String, HostTensor)> {
    let mut out = Vec::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(piece);
        let data: Vec<u8> = (0..n * 4).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
        let name = format!("model.layers.{i}.kernel");
        out.push((name.clone(), HostTensor { dtype: DType::F32, shape: vec![n as i64], data }));
        let row = HostTensor { dtype: DType::F32, shape: vec![64], data: vec![1; 256] };
        out.push((format!("{name}/v_row"), row.clone()));
        out.push((format!("{name}/v_col"), row));
        left -= n;
        i += 1;
    }
    out
}

fn mb(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn bench(size: &str, backend: &str, run: &Location, tensors: &[(String, HostTensor)]) {
    let bytes: u64 = tensors.iter().map(|(_, t)| t.data.len() as u64).sum();
    let options = WriteOptions { retry: RetryPolicy::default(), ..Default::default() };
    let manager = CheckpointManager::open_with(run, RetentionPolicy::default(), options).expect("open the run");

    let t0 = Instant::now();
    let host_copy = tensors.to_vec();
    let copy_secs = t0.elapsed().as_secs_f64();
    let ckpt = Checkpoint { step: 1, tensors: host_copy, meta: CheckpointMeta { config_yaml: "bench: true\n".into(), ..Default::default() } };
    let t1 = Instant::now();
    manager.save(ckpt).expect("queue the save");
    let call_secs = t1.elapsed().as_secs_f64();
    let report = manager.wait().expect("save").expect("a report");
    let save_secs = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let restored = manager.restore(1).expect("restore");
    let restore_secs = t2.elapsed().as_secs_f64();
    assert!(restored.tensors.iter().zip(tensors).all(|(a, b)| a == b), "restored tensors differ");
    drop(restored);

    println!(
        "{size:<6} {backend:<11} {:>9.1} MB {:>3} file(s) | stall: host copy {:>8.1} ms + save() {:>7.3} ms | save {:>7.1} MB/s ({:.2} s) | restore {:>7.1} MB/s ({:.2} s)",
        bytes as f64 / 1e6,
        report.files,
        copy_secs * 1e3,
        call_secs * 1e3,
        mb(bytes, save_secs),
        save_secs,
        mb(bytes, restore_secs),
        restore_secs
    );
}

fn run_size(size: &str, total: usize, piece: usize) {
    let tensors = tensors(total, piece);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-checkpoint").join(size);
    let _ = std::fs::remove_dir_all(&dir);
    let local = storage::open(dir.to_str().expect("utf-8 path")).expect("open local dir");
    bench(size, "local", &local, &tensors);
    let _ = std::fs::remove_dir_all(&dir);

    let fake = support::gcs_fake::GcsFake::start();
    let gcs = fake.open("bench", size, RetryPolicy::default());
    bench(size, "gcs-fake", &gcs, &tensors);

    // A cloud store serves one connection far slower than a VM's network:
    // every answer of this fake is held to 100 MB/s per request.
    let capped = support::gcs_fake::GcsFake::start();
    capped.inject(usize::MAX, support::gcs_fake::Fault::Bandwidth(100e6), None);
    let gcs = capped.open("bench", size, RetryPolicy::default());
    bench(size, "gcs-100MB/s", &gcs, &tensors);
}

fn main() {
    // `small`: ~10M parameters (40 MB of f32).
    run_size("small", 10_000_000, 1 << 20);
    if std::env::var("DALLE_BENCH_MINI").is_ok_and(|v| v == "1") {
        // `mini`: 437.8M parameters (1.75 GB of f32), in tensors of up to 64 MB.
        run_size("mini", 437_800_000, 16 << 20);
    } else {
        println!("(set DALLE_BENCH_MINI=1 to also measure the mini-sized checkpoint, ~1.75 GB)");
    }
}
