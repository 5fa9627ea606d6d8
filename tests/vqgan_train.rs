//! VQGAN training: a tiny model learns to reconstruct the shapes dataset; the
//! GAN phase runs and updates the discriminator; checkpoints resume; config
//! errors name the key.
mod common;
use common::*;
use dalle_xla::data::images::{ImageIndex, ImageLoader, LoaderOptions};
use dalle_xla::data::shapes;
use dalle_xla::models::vqgan::{load_weights, psnr, VqganCodec, VqganTrainConfig, VqganTrainer, CHECKPOINT_FILE};
use dalle_xla::HostTensor;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny config, shrunk further so a test trains in well under a minute.
fn config(data: &Path, run: &Path, extra: &[&str]) -> VqganTrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/vqgan/tiny.yaml");
    let mut overrides: Vec<String> = vec![
        format!("data.images={}", data.display()),
        format!("train.run_dir={}", run.display()),
        "model.ch_mult=[1,2]".into(),
        "model.attn_resolutions=[]".into(),
        "model.n_embed=64".into(),
        "model.embed_dim=16".into(),
        "train.log_every=25".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    VqganTrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

fn loader(data: &Path, batch: usize, seed: u64, shuffle: bool) -> ImageLoader {
    let options = LoaderOptions { resolution: 32, batch_size: batch, seed, shuffle, workers: 2, ..Default::default() };
    ImageLoader::start(ImageIndex::open(data).unwrap(), options).unwrap()
}

fn mean_psnr(trainer: &VqganTrainer, eval: &[HostTensor]) -> f64 {
    let mse: f64 = eval.iter().map(|b| trainer.reconstruction_mse(b).unwrap()).sum::<f64>() / eval.len() as f64;
    psnr(mse)
}

/// Threshold the trained model must reach on held-out shapes images.
const PSNR_THRESHOLD_DB: f64 = 18.0;

#[test]
fn tiny_vqgan_learns_to_reconstruct_shapes() {
    let root = temp_dir("psnr");
    let (train_dir, eval_dir) = (root.join("train"), root.join("eval"));
    shapes::generate(256, 32, 1, &train_dir).unwrap();
    shapes::generate(16, 32, 2, &eval_dir).unwrap();
    let steps = 300;
    let cfg = config(&train_dir, &root.join("run"), &[&format!("train.steps={steps}"), "loss.disc_start=100000"]);
    let mut trainer = VqganTrainer::new(&client(), cfg).unwrap();
    let eval: Vec<HostTensor> = loader(&eval_dir, 8, 0, false).take(2).map(|b| b.unwrap().pixels).collect();

    let before = mean_psnr(&trainer, &eval);
    let mut batches = loader(&train_dir, 8, 0, true);
    let started = std::time::Instant::now();
    trainer.run(&mut batches, &eval, |s| println!("{s:?}")).unwrap();
    let after = mean_psnr(&trainer, &eval);
    println!("PSNR on held-out shapes: untrained {before:.2} dB, after {steps} steps {after:.2} dB (threshold {PSNR_THRESHOLD_DB} dB), {:.1?}", started.elapsed());
    assert!(before < PSNR_THRESHOLD_DB - 5.0, "the untrained model is already at {before:.2} dB");
    assert!(after >= PSNR_THRESHOLD_DB, "trained PSNR {after:.2} dB is below {PSNR_THRESHOLD_DB} dB");

    // The exported weights reproduce the trained model's reconstructions.
    let (model, weights, _) = load_weights(&root.join("run")).unwrap();
    let codec = VqganCodec::new(&client(), model, &weights, "run", 8, 1).unwrap();
    let recon = codec.reconstruct(&eval[0]).unwrap();
    let mse: f64 = recon.to_f64_vec().iter().zip(eval[0].to_f64_vec()).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / recon.numel() as f64;
    assert!((mse - trainer.reconstruction_mse(&eval[0]).unwrap()).abs() < 1e-5, "codec and trainer disagree");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn gan_phase_trains_the_discriminator_and_resumes_from_the_checkpoint() {
    let root = temp_dir("gan");
    let data = root.join("data");
    shapes::generate(16, 32, 3, &data).unwrap();
    let run = root.join("run");
    // Two devices: the gradients are averaged across replicas.
    let extra = ["train.steps=3", "loss.disc_start=1", "train.devices=2", "discriminator.n_layers=2", "discriminator.ndf=32"];
    let mut trainer = VqganTrainer::new(&client(), config(&data, &run, &extra)).unwrap();
    let d_before: Vec<HostTensor> = trainer_discriminator(&trainer);
    let mut batches = loader(&data, 8, 0, true);
    let mut logged = Vec::new();
    trainer.run(&mut batches, &[], |s| logged.push(s.clone())).unwrap();
    let last = logged.last().expect("the last step is logged");
    for key in ["loss", "l1", "codebook", "g_loss", "d_weight", "d_loss", "logits_real", "logits_fake"] {
        assert!(last.get(key).is_some_and(|v| v.is_finite()), "{key} missing or not finite in {last:?}");
    }
    let d_weight = last["d_weight"];
    assert!((0.0..=0.75 * 1e4).contains(&d_weight), "adaptive weight {d_weight} outside [0, disc_weight * 1e4]");
    let d_after = trainer_discriminator(&trainer);
    assert_ne!(d_before, d_after, "the discriminator did not change in the GAN phase");
    assert!(run.join(CHECKPOINT_FILE).exists());

    // A new trainer on the same run directory continues from step 3 with the same weights.
    let params = trainer.parameters().unwrap();
    let resumed = VqganTrainer::new(&client(), config(&data, &run, &extra)).unwrap();
    assert_eq!(resumed.step, 3);
    assert_eq!(resumed.parameters().unwrap(), params);
    assert_eq!(trainer_discriminator(&resumed), d_after);
    std::fs::remove_dir_all(&root).ok();
}

/// The discriminator parameters on the first device.
fn trainer_discriminator(t: &VqganTrainer) -> Vec<HostTensor> {
    t.discriminator_parameters().unwrap().into_values().collect()
}

#[test]
fn config_errors_name_the_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/vqgan/tiny.yaml");
    let err = |overrides: &[&str]| {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        VqganTrainConfig::load(&path, &o).err().expect("config must be rejected").to_string()
    };
    assert!(err(&["model.ch=48"]).contains("model.ch (48) must be a multiple of the 32 GroupNorm groups"));
    assert!(err(&["model.resolution=30"]).contains("model.resolution (30) must be divisible by the downsampling factor 4"));
    assert!(err(&["model.ch_mult=[]"]).contains("model.ch_mult must list at least one level"));
    assert!(err(&["discriminator.ndf=0"]).contains("discriminator.ndf"));
    assert!(err(&["loss.disc_weight=-1"]).contains("loss.disc_weight must be a finite non-negative number"));
    assert!(err(&["loss.vgg16=vgg.safetensors"]).contains("loss.vgg16 and loss.lpips must be given together"));
    assert!(err(&["train.dtype=bf16"]).contains("train.dtype must be f32"));
    assert!(err(&["disc_optimizer.kind=sgd"]).contains("disc_optimizer.kind 'sgd'"));
    assert!(err(&["model.n_embedd=3"]).contains("n_embedd"));
    // Model files name the problem too.
    let e = load_weights(Path::new("/nonexistent/vqgan.safetensors")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/vqgan.safetensors"), "{e}");
}
