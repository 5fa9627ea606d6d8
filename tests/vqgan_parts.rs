//! VQGAN pieces against plain-Rust references: the straight-through estimator,
//! nearest-code search, the codebook loss, the pixel and hinge losses, and the image
//! loader's skip counting on the data the VQGAN trains on.
mod common;
use common::*;
use dalle_xla::data::images::{ImageIndex, ImageLoader, LoaderOptions};
use dalle_xla::graph::{grad, Graph};
use dalle_xla::models::vqgan::{hinge_discriminator_loss, LossConfig, PixelLoss, Vqgan, VqganConfig};
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
fn pixel_losses_are_the_mean_absolute_and_mean_squared_difference() {
    let g = Graph::new("pixel");
    let a = g.param("a", DType::F32, &[2, 3]);
    let b = g.param("b", DType::F32, &[2, 3]);
    let l1 = PixelLoss::L1.distance(&a, &b).unwrap();
    let l2 = PixelLoss::L2.distance(&a, &b).unwrap();
    let (x, y) = ([-1.0, -0.5, 0.0, 0.25, 0.9, 1.0], [1.0, -0.4, 0.3, 0.25, -0.2, 0.5]);
    let xv = HostTensor::from_f64(DType::F32, &[2, 3], &x).unwrap();
    let yv = HostTensor::from_f64(DType::F32, &[2, 3], &y).unwrap();
    let out = compile(&g, &[&l1, &l2]).run(&[&xv, &yv]).unwrap();
    let diffs: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p - q).collect();
    assert_close(&out[0].to_f64_vec(), &[diffs.iter().map(|d| d.abs()).sum::<f64>() / 6.0], 1e-6, "L1");
    assert_close(&out[1].to_f64_vec(), &[diffs.iter().map(|d| d * d).sum::<f64>() / 6.0], 1e-6, "L2");
    // taming's L1 stays the default; the config names the other one.
    assert_eq!(LossConfig::default().pixel_loss, PixelLoss::L1);
    let l2_config: LossConfig = serde_yaml::from_str("pixel_loss: l2").unwrap();
    assert_eq!(l2_config.pixel_loss, PixelLoss::L2);
    let err = serde_yaml::from_str::<LossConfig>("pixel_loss: l3").unwrap_err().to_string();
    assert!(err.contains("l1") && err.contains("l2"), "{err}");
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

