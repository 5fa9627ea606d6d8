//! The in-graph counter-based RNG: Threefry known answers, reproducibility,
//! and the statistics of the derived distributions.
mod common;
use common::*;
use dalle_xla::graph::{grad, random, Graph, Tensor};
use dalle_xla::{DType, HostTensor};

fn key_value(a: u32, b: u32) -> HostTensor {
    HostTensor::new(&[2], &[a, b]).unwrap()
}

fn u32s(h: &HostTensor) -> Vec<u32> {
    h.to_vec::<u32>().unwrap()
}

/// Runs `f(key)` for a key parameter and returns the output.
fn sample(what: &str, k: &HostTensor, f: impl Fn(&Tensor) -> dalle_xla::graph::Result<Tensor>) -> HostTensor {
    let g = Graph::new(what);
    let key = g.param("key", DType::U32, &[2]);
    let y = f(&key).unwrap_or_else(|e| panic!("{what}: {e}"));
    run1(&g, &y, &[k])
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

#[test]
fn threefry2x32_matches_the_published_known_answers() {
    // Random123's kat_vectors for threefry2x32 with 20 rounds (also JAX's test):
    // (key, counter) -> output.
    let keys0 = [0u32, 0xffff_ffff, 0x1319_8a2e];
    let keys1 = [0u32, 0xffff_ffff, 0x0370_7344];
    let ctr0 = [0u32, 0xffff_ffff, 0x243f_6a88];
    let ctr1 = [0u32, 0xffff_ffff, 0x85a3_08d3];
    let want0 = [0x6b20_0159u32, 0x1cb9_96fc, 0xc492_3a9c];
    let want1 = [0x99ba_4efeu32, 0xbb00_2be7, 0x483d_f7a0];
    let g = Graph::new("threefry_kat");
    let p: Vec<Tensor> = (0..4).map(|i| g.param(&format!("p{i}"), DType::U32, &[3])).collect();
    let (a, b) = random::threefry2x32(&p[0], &p[1], &p[2], &p[3]).unwrap();
    let inputs: Vec<HostTensor> = [keys0, keys1, ctr0, ctr1].iter().map(|v| HostTensor::new(&[3], v).unwrap()).collect();
    let out = compile(&g, &[&a, &b]).run(&inputs.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(u32s(&out[0]), want0, "first output words");
    assert_eq!(u32s(&out[1]), want1, "second output words");
}

#[test]
fn same_key_gives_same_bits_across_compiles_and_different_keys_differ() {
    let bits = |k: &HostTensor| u32s(&sample("bits", k, |key| random::random_bits(key, &[10, 100])));
    let a = bits(&key_value(0, 42));
    let b = bits(&key_value(0, 42));
    assert_eq!(a, b, "two compiles of the same program with the same key");
    let c = bits(&key_value(0, 43));
    let d = bits(&key_value(1, 42));
    for (other, what) in [(&c, "low word changed"), (&d, "high word changed")] {
        let same = a.iter().zip(other.iter()).filter(|(x, y)| x == y).count();
        assert!(same <= 2, "{what}: {same} of 1000 words equal");
    }
    // Bits should not repeat within one draw either (1000 draws of 32 bits).
    let mut sorted = a.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert!(sorted.len() >= 998, "only {} distinct words in 1000", sorted.len());
}

#[test]
fn seed_key_split_and_fold_in_give_distinct_streams() {
    let g = Graph::new("keys");
    let key = random::key(&g, (7u64 << 32) | 9);
    let parts = random::split(&key, 3).unwrap();
    let folded = [random::fold_in_const(&key, 0).unwrap(), random::fold_in_const(&key, 1).unwrap()];
    let mut outs = vec![key.clone()];
    outs.extend(parts.iter().cloned());
    outs.extend(folded.iter().cloned());
    let refs: Vec<&Tensor> = outs.iter().collect();
    let vals: Vec<Vec<u32>> = compile(&g, &refs).run(&[]).unwrap().iter().map(u32s).collect();
    assert_eq!(vals[0], vec![7, 9], "key(seed) holds the seed's high and low words");
    // The parent and its three children are pairwise distinct.
    for i in 0..4 {
        for j in 0..i {
            assert_ne!(vals[i], vals[j], "keys {i} and {j} coincide");
        }
    }
    // A split key is Threefry of the parent key at counter (0, i), the same as fold_in(i).
    assert_eq!(vals[1], vals[4], "split(key)[0] == fold_in(key, 0)");
    assert_eq!(vals[2], vals[5], "split(key)[1] == fold_in(key, 1)");
}

#[test]
fn uniform_mean_and_variance_on_1e5_samples() {
    let n = 100_000;
    for (dtype, lo, hi) in [(DType::F32, 0.0, 1.0), (DType::F64, -2.0, 3.0)] {
        let v = sample("uniform", &key_value(3, 4), |k| random::uniform(k, &[n], dtype, lo, hi)).to_f64_vec();
        assert!(v.iter().all(|x| *x >= lo && *x < hi), "{dtype}: values outside [{lo}, {hi})");
        let (m, var) = mean_var(&v);
        let w = hi - lo;
        // Five standard errors: sd(mean) = w / sqrt(12 n); sd(var) ~ w^2 sqrt((1/80 - 1/144) / n).
        let (want_m, want_var) = ((lo + hi) / 2.0, w * w / 12.0);
        assert!((m - want_m).abs() < 5.0 * w / (12.0 * n as f64).sqrt(), "{dtype}: mean {m}, want {want_m}");
        let sd_var = w * w * ((1.0 / 80.0 - 1.0 / 144.0) / n as f64).sqrt();
        assert!((var - want_var).abs() < 5.0 * sd_var, "{dtype}: variance {var}, want {want_var}");
    }
}

#[test]
fn normal_moments_and_one_sigma_mass() {
    let n = 100_000;
    let v = sample("normal", &key_value(5, 6), |k| random::normal(k, &[n], DType::F32)).to_f64_vec();
    assert!(v.iter().all(|x| x.is_finite()));
    let (m, var) = mean_var(&v);
    let nf = n as f64;
    assert!(m.abs() < 5.0 / nf.sqrt(), "mean {m}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(), "variance {var}");
    let inside = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / nf;
    let p = 0.682_689_492;
    assert!((inside - p).abs() < 5.0 * (p * (1.0 - p) / nf).sqrt(), "P(|x| < 1) = {inside}");
}

#[test]
fn bernoulli_and_dropout() {
    let n = 100_000;
    let hits = sample("bernoulli", &key_value(8, 9), |k| random::bernoulli(k, 0.3, &[n])).to_f64_vec();
    let p = hits.iter().sum::<f64>() / n as f64;
    assert!((p - 0.3).abs() < 5.0 * (0.21 / n as f64).sqrt(), "frequency {p}");

    // Dropout keeps x / (1 - rate) or zero, and its gradient is the same mask.
    let rate = 0.25;
    let g = Graph::new("dropout");
    let key = g.param("key", DType::U32, &[2]);
    let x = g.param("x", DType::F32, &[200, 50]);
    let y = random::dropout(&x, rate, &key).unwrap();
    let dx = grad(&y.sum_all().unwrap(), &[&x]).unwrap().remove(0);
    let mut r = rng(1);
    let xv = random(&mut r, DType::F32, &[200, 50], 1.0, 2.0);
    let out = compile(&g, &[&y, &dx]).run(&[&key_value(1, 2), &xv]).unwrap();
    let (yv, gv, xs) = (out[0].to_f64_vec(), out[1].to_f64_vec(), xv.to_f64_vec());
    let mut dropped = 0;
    for i in 0..xs.len() {
        if yv[i] == 0.0 {
            dropped += 1;
            assert_eq!(gv[i], 0.0, "dropped element {i} has gradient {}", gv[i]);
        } else {
            assert!((yv[i] - xs[i] / (1.0 - rate)).abs() < 1e-5, "kept element {i}: {} vs {}", yv[i], xs[i]);
            assert!((gv[i] - 1.0 / (1.0 - rate)).abs() < 1e-6, "kept element {i} has gradient {}", gv[i]);
        }
    }
    let frac = dropped as f64 / xs.len() as f64;
    assert!((frac - rate).abs() < 5.0 * (rate * (1.0 - rate) / xs.len() as f64).sqrt(), "dropped fraction {frac}");
    let e = random::dropout(&x, 1.0, &key).unwrap_err().to_string();
    assert!(e.contains("dropout") && e.contains("rate"), "{e}");
}

#[test]
fn categorical_frequencies_match_softmax() {
    let n = 100_000i64;
    let logits = [0.5f64, -1.0, 2.0, 0.0];
    let z: f64 = logits.iter().map(|l| l.exp()).sum();
    let probs: Vec<f64> = logits.iter().map(|l| l.exp() / z).collect();
    let out = sample("categorical", &key_value(11, 12), |k| {
        let l = k.graph().constant(HostTensor::new(&[4], &logits.map(|v| v as f32)).unwrap());
        random::categorical(k, &l.broadcast_to(&[n, 4])?, -1)
    });
    assert_eq!(out.dtype, DType::I32);
    assert_eq!(out.shape, vec![n]);
    let mut counts = [0f64; 4];
    for i in out.to_f64_vec() {
        counts[i as usize] += 1.0;
    }
    for (c, p) in counts.iter().zip(&probs) {
        let f = c / n as f64;
        assert!((f - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(), "frequency {f}, softmax {p}");
    }
}

#[test]
fn bad_keys_are_rejected_by_name() {
    let g = Graph::new("bad_key");
    let k = g.param("k", DType::I32, &[2]);
    let e = random::uniform(&k, &[3], DType::F32, 0.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("u32[2]") && e.contains("i32[2]"), "{e}");
    let k = g.param("k2", DType::U32, &[2]);
    let e = random::uniform(&k, &[3], DType::I32, 0.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("floating-point"), "{e}");
    let e = random::uniform(&k, &[3], DType::F32, 1.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("low < high"), "{e}");
}

#[test]
fn bits_split_fold_in_and_uniform_match_jax() {
    // Values printed by JAX 0.10.2 (threefry, partitionable mode, its default):
    // random.bits(PRNGKey(42), (6,), uint32), random.split(PRNGKey(42)),
    // random.fold_in(PRNGKey(42), 3), random.uniform(PRNGKey(42), (4,)).
    let g = Graph::new("jax_compat");
    let key = random::key(&g, 42);
    let bits = random::random_bits(&key, &[6]).unwrap();
    let split = random::split_stacked(&key, 2).unwrap();
    let folded = random::fold_in_const(&key, 3).unwrap();
    let u = random::uniform(&key, &[4], DType::F32, 0.0, 1.0).unwrap();
    let out = compile(&g, &[&bits, &split, &folded, &u]).run(&[]).unwrap();
    assert_eq!(u32s(&out[0]), [0x7d1c13a2, 0xae0730d9, 0x9dc3f9f9, 0x8f9ec1d7, 0x735d7315, 0x95fb4ed8]);
    assert_eq!(u32s(&out[1]), [1832780943, 270669613, 64467757, 2916123636]);
    assert_eq!(u32s(&out[2]), [3134548294, 894150801]);
    assert_eq!(out[3].to_vec::<f32>().unwrap(), [0.48870957f32, 0.6797972, 0.6162715, 0.5610161]);
}
