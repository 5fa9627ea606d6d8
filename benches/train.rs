//! Training throughput of DalleBart on one device of the chosen platform:
//! samples/s, achieved model FLOP/s (and utilisation where the peak is given),
//! compile time and the process's peak host memory.
//!
//!   cargo bench --bench train [-- tiny small mini] [--platform cpu] [--steps N] [--set key=value]...
//!   DALLE_PEAK_TFLOPS=989 cargo bench --bench train -- mini --platform cuda --set train.dtype=bf16
//!
//!   cargo bench --bench train -- small --profile   # where the step's time goes (see train/profile.rs)
//!   XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text" cargo bench --bench train -- tiny --steps 2
//!   python3 tools/hlo_kernels.py DIR --program train_step   # the kernels the compiled step launches
//!
//! `tools/jax_dallebart_bench.py` runs the same model and update in JAX for comparison.

#[path = "train/profile.rs"]
mod profile;

use dalle_xla::pjrt::{open_client, ClientOptions};
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use std::time::Instant;

/// Matmul FLOPs of one training example (forward + backward = 3x forward), attention included.
fn flops_per_example(c: &dalle_xla::models::dallebart::DalleBartConfig) -> f64 {
    let (d, te, td) = (c.d_model as f64, c.max_text_length as f64, c.image_length as f64);
    let attn_proj = 4.0 * d * d;
    let enc_layer = te * (attn_proj + 3.0 * d * c.encoder_ffn_dim as f64) + 2.0 * te * te * d;
    let dec_layer = td * (2.0 * attn_proj + 3.0 * d * c.decoder_ffn_dim as f64) + 2.0 * td * td * d + 2.0 * td * te * d;
    let head = td * d * (c.image_vocab_size + 1) as f64;
    let forward = 2.0 * (c.encoder_layers as f64 * enc_layer + c.decoder_layers as f64 * dec_layer + head);
    3.0 * forward
}

fn peak_host_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The first figure of /proc/loadavg: side-by-side timings mean little on a busy machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)).unwrap_or_else(|| "unknown".into())
}

fn main() -> anyhow::Result<()> {
    let mut names = Vec::new();
    let mut platform = "cpu".to_string();
    let mut steps = 20u64;
    let mut breakdown = false;
    let mut overrides = vec!["train.devices=1".to_string(), "train.eval_every=0".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--platform" => platform = args.next().unwrap_or_default(),
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(steps),
            "--set" => overrides.extend(args.next()),
            "--profile" => breakdown = true,
            "--bench" => {}
            other if !other.starts_with('-') => names.push(other.to_string()),
            _ => {}
        }
    }
    if names.is_empty() {
        names = vec!["tiny".into(), "small".into()];
    }
    let options = if platform.contains("cpu") { ClientOptions::cpu_devices(1) } else { ClientOptions::default() };
    let client = open_client(&platform, None, &options)?;
    let peak_tflops: Option<f64> = std::env::var("DALLE_PEAK_TFLOPS").ok().and_then(|v| v.parse().ok());
    println!(
        "platform {} ({}), {} step(s) timed after 3 warm-up steps, load average {}",
        client.platform(),
        client.platform_version(),
        steps,
        load_average()
    );
    for name in names {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/{name}.yaml"));
        let mut o = overrides.clone();
        o.push(format!("train.steps={}", steps + 3));
        let (config, _) = TrainConfig::load(&path, &o)?;
        if breakdown {
            profile::profile(&client, &name, &config, steps.min(5) as usize)?;
            continue;
        }
        let started = Instant::now();
        let mut trainer = Trainer::new(&client, config.clone())?;
        let compile = started.elapsed().as_secs_f64();
        for _ in 0..3 {
            trainer.train_step()?;
        }
        let t = Instant::now();
        for _ in 0..steps {
            trainer.train_step()?;
        }
        let per_step = t.elapsed().as_secs_f64() / steps as f64;
        let samples = config.train.batch_size as f64 / per_step;
        let tflops = samples * flops_per_example(&config.model) / 1e12;
        let mfu = peak_tflops.map(|p| format!(", MFU {:.1}%", 100.0 * tflops / p)).unwrap_or_default();
        println!(
            "{name:>6}: {:.2}M params, batch {}, {} {}: {:.1} ms/step, {:.1} samples/s, {:.3} TFLOP/s{mfu}, compile+init {:.1} s, peak host memory {:.0} MiB",
            trainer.parameter_count() as f64 / 1e6,
            config.train.batch_size,
            config.optimizer.kind,
            config.train.dtype,
            per_step * 1e3,
            samples,
            tflops,
            compile,
            peak_host_memory_mib().unwrap_or(f64::NAN)
        );
    }
    println!("load average at the end {}", load_average());
    Ok(())
}