/// Finite scalar quantization against a plain-Rust reference of Mentzer et
/// al.'s bound-and-round: the grid values, the mixed-radix token, the lookup
/// back from tokens, every code reachable, and the straight-through gradient.
#[test]
fn finite_scalar_quantization_rounds_to_the_grid_and_its_tokens_decode_back() {
    let levels = vec![4i64, 3, 2];
    let config = VqganConfig { fsq_levels: levels.clone(), embed_dim: 3, n_embed: 24, resolution: 16, ..VqganConfig::tiny() };
    config.validate().unwrap();
    let g = Graph::new("fsq");
    let z = g.param("z", DType::F32, &[2, 4, 4, 3]);
    let vb = VarBuilder::new(&g, DType::F32);
    let model = Vqgan::new(config);
    let q = model.quantize(&vb, &z).unwrap();
    assert!(vb.specs().is_empty(), "no codebook parameter: {:?}", vb.specs().iter().map(|s| &s.name).collect::<Vec<_>>());
    let looked_up = model.lookup(&vb, &q.indices).unwrap();
    let dz = grad(&q.z_q.sum_all().unwrap(), &[&z]).unwrap().remove(0);
    // Wide enough to reach both ends of every channel's range.
    let zv = random(&mut rng(9), DType::F32, &[2, 4, 4, 3], -4.0, 4.0);
    let out = compile(&g, &[&q.z_q, &q.indices, &looked_up, &dz, &q.codebook_loss]).run(&[&zv]).unwrap();
    let (zq, tokens, back, dz) = (out[0].to_f64_vec(), out[1].to_vec::<i32>().unwrap(), out[2].to_f64_vec(), out[3].to_f64_vec());
    assert_eq!(out[1].shape, vec![2, 16]);
    assert_eq!(out[4].to_f64_vec(), vec![0.0], "without fsq_commitment, FSQ has no codebook loss");
    let mut seen = std::collections::BTreeSet::new();
    for (m, v) in zv.to_f64_vec().chunks(3).enumerate() {
        let mut token = 0i64;
        let mut place = 1i64;
        for (d, &l) in levels.iter().enumerate() {
            let half_range = (l as f64 - 1.0) * (1.0 - 1e-3) / 2.0;
            let offset = if l % 2 == 0 { 0.5 } else { 0.0 };
            let bounded = (v[d] + (offset / half_range).tan()).tanh() * half_range - offset;
            let value = bounded.round();
            let half_width = (l / 2) as f64;
            let digit = value + half_width;
            assert!((0.0..l as f64).contains(&digit), "channel {d}: digit {digit} outside 0..{l}");
            assert!((zq[m * 3 + d] - value / half_width).abs() < 1e-6, "vector {m} channel {d}: {} vs {}", zq[m * 3 + d], value / half_width);
            // Straight through: d(z_q)/dz is the bound's slope over the grid's half width.
            let slope = (1.0 - (v[d] + (offset / half_range).tan()).tanh().powi(2)) * half_range / half_width;
            assert!((dz[m * 3 + d] - slope).abs() < 1e-5, "gradient of vector {m} channel {d}: {} vs {slope}", dz[m * 3 + d]);
            token += digit as i64 * place;
            place *= l;
        }
        assert_eq!(tokens[m] as i64, token, "token of vector {m}");
        seen.insert(token);
    }
    assert_close(&back, &zq, 1e-6, "lookup(tokens) vs the quantized latents");

    // The 24 tokens decode to 24 distinct grid points in [-1, 1].
    let grid_config = VqganConfig { fsq_levels: levels.clone(), embed_dim: 3, n_embed: 24, resolution: 8, ch_mult: vec![1, 1, 1], ..VqganConfig::tiny() };
    assert_eq!(grid_config.image_length(), 4);
    let g = Graph::new("fsq_codes");
    let t = g.param("tokens", DType::I32, &[6, 4]);
    let vb = VarBuilder::new(&g, DType::F32);
    let points = Vqgan::new(grid_config).lookup(&vb, &t).unwrap();
    let all: Vec<i32> = (0..24).collect();
    let out = compile(&g, &[&points]).run(&[&HostTensor::new(&[6, 4], &all).unwrap()]).unwrap();
    let p = out[0].to_f64_vec();
    let distinct: std::collections::BTreeSet<Vec<i64>> = p.chunks(3).map(|c| c.iter().map(|v| (v * 1000.0).round() as i64).collect()).collect();
    assert_eq!(distinct.len(), 24, "24 tokens decode to 24 distinct grid points");
    assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(seen.len() > 8, "random latents reach many codes: {seen:?}");
}

/// `model.fsq_commitment`: the codebook loss is that weight times the mean
/// squared distance of the bounded latents to their grid points (on the
/// [-1, 1] scale), and its gradient pulls each latent towards its own grid
/// point (never across a rounding boundary).
#[test]
fn fsq_commitment_pulls_latents_to_the_middle_of_their_grid_cell() {
    let levels = vec![5i64, 4];
    let weight = 0.5;
    let config = VqganConfig { fsq_levels: levels.clone(), embed_dim: 2, n_embed: 20, resolution: 16, fsq_commitment: weight, ..VqganConfig::tiny() };
    config.validate().unwrap();
    let g = Graph::new("fsq_commitment");
    let z = g.param("z", DType::F32, &[1, 4, 4, 2]);
    let vb = VarBuilder::new(&g, DType::F32);
    let q = Vqgan::new(config).quantize(&vb, &z).unwrap();
    let dz = grad(&q.codebook_loss, &[&z]).unwrap().remove(0);
    let zv = random(&mut rng(3), DType::F32, &[1, 4, 4, 2], -2.0, 2.0);
    let out = compile(&g, &[&q.codebook_loss, &dz]).run(&[&zv]).unwrap();
    let (loss, dz) = (out[0].to_f64_vec()[0], out[1].to_f64_vec());
    let values = zv.to_f64_vec();
    let count = values.len() as f64;
    let mut expected = 0.0;
    for (i, &v) in values.iter().enumerate() {
        let l = levels[i % 2];
        let half_range = (l as f64 - 1.0) * (1.0 - 1e-3) / 2.0;
        let offset = if l % 2 == 0 { 0.5 } else { 0.0 };
        let shift = (offset / half_range).tan();
        let bounded = (v + shift).tanh() * half_range - offset;
        let half_width = (l / 2) as f64;
        let distance = (bounded - bounded.round()) / half_width;
        expected += distance * distance / count;
        let slope = (1.0 - (v + shift).tanh().powi(2)) * half_range;
        let gradient = weight * 2.0 * distance / half_width * slope / count;
        assert!((dz[i] - gradient).abs() < 1e-6, "gradient of element {i}: {} vs {gradient}", dz[i]);
        // Descending the gradient moves the latent towards its grid point.
        assert!(dz[i] * (bounded - bounded.round()) >= 0.0, "element {i} is pulled away from its grid point");
    }
    assert!(expected > 1e-3, "random latents sit off their grid points: {expected}");
    assert!((loss - weight * expected).abs() < 1e-6, "commitment {loss} vs {}", weight * expected);
}

