//! Optimizer updates against plain-Rust reference implementations.
mod common;
use common::*;
use dalle_xla::graph::Graph;
use dalle_xla::optim::{clip_by_global_norm, Adafactor, AdamW, Optimizer};
use dalle_xla::{DType, HostTensor};

#[test]
fn adamw_matches_reference() {
    let mut r = rng(20);
    let p0 = random(&mut r, DType::F32, &[3, 5], -1.0, 1.0);
    let grads: Vec<HostTensor> = (0..3).map(|_| random(&mut r, DType::F32, &[3, 5], -1.0, 1.0)).collect();
    let opt = AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
    let got = optimizer_steps(&opt, &p0, &grads, 0.1).0.pop().unwrap();

    let mut p = p0.to_f64_vec();
    let (mut m, mut v) = (vec![0.0; 15], vec![0.0; 15]);
    for (t, g) in grads.iter().enumerate() {
        let g = g.to_f64_vec();
        let t = (t + 1) as i32;
        for i in 0..15 {
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
            let mh = m[i] / (1.0 - 0.9f64.powi(t));
            let vh = v[i] / (1.0 - 0.99f64.powi(t));
            p[i] -= 0.1 * (mh / (vh.sqrt() + 1e-8) + 0.01 * p[i]);
        }
    }
    assert_close(&got, &p, 1e-5, "adamw");
}

fn adafactor_reference(p0: &[f64], shape: (usize, usize), grads: &[Vec<f64>], lr: f64, factored: bool) -> Vec<f64> {
    let (rows, cols) = shape;
    let mut p = p0.to_vec();
    let (mut vr, mut vc, mut v) = (vec![0.0; rows], vec![0.0; cols], vec![0.0; rows * cols]);
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as f64;
        let beta2 = 1.0 - t.powf(-0.8);
        let g2: Vec<f64> = g.iter().map(|x| x * x + 1e-30).collect();
        let mut u = vec![0.0; rows * cols];
        if factored {
            for i in 0..rows {
                vr[i] = beta2 * vr[i] + (1.0 - beta2) * (0..cols).map(|j| g2[i * cols + j]).sum::<f64>() / cols as f64;
            }
            for j in 0..cols {
                vc[j] = beta2 * vc[j] + (1.0 - beta2) * (0..rows).map(|i| g2[i * cols + j]).sum::<f64>() / rows as f64;
            }
            let mean_r = vr.iter().sum::<f64>() / rows as f64;
            for i in 0..rows {
                for j in 0..cols {
                    u[i * cols + j] = g[i * cols + j] / (vr[i] / mean_r).sqrt() / vc[j].sqrt();
                }
            }
        } else {
            for k in 0..rows * cols {
                v[k] = beta2 * v[k] + (1.0 - beta2) * g2[k];
                u[k] = g[k] / v[k].sqrt();
            }
        }
        let rms_u = (u.iter().map(|x| x * x).sum::<f64>() / u.len() as f64).sqrt();
        let rms_p = (p.iter().map(|x| x * x).sum::<f64>() / p.len() as f64).sqrt();
        let scale = lr * rms_p.max(1e-3) / rms_u.max(1.0);
        for k in 0..p.len() {
            p[k] -= scale * u[k];
        }
    }
    p
}

#[test]
fn adafactor_matches_reference_factored_and_not() {
    let mut r = rng(21);
    for (shape, factored) in [((4usize, 6usize), false), ((128, 130), true)] {
        let dims = [shape.0 as i64, shape.1 as i64];
        let p0 = random(&mut r, DType::F32, &dims, -0.5, 0.5);
        let grads: Vec<HostTensor> = (0..3).map(|_| random(&mut r, DType::F32, &dims, -1.0, 1.0)).collect();
        let opt = Adafactor::default();
        assert_eq!(opt.state(&dalle_xla::graph::TensorType::new(DType::F32, &dims)).len(), if factored { 2 } else { 1 });
        let got = optimizer_steps(&opt, &p0, &grads, 0.01).0.pop().unwrap();
        let want = adafactor_reference(&p0.to_f64_vec(), shape, &grads.iter().map(|g| g.to_f64_vec()).collect::<Vec<_>>(), 0.01, factored);
        assert_close(&got, &want, 1e-4, if factored { "adafactor factored" } else { "adafactor" });
    }
}

#[test]
fn global_norm_clipping() {
    let g = Graph::new("clip");
    let a = g.param("a", DType::F32, &[2]);
    let b = g.param("b", DType::F32, &[1]);
    let (clipped, norm) = clip_by_global_norm(&[a, b], 1.0).unwrap();
    let prog = compile(&g, &[&clipped[0], &clipped[1], &norm]);
    let out = prog.run(&[&HostTensor::new::<f32>(&[2], &[3.0, 0.0]).unwrap(), &HostTensor::new::<f32>(&[1], &[4.0]).unwrap()]).unwrap();
    assert_close(&out[2].to_f64_vec(), &[5.0], 1e-6, "norm");
    assert_close(&out[0].to_f64_vec(), &[0.6, 0.0], 1e-5, "clipped a");
    assert_close(&out[1].to_f64_vec(), &[0.8], 1e-5, "clipped b");
    // Below the threshold nothing changes.
    let out = prog.run(&[&HostTensor::new::<f32>(&[2], &[0.3, 0.0]).unwrap(), &HostTensor::new::<f32>(&[1], &[0.4]).unwrap()]).unwrap();
    assert_close(&out[0].to_f64_vec(), &[0.3, 0.0], 1e-5, "unclipped a");
}

/// Small gradients share one concatenated reduction and large ones (over 65536
/// elements) are reduced alone; the norm covers both, in any dtype, and
/// `max_norm` 0 passes the gradients through unchanged.
#[test]
fn global_norm_over_small_and_large_gradients() {
    let mut r = rng(21);
    let values = [
        random(&mut r, DType::F32, &[3, 4], -1.0, 1.0),
        random(&mut r, DType::F32, &[300, 300], -1.0, 1.0),
        random(&mut r, DType::BF16, &[7], -1.0, 1.0),
        random(&mut r, DType::F32, &[], -1.0, 1.0),
    ];
    let g = Graph::new("norm");
    let params: Vec<_> = values.iter().enumerate().map(|(i, v)| g.param(&format!("g{i}"), v.dtype, &v.shape)).collect();
    let (passed, norm) = clip_by_global_norm(&params, 0.0).unwrap();
    let mut outs: Vec<&_> = passed.iter().collect();
    outs.push(&norm);
    let prog = compile(&g, &outs);
    let out = prog.run(&values.iter().collect::<Vec<_>>()).unwrap();
    let want = values.iter().flat_map(|v| v.to_f64_vec()).map(|x| x * x).sum::<f64>().sqrt();
    assert_close(&out[4].to_f64_vec(), &[want], 1e-5, "global norm");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(out[i].to_f64_vec(), v.to_f64_vec(), "gradient {i} passed through");
    }
}
