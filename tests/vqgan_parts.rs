//! VQGAN pieces against plain-Rust references: the straight-through estimator,
//! nearest-code search, the codebook loss, the hinge loss, and the image
//! loader's skip counting on the data the VQGAN trains on.
mod common;
use common::*;
use dalle_xla::data::images::{ImageIndex, ImageLoader, LoaderOptions};
use dalle_xla::graph::{grad, Graph};
use dalle_xla::models::vqgan::{hinge_discriminator_loss, Vqgan, VqganConfig};
use dalle_xla::nn::VarBuilder;
use dalle_xla::{DType, HostTensor};

fn small_config() -> VqganConfig {
    VqganConfig { n_embed: 8, embed_dim: 4, ..VqganConfig::tiny() }
}

#[test]
fn straight_through_gradient_reaches_the_encoder_output_unchanged() {
    let g = Graph::new("straight_through");
    let z = g.param("z", DType::F32, &[2, 3, 3, 4]);
    let target = g.param("target", DType::F32, &[2, 3, 3, 4]);
    let vb = VarBuilder::new(&g, DType::F32);
    let q = Vqgan::new(small_config()).quantize(&vb, &z).unwrap();
    // A loss on the quantized output only: L = sum(z_q * t) + sum(z_q^2).
    let loss = q.z_q.mul(&target).unwrap().sum_all().unwrap().add(&q.z_q.square().unwrap().sum_all().unwrap()).unwrap();
    let dz = grad(&loss, &[&z]).unwrap().remove(0);
    let mut rng = rng(7);
    let zv = random(&mut rng, DType::F32, &[2, 3, 3, 4], -1.0, 1.0);
    let tv = random(&mut rng, DType::F32, &[2, 3, 3, 4], -1.0, 1.0);
    let cv = random(&mut rng, DType::F32, &[8, 4], -1.0, 1.0);
    let out = compile(&g, &[&dz, &q.z_q, &q.indices]).run(&[&zv, &tv, &cv]).unwrap();
    let (z, t, c, zq) = (zv.to_f64_vec(), tv.to_f64_vec(), cv.to_f64_vec(), out[1].to_f64_vec());

    // Forward: every vector is replaced by its nearest codebook row (brute force here).
    let idx = out[2].to_vec::<i32>().unwrap();
    for (m, v) in z.chunks(4).enumerate() {
        let dist = |k: usize| (0..4).map(|d| (v[d] - c[k * 4 + d]).powi(2)).sum::<f64>();
        let best = (0..8).min_by(|a, b| dist(*a).total_cmp(&dist(*b))).unwrap();
        assert_eq!(idx[m] as usize, best, "nearest code of vector {m}");
        assert_close(&zq[m * 4..m * 4 + 4], &c[best * 4..best * 4 + 4], 1e-6, "quantized vector");
    }
    // Backward: dL/dz equals dL/dz_q = t + 2 z_q, as if quantization were the identity.
    let dzq: Vec<f64> = t.iter().zip(&zq).map(|(t, q)| t + 2.0 * q).collect();
    assert_close(&out[0].to_f64_vec(), &dzq, 1e-6, "dL/dz vs dL/dz_q");
}

#[test]
fn codebook_loss_and_its_gradients_follow_the_vq_vae_objective() {
    let config = small_config();
    let beta = config.beta;
    let g = Graph::new("codebook_loss");
    let z = g.param("z", DType::F32, &[1, 2, 2, 4]);
    let vb = VarBuilder::new(&g, DType::F32);
    let q = Vqgan::new(config).quantize(&vb, &z).unwrap();
    let codebook = vb.tensors()[0].clone();
    let grads = grad(&q.codebook_loss, &[&z, &codebook]).unwrap();
    let mut rng = rng(8);
    let zv = random(&mut rng, DType::F32, &[1, 2, 2, 4], -1.0, 1.0);
    let cv = random(&mut rng, DType::F32, &[8, 4], -1.0, 1.0);
    let out = compile(&g, &[&q.codebook_loss, &grads[0], &grads[1], &q.indices]).run(&[&zv, &cv]).unwrap();
    let (z, c) = (zv.to_f64_vec(), cv.to_f64_vec());
    let idx = out[3].to_vec::<i32>().unwrap();
    let n = z.len() as f64;
    let (mut loss, mut dz, mut dc) = (0.0, vec![0.0; z.len()], vec![0.0; c.len()]);
    for (m, &k) in idx.iter().enumerate() {
        for d in 0..4 {
            let diff = z[m * 4 + d] - c[k as usize * 4 + d];
            loss += (1.0 + beta) * diff * diff / n;
            dz[m * 4 + d] += beta * 2.0 * diff / n; // the commitment term pulls z towards e
            dc[k as usize * 4 + d] -= 2.0 * diff / n; // the codebook term pulls e towards z
        }
    }
    assert_close(&out[0].to_f64_vec(), &[loss], 1e-5, "codebook loss");
    assert_close(&out[1].to_f64_vec(), &dz, 1e-5, "d loss / d z");
    assert_close(&out[2].to_f64_vec(), &dc, 1e-5, "d loss / d codebook");
}

#[test]
fn hinge_loss_matches_its_definition() {
    let g = Graph::new("hinge");
    let real = g.param("real", DType::F32, &[2, 3]);
    let fake = g.param("fake", DType::F32, &[2, 3]);
    let loss = hinge_discriminator_loss(&real, &fake).unwrap();
    let r = [-2.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    let f = [-3.0, -1.0, -0.2, 0.0, 0.7, 2.0];
    let rv = HostTensor::from_f64(DType::F32, &[2, 3], &r).unwrap();
    let fv = HostTensor::from_f64(DType::F32, &[2, 3], &f).unwrap();
    let got = run1(&g, &loss, &[&rv, &fv]).to_f64_vec();
    let relu = |x: f64| x.max(0.0);
    let want = 0.5 * (r.iter().map(|x| relu(1.0 - x)).sum::<f64>() / 6.0 + f.iter().map(|x| relu(1.0 + x)).sum::<f64>() / 6.0);
    assert_close(&got, &[want], 1e-6, "hinge loss");
}

#[test]
fn unreadable_images_are_skipped_counted_and_named() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-bad-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dalle_xla::data::shapes::generate(6, 32, 4, &dir).unwrap();
    std::fs::write(dir.join("broken.png"), b"not a png at all").unwrap();
    std::fs::write(dir.join("broken.txt"), "a broken image").unwrap();
    let first = dir.join(format!("{}.png", dalle_xla::data::shapes::file_stem(0)));
    let full = std::fs::read(first).unwrap();
    std::fs::write(dir.join("truncated.png"), &full[..full.len() / 2]).unwrap();
    std::fs::write(dir.join("truncated.txt"), "half an image").unwrap();
    let options = LoaderOptions { resolution: 32, batch_size: 2, shuffle: false, epochs: Some(1), workers: 1, ..Default::default() };
    let mut loader = ImageLoader::start(ImageIndex::open(&dir).unwrap(), options).unwrap();
    let mut images = 0;
    for batch in loader.by_ref() {
        images += batch.unwrap().pixels.shape[0];
    }
    assert_eq!(images, 6, "every readable image is served once");
    let report = loader.skipped();
    assert_eq!(report.unreadable(), 2, "{report}");
    let text = report.to_string();
    assert!(text.contains("broken.png") && text.contains("truncated.png"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
