//! VQGAN training: a tiny model learns to reconstruct the shapes dataset; the
//! GAN phase runs and updates the discriminator; checkpoints resume; config
//! errors name the key.
mod common;
use common::*;
use dalle_xla::checkpoint::StopSignal;
use dalle_xla::data::images::{ImageIndex, ImageLoader, LoaderOptions};
use dalle_xla::data::shapes;
use dalle_xla::models::vqgan::{checkpoint_weights, load_weights, psnr, weights_file, VqganCodec, VqganTrainConfig, VqganTrainer};
use dalle_xla::train::{fit, FitOptions, Outcome, RunDir, StepMetrics, Trainable};
use dalle_xla::HostTensor;
use std::collections::BTreeMap;
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

/// Opens the run directory (resuming its newest checkpoint) and trains to `train.steps` with the shared loop.
fn train(trainer: &mut VqganTrainer, config: &VqganTrainConfig) -> (Outcome, Vec<StepMetrics>) {
    let yaml = serde_yaml::to_string(config).unwrap();
    let (mut run, restored) = RunDir::open(&config.train.run_dir, &yaml, &config.checkpoint, &trainer.tensor_types()).unwrap();
    if let Some(ckpt) = &restored {
        trainer.restore(ckpt).unwrap();
    }
    let stop = StopSignal::new();
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "vqgan test".into() };
    let mut logged = Vec::new();
    let outcome = fit(trainer, &mut run, &options, |m| {
        println!("{m:?}");
        logged.push(m.clone());
    })
    .unwrap();
    (outcome, logged)
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
    let eval_set = format!("data.eval_images={}", eval_dir.display());
    let cfg = config(&train_dir, &root.join("run"), &[&format!("train.steps={steps}"), "loss.disc_start=100000", &eval_set, "train.eval_every=150"]);
    let mut trainer = VqganTrainer::new(&client(), cfg.clone()).unwrap();
    let before = psnr(trainer.eval_mse().unwrap().unwrap());
    let started = std::time::Instant::now();
    let (outcome, logged) = train(&mut trainer, &cfg);
    assert_eq!(outcome, Outcome::Finished { step: steps });
    let after = psnr(trainer.eval_mse().unwrap().unwrap());
    assert_eq!(logged.last().and_then(|m| m.eval_loss).map(psnr), Some(after), "the loop's last evaluation is the final PSNR");
    println!("PSNR on held-out shapes: untrained {before:.2} dB, after {steps} steps {after:.2} dB (threshold {PSNR_THRESHOLD_DB} dB), {:.1?}", started.elapsed());
    assert!(before < PSNR_THRESHOLD_DB - 5.0, "the untrained model is already at {before:.2} dB");
    assert!(after >= PSNR_THRESHOLD_DB, "trained PSNR {after:.2} dB is below {PSNR_THRESHOLD_DB} dB");

    // The exported weights reproduce the trained model's reconstructions.
    let eval: Vec<HostTensor> = loader(&eval_dir, 8, 0, false).take(1).map(|b| b.unwrap().pixels).collect();
    let params: Vec<(String, HostTensor)> = trainer.parameters().unwrap().into_iter().collect();
    let file = root.join("vqgan.safetensors");
    std::fs::write(&file, weights_file(&cfg.model, &params).unwrap()).unwrap();
    let (model, weights) = load_weights(&file).unwrap();
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
    let cfg = config(&data, &run, &extra);
    let mut trainer = VqganTrainer::new(&client(), cfg.clone()).unwrap();
    let d_before: Vec<HostTensor> = trainer_discriminator(&trainer);
    let (outcome, logged) = train(&mut trainer, &cfg);
    assert_eq!(outcome, Outcome::Finished { step: 3 });
    let last = logged.last().expect("the last step is logged");
    assert!(last.loss.is_finite());
    for key in ["pixel", "codebook", "g_loss", "d_weight", "d_loss", "logits_real", "logits_fake"] {
        assert!(last.extra.get(key).is_some_and(|v| v.is_finite()), "{key} missing or not finite in {last:?}");
    }
    let d_weight = last.extra["d_weight"];
    assert!((0.0..=0.75 * 1e4).contains(&d_weight), "adaptive weight {d_weight} outside [0, disc_weight * 1e4]");
    let d_after = trainer_discriminator(&trainer);
    assert_ne!(d_before, d_after, "the discriminator did not change in the GAN phase");

    // A new trainer on the same run directory resumes at step 3 with the same
    // weights, and goes on to step 4.
    let params = trainer.parameters().unwrap();
    let longer = config(&data, &run, &[&extra[..], &["train.steps=4"]].concat());
    let mut resumed = VqganTrainer::new(&client(), longer.clone()).unwrap();
    let yaml = serde_yaml::to_string(&longer).unwrap();
    let (_, restored) = RunDir::open(&longer.train.run_dir, &yaml, &longer.checkpoint, &resumed.tensor_types()).unwrap();
    let ckpt = restored.expect("the finished run left a checkpoint");
    assert_eq!(ckpt.step, 3);
    let exported: BTreeMap<String, HostTensor> = checkpoint_weights(&ckpt).into_iter().collect();
    assert_eq!(exported, params, "the checkpoint's autoencoder weights");
    resumed.restore(&ckpt).unwrap();
    assert_eq!(resumed.step, 3);
    assert_eq!(resumed.parameters().unwrap(), params);
    assert_eq!(trainer_discriminator(&resumed), d_after);
    let (outcome, _) = train(&mut resumed, &longer);
    assert_eq!(outcome, Outcome::Finished { step: 4 });
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
    assert!(err(&["checkpoint.keep_last=0"]).contains("checkpoint.keep_last"));
    assert!(e.contains("/nonexistent/vqgan.safetensors"), "{e}");
}

#[test]
fn shipped_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (f16, _) = VqganTrainConfig::load(&root.join("configs/vqgan/f16_16384.yaml"), &[]).unwrap();
    assert_eq!(f16.model, dalle_xla::models::vqgan::VqganConfig::f16_16384());
    assert_eq!((f16.model.grid_size(), f16.model.image_length()), (16, 256));
    let (tiny, _) = VqganTrainConfig::load(&root.join("configs/vqgan/tiny.yaml"), &[]).unwrap();
    assert_eq!((tiny.model.grid_size(), tiny.model.image_length()), (8, 64));
}
