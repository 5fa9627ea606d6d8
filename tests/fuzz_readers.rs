//! Seeded mutation tests of every reader of user files: the config loader,
//! safetensors weights (with their hashes), checkpoint metadata and shards,
//! parquet and JSONL datasets, and token files. Thousands of mutated copies of
//! a valid file each must give an error or a correct read, never a panic.
//! A failure names the reader, the seed and the case, so it can be replayed.

use dalle_xla::checkpoint::{Checkpoint, CheckpointManager, CheckpointMeta, RetentionPolicy, COMMIT_FILE, METADATA_FILE};
use dalle_xla::data::{dataset_bytes, resolve, DataFormat, Record};
use dalle_xla::models::vqgan::{load_weights, read_tokens, weights_file, VqganConfig};
use dalle_xla::storage::{block_on, Location};
use dalle_xla::models::dallebart::TrainConfig;
use dalle_xla::HostTensor;
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

const SEED: u64 = 16;

/// One random edit of `bytes`: bit flips, special bytes, truncation, deletion,
/// duplication or insertion, sometimes several at once.
fn mutate(rng: &mut StdRng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let len = bytes.len();
        if len == 0 {
            bytes.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..len);
        match rng.gen_range(0..7) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => bytes[at] = *[0u8, 0xff, b'"', b'{', b'}', b'[', b':', b'\n', b'-', b'9', b' '].get(rng.gen_range(0..11)).unwrap_or(&0),
            2 => bytes.truncate(at),
            3 => {
                let end = (at + rng.gen_range(1..64)).min(len);
                bytes.drain(at..end);
            }
            4 => {
                let end = (at + rng.gen_range(1..64)).min(len);
                let copy = bytes[at..end].to_vec();
                let to = rng.gen_range(0..=bytes.len());
                bytes.splice(to..to, copy);
            }
            5 => {
                let insert: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                bytes.splice(at..at, insert);
            }
            _ => {
                let end = (at + rng.gen_range(1..32)).min(len);
                let fill = rng.gen();
                bytes[at..end].fill(fill);
            }
        }
    }
    bytes
}

/// Runs `cases` mutations of `original` through `check`, which returns an
/// error message when a successful read is wrong; panics name the case.
fn fuzz(reader: &str, original: &[u8], cases: usize, mut check: impl FnMut(&[u8]) -> Result<(), String>) {
    let mut rng = StdRng::seed_from_u64(SEED ^ reader.len() as u64);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for case in 0..cases {
        let input = mutate(&mut rng, original);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => {}
            Ok(Err(wrong)) => failures.push(format!("case {case}: wrong read: {wrong}")),
            Err(_) => failures.push(format!("case {case}: panicked")),
        }
    }
    println!("{reader}: {cases} mutated cases in {:.2?}", started.elapsed());
    assert!(failures.is_empty(), "{reader} (seed {SEED}): {} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn config_loader() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let original = std::fs::read(&path).unwrap();
    fuzz("config", &original, 3000, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match dalle_xla::config::load_str::<TrainConfig>(&text, "fuzzed.yaml", &[]) {
            Ok((config, _)) => {
                // Validation may refuse it, but must not panic; a valid one round-trips.
                if config.validate().is_ok() {
                    let yaml = serde_yaml::to_string(&config).map_err(|e| e.to_string())?;
                    let (again, _) = dalle_xla::config::load_str::<TrainConfig>(&yaml, "again", &[]).map_err(|e| e.to_string())?;
                    if again != config {
                        return Err("a valid config does not round-trip".into());
                    }
                }
                Ok(())
            }
            Err(e) if e.to_string().is_empty() => Err("an error without a message".into()),
            Err(_) => Ok(()),
        }
    });
}

fn tiny_weights() -> (VqganConfig, Vec<(String, HostTensor)>) {
    let config = VqganConfig { ch: 32, ch_mult: vec![1, 2], num_res_blocks: 1, attn_resolutions: vec![], z_channels: 4, embed_dim: 4, n_embed: 8, resolution: 16, in_channels: 3, out_ch: 3, beta: 0.25, l2_codes: false, norm_groups: 32, fsq_levels: vec![], fsq_commitment: 0.0 };
    let weights = vec![
        ("conv.kernel".to_string(), HostTensor::new(&[3, 3, 3, 8], &(0..216).map(|i| i as f32 * 0.01).collect::<Vec<_>>()).unwrap()),
        ("conv.bias".to_string(), HostTensor::new(&[8], &[0.5f32; 8]).unwrap()),
        ("codebook".to_string(), HostTensor::new(&[8, 4], &(0..32).map(|i| -(i as f32)).collect::<Vec<_>>()).unwrap()),
    ];
    (config, weights)
}

#[test]
fn safetensors_weights_with_hashes() {
    let (config, weights) = tiny_weights();
    let original = weights_file(&config, &weights).unwrap();
    let dir = scratch("safetensors");
    let file = dir.join("w.safetensors");
    fuzz("safetensors", &original, 2000, |bytes| {
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        match load_weights(&file) {
            // A read that passes the hashes is the original.
            Ok((read_config, read)) => {
                if read_config != config || read.into_iter().collect::<Vec<_>>() != { let mut w = weights.clone(); w.sort_by(|a, b| a.0.cmp(&b.0)); w } {
                    return Err("a damaged file read as different weights".into());
                }
                Ok(())
            }
            Err(_) => Ok(()),
        }
    });
}

