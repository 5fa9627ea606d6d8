//! The LPIPS perceptual distance on VGG16 features: weight files in PyTorch
//! names and layouts load (or fail naming the tensor), and the distance
//! behaves as a distance (zero on equal images, symmetric, positive, larger
//! for larger changes).
mod common;
use common::*;
use dalle_xla::graph::Graph;
use dalle_xla::models::vqgan::{save_safetensors, select_params, Lpips};
use dalle_xla::nn::VarBuilder;
use dalle_xla::{DType, HostTensor};
use std::path::{Path, PathBuf};

/// VGG16 `features` conv layers as torchvision numbers them: (index, c_in, c_out).
const CONVS: [(usize, i64, i64); 13] = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
];
const HEADS: [i64; 5] = [64, 128, 256, 512, 512];

fn write_weights(dir: &Path, drop: Option<&str>) -> (PathBuf, PathBuf) {
    let mut rng = rng(11);
    let mut vgg = Vec::new();
    for (i, c_in, c_out) in CONVS {
        let std = (2.0 / (9 * c_in) as f64).sqrt();
        vgg.push((format!("features.{i}.weight"), random(&mut rng, DType::F32, &[c_out, c_in, 3, 3], -std, std)));
        vgg.push((format!("features.{i}.bias"), random(&mut rng, DType::F32, &[c_out], -0.01, 0.01)));
    }
    let heads: Vec<(String, HostTensor)> =
        HEADS.iter().enumerate().map(|(k, c)| (format!("lin{k}.model.1.weight"), random(&mut rng, DType::F32, &[1, *c, 1, 1], 0.0, 0.1))).collect();
    vgg.retain(|(n, _)| Some(n.as_str()) != drop);
    let (v, h) = (dir.join("vgg16.safetensors"), dir.join("lpips.safetensors"));
    save_safetensors(&v, &vgg).unwrap();
    save_safetensors(&h, &heads).unwrap();
    (v, h)
}

#[test]
fn lpips_loads_pytorch_weights_and_behaves_as_a_distance() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-lpips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (v, h) = write_weights(&dir, None);
    let lpips = Lpips::load(&v, &h).unwrap();
    assert_eq!(lpips.weights.len(), 13 * 2 + 5);
    // OIHW [64, 3, 3, 3] becomes HWIO [3, 3, 3, 64] with the same values.
    let torch = dalle_xla::models::vqgan::load_safetensors(&v).unwrap()["features.0.weight"].to_f64_vec();
    let ours = lpips.weights["vgg16.features_0.kernel"].clone();
    assert_eq!(ours.shape, vec![3, 3, 3, 64]);
    let ours = ours.to_f64_vec();
    for (o, i, y, x) in [(0, 0, 0, 0), (5, 2, 1, 0), (63, 1, 2, 2)] {
        assert_eq!(ours[((y * 3 + x) * 3 + i) * 64 + o], torch[((o * 3 + i) * 3 + y) * 3 + x]);
    }

    let g = Graph::new("lpips");
    let shape = [4, 32, 32, 3];
    let x = g.param("x", DType::F32, &shape);
    let y = g.param("y", DType::F32, &shape);
    let vb = VarBuilder::new(&g, DType::F32);
    let d_xy = Lpips::distance(&vb, &x, &y).unwrap();
    let d_yx = Lpips::distance(&vb, &y, &x).unwrap();
    let d_xx = Lpips::distance(&vb, &x, &x).unwrap();
    let weights = select_params(&lpips.weights, &vb.specs(), "lpips").unwrap();
    let mut r = rng(12);
    let xv = random(&mut r, DType::F32, &shape, -1.0, 1.0);
    // y: image 0 equal to x, images 1..3 with growing noise.
    let noise = random(&mut r, DType::F32, &shape, -1.0, 1.0).to_f64_vec();
    let per = 32 * 32 * 3;
    let yv: Vec<f64> = xv.to_f64_vec().iter().enumerate().map(|(i, v)| v + noise[i] * [0.0, 0.05, 0.2, 0.8][i / per]).collect();
    let yv = HostTensor::from_f64(DType::F32, &shape, &yv).unwrap();
    let mut inputs = vec![&xv, &yv];
    inputs.extend(weights.iter());
    let out = compile(&g, &[&d_xy, &d_yx, &d_xx]).run(&inputs).unwrap();
    let (xy, yx, xx) = (out[0].to_f64_vec(), out[1].to_f64_vec(), out[2].to_f64_vec());
    assert_close(&xx, &[0.0; 4], 1e-6, "d(x, x)");
    assert_close(&xy, &yx, 1e-5, "symmetry");
    assert!(xy[0].abs() < 1e-6 && xy[1] > 0.0, "{xy:?}");
    assert!(xy[1] < xy[2] && xy[2] < xy[3], "distance must grow with the change: {xy:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_or_misshapen_lpips_weights_are_named() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-lpips-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (v, h) = write_weights(&dir, Some("features.12.bias"));
    let e = Lpips::load(&v, &h).err().unwrap().to_string();
    assert!(e.contains("vgg16.safetensors has no tensor 'features.12.bias'"), "{e}");
    let (v, h) = write_weights(&dir, None);
    save_safetensors(&h, &[("lin0.model.1.weight".to_string(), HostTensor::zeros(DType::F32, &[1, 3, 1, 1]))]).unwrap();
    let e = Lpips::load(&v, &h).err().unwrap().to_string();
    assert!(e.contains("'lin0.model.1.weight' has shape [1, 3, 1, 1], expected [1, 64, 1, 1]"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_with_lpips_weights_adds_the_perceptual_loss() {
    use dalle_xla::models::vqgan::{VqganTrainConfig, VqganTrainer};
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-lpips-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (v, h) = write_weights(&dir, None);
    let data = dir.join("shapes");
    dalle_xla::data::shapes::generate(8, 32, 6, &data).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/vqgan/tiny.yaml");
    let overrides: Vec<String> = vec![
        format!("data.images={}", data.display()),
        format!("train.run_dir={}", dir.join("run").display()),
        format!("loss.vgg16={}", v.display()),
        format!("loss.lpips={}", h.display()),
        "loss.disc_start=100".into(),
        "train.steps=1".into(),
        "train.batch_size=2".into(),
        "model.ch_mult=[1,2]".into(),
        "model.attn_resolutions=[]".into(),
    ];
    let (config, _) = VqganTrainConfig::load(&path, &overrides).unwrap();
    let mut trainer = VqganTrainer::new(&client(), config).unwrap();
    let pixels = random(&mut rng(13), DType::F32, &[2, 32, 32, 3], -1.0, 1.0);
    let stats = trainer.train_on(&pixels).unwrap();
    // An untrained autoencoder's output differs from its input: the distance is positive and counted.
    assert!(stats["perceptual"] > 0.0, "{stats:?}");
    assert_close(&[stats["loss"]], &[stats["pixel"] + stats["perceptual"] + stats["codebook"]], 1e-5, "loss = pixel + perceptual + codebook");
    std::fs::remove_dir_all(&dir).ok();
}