#[test]
fn fsq_and_l2_code_settings_are_checked() {
    let fsq = |levels: Vec<i64>, embed_dim: i64, n_embed: i64| VqganConfig { fsq_levels: levels, embed_dim, n_embed, ..VqganConfig::tiny() }.validate();
    assert!(fsq(vec![8, 6, 5], 3, 240).is_ok());
    assert!(fsq(vec![8, 6, 5], 4, 240).unwrap_err().contains("model.embed_dim (4) must equal the number of model.fsq_levels"));
    assert!(fsq(vec![8, 6, 5], 3, 256).unwrap_err().contains("model.n_embed (256) must equal the product"));
    assert!(fsq(vec![8, 1, 5], 3, 40).unwrap_err().contains("model.fsq_levels entries must be at least 2, got 1"));
    let both = VqganConfig { fsq_levels: vec![4, 4], embed_dim: 2, n_embed: 16, l2_codes: true, ..VqganConfig::tiny() };
    assert!(both.validate().unwrap_err().contains("model.l2_codes"));
    let commitment = |levels: Vec<i64>, weight: f64| {
        let tiny = VqganConfig::tiny();
        let (embed_dim, n_embed) = if levels.is_empty() { (tiny.embed_dim, tiny.n_embed) } else { (levels.len() as i64, levels.iter().product()) };
        VqganConfig { embed_dim, n_embed, fsq_levels: levels, fsq_commitment: weight, ..tiny }.validate()
    };
    assert!(commitment(vec![4, 4], 0.1).is_ok());
    assert!(commitment(vec![4, 4], -0.1).unwrap_err().contains("model.fsq_commitment must be non-negative"));
    assert!(commitment(vec![], 0.1).unwrap_err().contains("model.fsq_commitment applies to model.fsq_levels"));
    let groups = VqganConfig { norm_groups: 5, ..VqganConfig::tiny() };
    assert!(groups.validate().unwrap_err().contains("model.norm_groups"));
}

/// With `l2_codes` the lookup is by cosine similarity and the quantized
/// vectors are unit-length codebook rows.
#[test]
fn l2_codes_pick_the_most_similar_direction() {
    let config = VqganConfig { l2_codes: true, ..small_config() };
    let g = Graph::new("l2_codes");
    let z = g.param("z", DType::F32, &[1, 2, 2, 4]);
    let vb = VarBuilder::new(&g, DType::F32);
    let q = Vqgan::new(config).quantize(&vb, &z).unwrap();
    let mut rng = rng(10);
    let zv = random(&mut rng, DType::F32, &[1, 2, 2, 4], -1.0, 1.0);
    let cv = random(&mut rng, DType::F32, &[8, 4], -1.0, 1.0);
    let out = compile(&g, &[&q.z_q, &q.indices]).run(&[&zv, &cv]).unwrap();
    let (z, c, zq, idx) = (zv.to_f64_vec(), cv.to_f64_vec(), out[0].to_f64_vec(), out[1].to_vec::<i32>().unwrap());
    let unit = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    for (m, v) in z.chunks(4).enumerate() {
        let cosine = |k: usize| unit(v).iter().zip(unit(&c[k * 4..k * 4 + 4])).map(|(a, b)| a * b).sum::<f64>();
        let best = (0..8).max_by(|a, b| cosine(*a).total_cmp(&cosine(*b))).unwrap();
        assert_eq!(idx[m] as usize, best, "most similar code of vector {m}");
        assert_close(&zq[m * 4..m * 4 + 4], &unit(&c[best * 4..best * 4 + 4]), 1e-5, "unit codebook row");
    }
}