fn list(location: &Location) -> Vec<String> {
    block_on(async { location.store.list(Some(&location.prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await }).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn checkpoint_metadata_and_shards() {
    let run = dalle_xla::storage::open(&format!("memory://fuzz-checkpoint-{}/run", std::process::id())).unwrap();
    let (_, weights) = tiny_weights();
    let checkpoint = Checkpoint {
        step: 7,
        tensors: weights.clone(),
        meta: CheckpointMeta { samples_seen: 56, data_position: serde_json::json!({"epoch": 1}), rng: serde_json::json!([1, 2]), config_yaml: "a: 1\n".into(), wall_secs: 3.5 },
    };
    let manager = CheckpointManager::open(&run, RetentionPolicy::default()).unwrap();
    manager.save(checkpoint).unwrap();
    manager.wait().unwrap();
    let step = run.join("checkpoints/step_7");
    let metadata = step.get(METADATA_FILE).unwrap().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    let shard_name = manifest["files"][0]["name"].as_str().unwrap().to_string();
    let shard = step.get(&shard_name).unwrap().unwrap();
    assert!(list(&step).len() >= 3);

    // Mutated metadata, committed with its own hash (as a buggy writer would):
    // the reader must refuse it or read exactly the saved tensors.
    fuzz("checkpoint metadata", &metadata, 1500, |bytes| {
        step.put(METADATA_FILE, bytes.to_vec()).map_err(|e| e.to_string())?;
        step.put(COMMIT_FILE, sha256_hex(bytes).into_bytes()).map_err(|e| e.to_string())?;
        // No usable checkpoint is an error naming the step and the reason: fine.
        match manager.restore_latest_report().map(|r| r.checkpoint) {
            Ok(Some(read)) if read.tensors != weights => Err("read tensors that differ from the saved ones".into()),
            _ => Ok(()),
        }
    });
    step.put(METADATA_FILE, metadata.clone()).unwrap();

    // Mutated shard files, with the manifest's size and hash updated to match.
    fuzz("checkpoint shard", &shard, 1500, |bytes| {
        let mut m = manifest.clone();
        m["files"][0]["bytes"] = serde_json::json!(bytes.len());
        m["files"][0]["sha256"] = serde_json::json!(sha256_hex(bytes));
        let m = serde_json::to_vec(&m).unwrap();
        step.put(&shard_name, bytes.to_vec()).map_err(|e| e.to_string())?;
        step.put(METADATA_FILE, m.clone()).map_err(|e| e.to_string())?;
        step.put(COMMIT_FILE, sha256_hex(&m).into_bytes()).map_err(|e| e.to_string())?;
        if let Ok(Some(read)) = manager.restore_latest_report().map(|r| r.checkpoint) {
            for ((name, t), (want_name, want)) in read.tensors.iter().zip(&weights) {
                if name != want_name || t.shape != want.shape || t.dtype != want.dtype || t.data.len() != want.data.len() {
                    return Err(format!("tensor '{name}' read as {:?} {:?} with {} bytes", t.dtype, t.shape, t.data.len()));
                }
            }
        }
        Ok(())
    });
}

fn records() -> Vec<Record> {
    (0..6).map(|i| Record { caption: format!("a red square number {i}"), encoding: (0..16).map(|t| (t * 3 + i) % 64).collect() }).collect()
}

fn fuzz_dataset(reader: &str, format: DataFormat, extension: &str, cases: usize) {
    let original = dataset_bytes(format, &records()).unwrap();
    let dir = scratch(reader);
    let file = dir.join(format!("data.{extension}"));
    let spec = file.to_str().unwrap().to_string();
    fuzz(reader, &original, cases, |bytes| {
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        let files = match resolve(&[spec.clone()], DataFormat::Auto, "data.train_files") {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        for f in files {
            // Rows that parse are rows: a caption and/or an encoding, nothing invented.
            if let Ok(rows) = f.load() {
                if rows.len() > 10_000 {
                    return Err(format!("{} rows from a {}-byte file", rows.len(), bytes.len()));
                }
            }
            let _ = f.count_rows();
        }
        Ok(())
    });
}

#[test]
fn parquet_reader() {
    fuzz_dataset("parquet", DataFormat::Parquet, "parquet", 1500);
}

#[test]
fn jsonl_reader() {
    fuzz_dataset("jsonl", DataFormat::Jsonl, "jsonl", 2000);
}

#[test]
fn token_file_reader() {
    let line: Vec<String> = (0..16).map(|t| (t * 5 % 64).to_string()).collect();
    let original = format!("{}\n{}\n\n{}\n", line.join(" "), line.join(","), line.join(", ")).into_bytes();
    let dir = scratch("tokens");
    let file = dir.join("tokens.txt");
    fuzz("token file", &original, 2000, |bytes| {
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        match read_tokens(file.to_str().unwrap(), 16) {
            Ok(rows) if rows.iter().any(|(_, t)| t.len() != 16) => Err("a sequence of the wrong length was accepted".into()),
            _ => Ok(()),
        }
    });
}
