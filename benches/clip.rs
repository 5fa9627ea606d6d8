//! CLIP scoring throughput: images/s embedding 224x224 images with ViT-B/32
//! (random weights, openai/clip-vit-base-patch32's config) through the
//! compiled vision program on one device, beside transformers' CLIP on the
//! same machine in the same run (`tools/clip_bench.py`: PyTorch when torch is
//! importable, else FlaxCLIPModel). `DALLE_CLIP_PYTHON` names the Python with
//! transformers (default `python3`). `uptime` is printed before and after.
//!
//!   cargo bench --bench clip [-- --platform cpu] [--batch 8] [--iters 5]

use dalle_xla::host::HostTensor;
use dalle_xla::models::clip::{parameter_specs, ClipConfig, ClipTokenizer, Preprocessor, Scorer, ScorerOptions};
use dalle_xla::pjrt::{open_client, ClientOptions};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

fn uptime() {
    match Command::new("uptime").output() {
        Ok(o) => print!("uptime: {}", String::from_utf8_lossy(&o.stdout)),
        Err(e) => println!("uptime: unavailable ({e})"),
    }
}

/// ViT-B/32 as in openai/clip-vit-base-patch32's config.json.
fn vit_b32() -> ClipConfig {
    let json = r#"{"projection_dim": 512,
        "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                        "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}}"#;
    ClipConfig::from_hf_json(json, "ViT-B/32").expect("a valid config")
}

fn main() -> anyhow::Result<()> {
    let (mut platform, mut batch, mut iters) = ("cpu".to_string(), 8usize, 5usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--platform" => platform = args.next().unwrap_or_default(),
            "--batch" => batch = args.next().and_then(|s| s.parse().ok()).unwrap_or(batch),
            "--iters" => iters = args.next().and_then(|s| s.parse().ok()).unwrap_or(iters),
            _ => {}
        }
    }
    uptime();
    let options = if platform.contains("cpu") { ClientOptions::cpu_devices(1) } else { ClientOptions::default() };
    let client = open_client(&platform, None, &options)?;
    println!("platform {} ({})", client.platform(), client.platform_version());
    let config = vit_b32();
    let weights: BTreeMap<String, HostTensor> =
        parameter_specs(&config)?.into_iter().map(|p| (p.name.clone(), p.init.sample(0, &p.name, p.ty.dtype, &p.ty.shape))).collect();
    // A stand-in tokenizer: the benchmark times images, not prompts.
    let tokenizer = ClipTokenizer::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip_tiny")), 77)?;
    let started = Instant::now();
    let scorer = Scorer::new(&client, config, &weights, tokenizer, Preprocessor::clip_default(224), &ScorerOptions { images_per_device: batch, devices: 1, prompts_per_call: 1 })?;
    let compile = started.elapsed();
    let values: Vec<f32> = (0..batch * 224 * 224 * 3).map(|i| ((i % 255) as f32 / 127.5) - 1.0).collect();
    let pixels = HostTensor::new(&[batch as i64, 224, 224, 3], &values)?;
    scorer.image_embeds_from_pixels(&pixels)?; // warm-up
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        scorer.image_embeds_from_pixels(&pixels)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "dalle-xla ViT-B/32 image embeddings, batch {batch}: {:.1} images/s ({:.0} ms per batch, median of {iters}; compiled in {:.1?})",
        batch as f64 / median,
        median * 1e3,
        compile
    );

    let python = std::env::var("DALLE_CLIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/clip_bench.py");
    match Command::new(&python).args([script, &batch.to_string(), &iters.to_string()]).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap_or("")) {
                Ok(v) => println!(
                    "transformers ({}) ViT-B/32 image features, batch {batch}: {:.1} images/s (first call {:.1} s; {})",
                    v["framework"].as_str().unwrap_or("?"),
                    v["images_per_s"].as_f64().unwrap_or(f64::NAN),
                    v["compile_s"].as_f64().unwrap_or(f64::NAN),
                    v["versions"]
                ),
                Err(e) => println!("transformers comparison skipped: unreadable output ({e}): {text}"),
            }
        }
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!("transformers comparison skipped: {python} {script} failed: {}", err.lines().last().unwrap_or("(no output)"));
        }
        Err(e) => println!("transformers comparison skipped: cannot run {python}: {e}"),
    }
    uptime();
    Ok(())
}
