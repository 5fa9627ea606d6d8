//! Converting a released-size DalleBart checkpoint: writes a random flax
//! msgpack with the parameter tree of DALL·E mini (about 1.75 GB in f32;
//! `DALLE_BENCH_MODEL=tiny` for a quick check), converts it with
//! `dalle convert`'s code and prints the throughput and the peak resident
//! memory (VmHWM) of the conversion relative to the file size. Streaming
//! means the peak stays near the largest tensor, not the file.
//!
//!     cargo bench --bench weights

use dalle_xla::models::convert::{convert_dir, ConvertOptions};
use dalle_xla::models::dallebart::{flax::config_to_hf, parameter_specs, DalleBartConfig};
use dalle_xla::weights::write_flax_msgpack;
use dalle_xla::{DType, HostTensor};
use std::time::Instant;

/// Peak resident set size of this process in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Resets the peak so the next reading covers only what follows (Linux `clear_refs`).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn current_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn random_tensor(shape: &[i64], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product::<i64>() as usize;
    let mut data = Vec::with_capacity(n * 4);
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04;
        data.extend_from_slice(&v.to_le_bytes());
    }
    HostTensor { dtype: DType::F32, shape: shape.to_vec(), data }
}

fn main() {
    let tiny = std::env::var("DALLE_BENCH_MODEL").is_ok_and(|m| m == "tiny");
    let config = if tiny { DalleBartConfig::tiny() } else { DalleBartConfig::mini() };
    let root = std::env::temp_dir().join(format!("dalle-bench-weights-{}", std::process::id()));
    let src = root.join("released");
    std::fs::create_dir_all(&src).expect("scratch directory");
    let specs = parameter_specs(&config).expect("parameter tree");
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let shapes: std::collections::HashMap<String, Vec<i64>> = specs.iter().map(|s| (s.name.clone(), s.ty.shape.clone())).collect();
    let started = Instant::now();
    let mut seed = 0;
    write_flax_msgpack(&src.join("flax_model.msgpack"), &names, |n| {
        seed += 1;
        Ok(random_tensor(&shapes[n], seed))
    })
    .expect("writing the msgpack");
    std::fs::write(src.join("config.json"), serde_json::to_string(&config_to_hf(&config, true)).unwrap()).unwrap();
    // Conversion copies the tokenizer files; their content does not matter here.
    std::fs::write(src.join("tokenizer.json"), "{}").unwrap();
    let size = std::fs::metadata(src.join("flax_model.msgpack")).unwrap().len();
    println!("uptime before: {}", uptime());
    println!("wrote a random {} msgpack: {:.1} MB in {:.1?}", if tiny { "tiny" } else { "mini-sized" }, size as f64 / 1e6, started.elapsed());

    let largest = specs.iter().map(|s| s.ty.numel() as u64 * 4).max().unwrap_or(0);
    let before = current_rss();
    let reset = reset_hwm();
    let started = Instant::now();
    let report = convert_dir(&src, &root.join("converted"), &ConvertOptions::default()).expect("conversion");
    let elapsed = started.elapsed().as_secs_f64();
    let peak = vm_hwm();
    println!(
        "convert: {} tensors, {:.1} MB in {elapsed:.2} s = {:.0} MB/s",
        report.tensors,
        size as f64 / 1e6,
        size as f64 / 1e6 / elapsed
    );
    let window = if reset { "during the conversion" } else { "of the whole process (clear_refs unavailable)" };
    println!(
        "peak RSS {window}: {:.1} MB = {:.2}x the file ({:.1} MB resident before; largest tensor {:.1} MB)",
        peak as f64 / 1e6,
        peak as f64 / size as f64,
        before as f64 / 1e6,
        largest as f64 / 1e6
    );
    println!("uptime after: {}", uptime());
    let _ = std::fs::remove_dir_all(&root);
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}
