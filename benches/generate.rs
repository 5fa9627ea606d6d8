//! Generation speed: seconds for a batch of images of `image_length` tokens,
//! greedy / top-k 50 / top-k 50 + condition scale 10, on random weights,
//! with dalle-mini's own `DalleBart.generate` on JAX beside it in the same
//! run when a Python with dalle-mini is given.
//!
//!     cargo bench --bench generate -- [CONFIG] [--batch 8] [--devices 1] [--dtype f32]
//!         [--text-vocab 50264] [--repeats 2] [--modes greedy,top-k,scale] [--python /path/to/python]
//!
//! `--python` (or `DALLE_JAX_PYTHON`) runs `tools/jax_generate_bench.py` with the
//! same config, batch and modes. The load average is printed before and after.

use dalle_xla::data::EncodedText;
use dalle_xla::generate::{Flow, Request, RunOptions, Sampler, SamplingSettings};
use dalle_xla::models::dallebart::parameter_specs;
use dalle_xla::pjrt::{open_client, ClientOptions};
use dalle_xla::models::dallebart::TrainConfig;
use dalle_xla::DType;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Peak resident memory of this process in MiB (VmHWM).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let config_path = args.iter().find(|a| a.ends_with(".yaml")).cloned().unwrap_or_else(|| "configs/small.yaml".into());
    let batch: usize = arg(&args, "--batch").map(|v| v.parse().expect("--batch N")).unwrap_or(8);
    let devices: usize = arg(&args, "--devices").map(|v| v.parse().expect("--devices N")).unwrap_or(1);
    let repeats: usize = arg(&args, "--repeats").map(|v| v.parse().expect("--repeats N")).unwrap_or(2);
    let text_vocab: i64 = arg(&args, "--text-vocab").map(|v| v.parse().expect("--text-vocab N")).unwrap_or(50264);
    let dtype = match arg(&args, "--dtype").as_deref() {
        None | Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some("f16") => DType::F16,
        Some(other) => panic!("--dtype f32|bf16|f16, got {other}"),
    };
    let python = arg(&args, "--python").or_else(|| std::env::var("DALLE_JAX_PYTHON").ok());

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut config, _) = TrainConfig::load(&root.join(&config_path), &[]).expect("load the config");
    config.model.encoder_vocab_size = text_vocab;
    let c = config.model.clone();
    println!("load average before: {}", load_average());
    println!(
        "generate bench: {config_path} (d_model {}, {}+{} layers, text vocab {}, image vocab {}, {} tokens), batch {batch}, {devices} device(s), {dtype}",
        c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_vocab_size, c.image_vocab_size, c.image_length
    );

    let platform = std::env::var("DALLE_PLATFORM").unwrap_or_else(|_| "cpu".into());
    let options = if platform.contains("cpu") { ClientOptions::cpu_devices(devices) } else { ClientOptions::default() };
    let client = open_client(&platform, None, &options).expect("open the PJRT client");
    let weights = parameter_specs(&c)
        .expect("parameter specs")
        .into_iter()
        .map(|s| {
            let v = s.init.sample(0, &s.name, DType::F32, &s.ty.shape);
            (s.name, v)
        })
        .collect();
    let sampler = Sampler::new(&client, c.clone(), &weights, "random weights", dtype, devices).expect("sampler");
    let t = c.max_text_length as usize;
    let text = |seed: i32| {
        let mut ids: Vec<i32> = (0..t).map(|i| 3 + ((i as i32 * 7919 + seed * 104729) % (c.encoder_vocab_size as i32 - 3))).collect();
        let mut mask = vec![1; t];
        for i in 12..t {
            ids[i] = 1;
            mask[i] = 0;
        }
        EncodedText { input_ids: ids, attention_mask: mask }
    };
    let uncond = EncodedText { input_ids: [0, 2].into_iter().chain(std::iter::repeat(1).take(t - 2)).collect(), attention_mask: [1, 1].into_iter().chain(std::iter::repeat(0).take(t - 2)).collect() };
    let requests: Vec<Request> = (0..batch).map(|i| Request { text: text(i as i32), n: 1, key_index: i as u64 }).collect();
    let modes = [
        ("greedy", SamplingSettings::greedy()),
        ("top-k 50", SamplingSettings { top_k: Some(50), condition_scale: 1.0, ..Default::default() }),
        ("top-k 50 + condition scale 10", SamplingSettings { top_k: Some(50), condition_scale: 10.0, ..Default::default() }),
    ];
    let wanted = arg(&args, "--modes").unwrap_or_else(|| "greedy,top-k,scale".into());
    let keys = ["greedy", "top-k", "scale"];
    let modes: Vec<_> = modes.iter().zip(keys).filter(|(_, k)| wanted.split(',').any(|w| w == *k)).map(|(m, _)| m.clone()).collect();
    let run = RunOptions { rows_per_device: batch.div_ceil(devices), ..Default::default() };
    let tokens = (batch * c.image_length as usize) as f64;
    for (name, settings) in &modes {
        let t0 = Instant::now();
        sampler.generate(&requests, &uncond, 0, settings, &run, |_| Flow::Continue).expect("warm-up generation");
        let first = t0.elapsed().as_secs_f64();
        let mut best = f64::MAX;
        for r in 0..repeats {
            let t0 = Instant::now();
            sampler.generate(&requests, &uncond, r as u64 + 1, settings, &run, |_| Flow::Continue).expect("generation");
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("ours {name:<32} {best:>8.3} s  {:>9.1} tokens/s  (first call incl. compile {first:.2} s)", tokens / best);
    }
    println!("ours peak host memory (VmHWM): {:.0} MiB", peak_mib());

    if let Some(python) = python {
        let script = root.join("tools/jax_generate_bench.py");
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg(root.join(&config_path))
            .args(["--batch", &batch.to_string(), "--text-vocab", &text_vocab.to_string(), "--repeats", &repeats.to_string(), "--modes", &wanted])
            .args(if dtype == DType::F32 { vec![] } else { vec!["--dtype".to_string(), dtype.to_string()] })
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => println!("the JAX side exited with {s}"),
            Err(e) => println!("could not run {python}: {e}"),
        }
    } else {
        println!("(JAX side skipped: pass --python PATH or set DALLE_JAX_PYTHON to a Python with dalle-mini 0.1.5)");
    }
    println!("load average after: {}", load_average());
}
