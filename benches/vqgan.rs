//! VQGAN throughput on one device of the chosen platform: images/s encoding
//! 256x256 images with the f16_16384 model, and the training step time of the
//! tiny config (generator update alone, and with the GAN phase on).
//!
//!   cargo bench --bench vqgan [-- --platform cpu] [--batch 2] [--iters 3] [--steps 10]

use dalle_xla::data::shapes;
use dalle_xla::models::vqgan::{parameter_specs, VqganCodec, VqganConfig, VqganTrainConfig, VqganTrainer};
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use dalle_xla::train::Trainable;
use dalle_xla::HostTensor;
use std::collections::BTreeMap;
use std::time::Instant;

fn encode_bench(client: &Client, batch: i64, iters: usize) -> anyhow::Result<()> {
    let config = VqganConfig::f16_16384();
    // Seeded random weights: throughput does not depend on their values.
    let weights: BTreeMap<String, HostTensor> =
        parameter_specs(&config)?.into_iter().map(|p| (p.name.clone(), p.init.sample(0, &p.name, p.ty.dtype, &p.ty.shape))).collect();
    let started = Instant::now();
    let codec = VqganCodec::new(client, config.clone(), &weights, "random", batch, 1)?;
    let compile = started.elapsed();
    let r = config.resolution;
    let values: Vec<f32> = (0..batch * r * r * 3).map(|i| ((i % 255) as f32 / 127.5) - 1.0).collect();
    let images = HostTensor::new(&[batch, r, r, 3], &values)?;
    codec.encode(&images)?; // warm-up
    let started = Instant::now();
    for _ in 0..iters {
        codec.encode(&images)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "encode f16_16384 {r}x{r}, batch {batch}: {:.2} images/s ({:.0} ms per batch; programs compiled in {:.1?})",
        (iters as i64 * batch) as f64 / secs,
        secs * 1e3 / iters as f64,
        compile
    );
    Ok(())
}

fn train_bench(client: &Client, steps: u64, gan: bool) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-bench-{}", std::process::id()));
    let data = dir.join("shapes");
    if !data.exists() {
        shapes::generate(64, 32, 0, &data)?;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/vqgan/tiny.yaml");
    let overrides = vec![
        format!("data.images={}", data.display()),
        format!("train.run_dir={}", dir.join("run").display()),
        format!("train.steps={}", steps + 3),
        format!("loss.disc_start={}", if gan { 0 } else { 1_000_000 }),
        "train.devices=1".into(),
    ];
    let (config, _) = VqganTrainConfig::load(&path, &overrides)?;
    let started = Instant::now();
    let mut trainer = VqganTrainer::new(client, config.clone())?;
    let compile = started.elapsed();
    for _ in 0..3 {
        trainer.train_step()?;
    }
    let started = Instant::now();
    for _ in 0..steps {
        trainer.train_step()?;
    }
    let per_step = started.elapsed().as_secs_f64() / steps as f64;
    println!(
        "train tiny ({}), batch {}: {:.1} ms per step, {:.1} images/s (compiled in {:.1?})",
        if gan { "generator + discriminator" } else { "generator only" },
        config.train.batch_size,
        per_step * 1e3,
        config.train.batch_size as f64 / per_step,
        compile
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let (mut platform, mut batch, mut iters, mut steps) = ("cpu".to_string(), 2i64, 3usize, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--platform" => platform = args.next().unwrap_or_default(),
            "--batch" => batch = args.next().and_then(|s| s.parse().ok()).unwrap_or(batch),
            "--iters" => iters = args.next().and_then(|s| s.parse().ok()).unwrap_or(iters),
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(steps),
            _ => {}
        }
    }
    let options = if platform.contains("cpu") { ClientOptions::cpu_devices(1) } else { ClientOptions::default() };
    let client = open_client(&platform, None, &options)?;
    println!("platform {} ({})", client.platform(), client.platform_version());
    encode_bench(&client, batch, iters)?;
    train_bench(&client, steps, false)?;
    train_bench(&client, steps, true)?;
    Ok(())
}
