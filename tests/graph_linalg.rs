//! dot_general, reductions and layout primitives: forward against plain Rust,
//! VJPs against finite differences.
mod common;
use common::*;
use dalle_xla::graph::{Graph, Tensor, TensorType};
use dalle_xla::{DType, HostTensor};

fn t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// Row-major strides.
fn strides(shape: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as usize;
    }
    s
}

#[test]
fn matmul_and_batched_dot_general() {
    let mut r = rng(10);
    let a = random(&mut r, DType::F32, &[3, 4], -1.0, 1.0);
    let b = random(&mut r, DType::F32, &[4, 5], -1.0, 1.0);
    let reference = |v: &[Vec<f64>]| {
        let mut out = vec![0.0; 15];
        for i in 0..3 {
            for j in 0..5 {
                out[i * 5 + j] = (0..4).map(|k| v[0][i * 4 + k] * v[1][k * 5 + j]).sum();
            }
        }
        out
    };
    check_forward(&[t(&[3, 4]), t(&[4, 5])], &[a.clone(), b.clone()], |p| p[0].matmul(&p[1]), reference, 1e-5, "matmul");
    check_vjp(&[vec![3, 4], vec![4, 5]], &[a, b], |p| p[0].matmul(&p[1]), "matmul");

    // Batch dim 1 of lhs with 2 of rhs; contract lhs 0 with rhs 0: out[b, i, j] = sum_k l[k, b, i] r[k, j, b].
    let l = random(&mut r, DType::F32, &[3, 2, 4], -1.0, 1.0);
    let rr = random(&mut r, DType::F32, &[3, 5, 2], -1.0, 1.0);
    let f = |p: &[Tensor]| p[0].dot_general(&p[1], &[1], &[2], &[0], &[0]);
    let reference = |v: &[Vec<f64>]| {
        let mut out = vec![0.0; 2 * 4 * 5];
        for bb in 0..2 {
            for i in 0..4 {
                for j in 0..5 {
                    out[bb * 20 + i * 5 + j] = (0..3).map(|k| v[0][k * 8 + bb * 4 + i] * v[1][k * 10 + j * 2 + bb]).sum();
                }
            }
        }
        out
    };
    check_forward(&[t(&[3, 2, 4]), t(&[3, 5, 2])], &[l.clone(), rr.clone()], f, reference, 1e-5, "dot_general permuted");
    check_vjp(&[vec![3, 2, 4], vec![3, 5, 2]], &[l, rr], f, "dot_general permuted");

    // Two contracting dims, listed out of order on both sides: out[i, j] = sum_{a, c} l[a, i, c] r[c, j, a].
    let l = random(&mut r, DType::F32, &[2, 3, 4], -1.0, 1.0);
    let rr = random(&mut r, DType::F32, &[4, 5, 2], -1.0, 1.0);
    let f = |p: &[Tensor]| p[0].dot_general(&p[1], &[], &[], &[2, 0], &[0, 2]);
    let reference = |v: &[Vec<f64>]| {
        let mut out = vec![0.0; 3 * 5];
        for i in 0..3 {
            for j in 0..5 {
                out[i * 5 + j] = (0..2).flat_map(|a| (0..4).map(move |c| (a, c))).map(|(a, c)| v[0][a * 12 + i * 4 + c] * v[1][c * 10 + j * 2 + a]).sum();
            }
        }
        out
    };
    check_forward(&[t(&[2, 3, 4]), t(&[4, 5, 2])], &[l.clone(), rr.clone()], f, reference, 1e-5, "dot_general two contracting dims");
    check_vjp(&[vec![2, 3, 4], vec![4, 5, 2]], &[l, rr], f, "dot_general two contracting dims");
}

#[test]
fn bf16_matmul_with_f32_accumulation_and_master_weights() {
    // bf16 compute, f32 master weights: the weight is cast down for the matmul and
    // the gradient comes back to f32 through the cast's VJP.
    let mut r = rng(11);
    let x = random(&mut r, DType::F32, &[8, 16], -1.0, 1.0);
    let w = random(&mut r, DType::F32, &[16, 4], -1.0, 1.0);
    let g = Graph::new("mixed");
    let xp = g.param("x", DType::F32, &[8, 16]);
    let wp = g.param("w", DType::F32, &[16, 4]);
    let y = xp.cast(DType::BF16).unwrap().matmul_acc(&wp.cast(DType::BF16).unwrap(), DType::F32).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let loss = y.square().unwrap().mean_all().unwrap();
    let dw = dalle_xla::graph::grad(&loss, &[&wp]).unwrap().remove(0);
    assert_eq!(dw.dtype(), DType::F32, "master-weight gradient stays f32");
    let out = compile(&g, &[&y, &dw]).run(&[&x, &w]).unwrap();

    // f32 reference on bf16-rounded inputs.
    let round = |h: &HostTensor| h.cast(DType::BF16).to_f64_vec();
    let (xv, wv) = (round(&x), round(&w));
    let mut want = vec![0.0; 32];
    for i in 0..8 {
        for j in 0..4 {
            want[i * 4 + j] = (0..16).map(|k| xv[i * 16 + k] * wv[k * 4 + j]).sum();
        }
    }
    assert_close(&out[0].to_f64_vec(), &want, 1e-4, "bf16 matmul");
    let mut want_dw = vec![0.0; 64];
    for k in 0..16 {
        for j in 0..4 {
            want_dw[k * 4 + j] = (0..8).map(|i| xv[i * 16 + k] * 2.0 * want[i * 4 + j] / 32.0).sum();
        }
    }
    // The backward matmul runs in bf16 too: allow bf16 precision.
    assert_close(&out[1].to_f64_vec(), &want_dw, 2e-2, "bf16 matmul grad");
}

#[test]
fn reductions() {
    let mut r = rng(12);
    let shape = [2i64, 3, 4];
    let x = random(&mut r, DType::F32, &shape, -2.0, 2.0);
    let st = strides(&shape);
    let reduce_axis1 = |v: &[f64], f: fn(f64, f64) -> f64, init: f64| {
        let mut out = vec![init; 8];
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    out[a * 4 + c] = f(out[a * 4 + c], v[a * st[0] + b * st[1] + c]);
                }
            }
        }
        out
    };
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].sum(&[1], false), |v| reduce_axis1(&v[0], |a, b| a + b, 0.0), 1e-5, "sum");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].max(&[-2], false), |v| reduce_axis1(&v[0], f64::max, f64::NEG_INFINITY), 0.0, "max");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].min(&[1], false), |v| reduce_axis1(&v[0], f64::min, f64::INFINITY), 0.0, "min");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].mean(&[0, 2], true), |v| {
        (0..3).map(|b| (0..2).flat_map(|a| (0..4).map(move |c| (a, c))).map(|(a, c)| v[0][a * 12 + b * 4 + c]).sum::<f64>() / 8.0).collect()
    }, 1e-5, "mean keepdim");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].argmax(-1)?.cast(DType::F32), |v| {
        v[0].chunks(4).map(|c| c.iter().enumerate().fold((0, f64::NEG_INFINITY), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0 as f64).collect()
    }, 0.0, "argmax");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].softmax(-1), |v| {
        v[0].chunks(4).flat_map(|c| { let m = c.iter().cloned().fold(f64::MIN, f64::max); let s: f64 = c.iter().map(|x| (x - m).exp()).sum(); c.iter().map(move |x| (x - m).exp() / s).collect::<Vec<_>>() }).collect()
    }, 1e-5, "softmax");

    for (name, f) in [
        ("sum", (|p: &[Tensor]| p[0].sum(&[1], false)) as fn(&[Tensor]) -> dalle_xla::graph::Result<Tensor>),
        ("max", |p| p[0].max(&[2], false)),
        ("min", |p| p[0].min(&[0, 1], false)),
        ("prod", |p| p[0].prod(&[1], false)),
        ("logsumexp", |p| p[0].logsumexp(-1)),
        ("log_softmax", |p| p[0].log_softmax(1)),
        ("softmax", |p| p[0].softmax(-1)),
    ] {
        check_vjp(&[shape.to_vec()], &[x.clone()], f, name);
    }
}

#[test]
fn layout_ops() {
    let mut r = rng(13);
    let shape = [2i64, 3, 4];
    let x = random(&mut r, DType::F32, &shape, -2.0, 2.0);
    let st = strides(&shape);
    let at = |v: &[f64], a: usize, b: usize, c: usize| v[a * st[0] + b * st[1] + c * st[2]];

    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].transpose(&[2, 0, 1]), |v| {
        let mut out = vec![];
        for c in 0..4 { for a in 0..2 { for b in 0..3 { out.push(at(&v[0], a, b, c)); } } }
        out
    }, 0.0, "transpose");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].slice(&[0, 1, 0], &[2, 3, 4], &[1, 1, 2]), |v| {
        let mut out = vec![];
        for a in 0..2 { for b in 1..3 { for c in (0..4).step_by(2) { out.push(at(&v[0], a, b, c)); } } }
        out
    }, 0.0, "strided slice");
    check_forward(&[t(&[2, 3])], &[random(&mut r, DType::F32, &[2, 3], -1.0, 1.0)], |p| {
        p[0].pad(&p[0].scalar_like(9.0), &[1, -1], &[0, 2], &[1, 0])
    }, |v| {
        // rows: 1 low, interior 1 -> [9-row, r0, 9-row, r1]; cols: crop 1 low, pad 2 high -> c1, c2, 9, 9
        let row = |r: usize| vec![v[0][r * 3 + 1], v[0][r * 3 + 2], 9.0, 9.0];
        [vec![9.0; 4], row(0), vec![9.0; 4], row(1)].concat()
    }, 0.0, "pad with interior and negative edge");
    check_forward(&[t(&[2, 3]), t(&[2, 1])], &[random(&mut r, DType::F32, &[2, 3], -1.0, 1.0), random(&mut r, DType::F32, &[2, 1], -1.0, 1.0)], |p| {
        Tensor::concat(&[&p[0], &p[1]], 1)
    }, |v| vec![v[0][0], v[0][1], v[0][2], v[1][0], v[0][3], v[0][4], v[0][5], v[1][1]], 0.0, "concat");
    check_forward(&[t(&[3])], &[random(&mut r, DType::F32, &[3], -1.0, 1.0)], |p| p[0].broadcast_in_dim(&[2, 3, 2], &[1]), |v| {
        let mut out = vec![];
        for _ in 0..2 { for b in 0..3 { for _ in 0..2 { out.push(v[0][b]); } } }
        out
    }, 0.0, "broadcast_in_dim");
    check_forward(&[t(&shape)], &[x.clone()], |p| p[0].reverse(&[1, 2]), |v| {
        let mut out = vec![];
        for a in 0..2 { for b in (0..3).rev() { for c in (0..4).rev() { out.push(at(&v[0], a, b, c)); } } }
        out
    }, 0.0, "reverse");

    let small = random(&mut r, DType::F32, &[2, 3], -1.0, 1.0);
    type F = fn(&[Tensor]) -> dalle_xla::graph::Result<Tensor>;
    let cases: Vec<(&str, Vec<i64>, &HostTensor, F)> = vec![
        ("transpose", shape.to_vec(), &x, |p| p[0].transpose(&[2, 0, 1])),
        ("reshape", shape.to_vec(), &x, |p| p[0].reshape(&[6, 4])),
        ("slice", shape.to_vec(), &x, |p| p[0].slice(&[0, 1, 0], &[2, 3, 4], &[1, 1, 2])),
        ("pad", vec![2, 3], &small, |p| p[0].pad(&p[0].scalar_like(0.5), &[1, -1], &[0, 2], &[1, 0])),
        ("broadcast", vec![2, 3], &small, |p| p[0].reshape(&[2, 1, 3])?.broadcast_in_dim(&[2, 4, 3], &[0, 1, 2])),
        ("concat", vec![2, 3], &small, |p| Tensor::concat(&[&p[0], &p[0].exp()?], 0)),
        ("reverse", shape.to_vec(), &x, |p| p[0].reverse(&[0, 2])),
    ];
    for (name, s, input, f) in cases {
        check_vjp(&[s], &[input.clone()], f, name);
    }
    // The padding value's gradient: d/dv sum(pad(x, v)) = number of padded elements.
    check_vjp(&[vec![2, 3], vec![]], &[small.clone(), HostTensor::scalar(0.3f32)], |p| p[0].pad(&p[1], &[1, 0], &[0, 1], &[1, 1])?.square(), "pad value");
}

#[test]
fn build_time_errors_name_the_op_and_shapes() {
    let g = Graph::new("errors");
    let a = g.param("a", DType::F32, &[2, 3]);
    let b = g.param("b", DType::F32, &[4, 5]);
    let i = g.param("i", DType::I32, &[2, 3]);
    let msg = a.matmul(&b).unwrap_err().to_string();
    assert!(msg.contains("dot_general") && msg.contains("f32[2, 3]") && msg.contains("f32[4, 5]"), "{msg}");
    let msg = a.add(&b).unwrap_err().to_string();
    assert!(msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    let msg = a.add(&i).unwrap_err().to_string();
    assert!(msg.contains("add") && msg.contains("f32[2, 3]") && msg.contains("i32[2, 3]"), "{msg}");
    let msg = i.exp().unwrap_err().to_string();
    assert!(msg.contains("exp") && msg.contains("i32[2, 3]"), "{msg}");
    let msg = a.reshape(&[7]).unwrap_err().to_string();
    assert!(msg.contains("reshape") && msg.contains("f32[2, 3]") && msg.contains("[7]"), "{msg}");
    let msg = a.transpose(&[0, 0]).unwrap_err().to_string();
    assert!(msg.contains("transpose"), "{msg}");
    let msg = a.slice(&[0, 0], &[3, 3], &[1, 1]).unwrap_err().to_string();
    assert!(msg.contains("slice") && msg.contains("f32[2, 3]"), "{msg}");
    let msg = a.sum(&[2], false).unwrap_err().to_string();
    assert!(msg.contains("axis 2"), "{msg}");
    let other = Graph::new("other");
    let c = other.param("c", DType::F32, &[2, 3]);
    let msg = a.add(&c).unwrap_err().to_string();
    assert!(msg.contains("graph 'other'"), "{msg}");
    let msg = dalle_xla::graph::grad(&a, &[&a]).unwrap_err().to_string();
    assert!(msg.contains("scalar"), "{msg}");
}

#[test]
fn second_order_gradient() {
    // d/dx of d/dx sum(x^3) = 6x: the backward graph is differentiable too.
    let g = Graph::new("hessian");
    let x = g.param("x", DType::F64, &[4]);
    let y = x.mul(&x).unwrap().mul(&x).unwrap().sum_all().unwrap();
    let dx = dalle_xla::graph::grad(&y, &[&x]).unwrap().remove(0);
    let ddx = dalle_xla::graph::grad(&dx.sum_all().unwrap(), &[&x]).unwrap().remove(0);
    let v = HostTensor::new::<f64>(&[4], &[1.0, -2.0, 0.5, 3.0]).unwrap();
    let out = compile(&g, &[&dx, &ddx]).run(&[&v]).unwrap();
    assert_close(&out[0].to_f64_vec(), &[3.0, 12.0, 0.75, 27.0], 1e-12, "first derivative");
    assert_close(&out[1].to_f64_vec(), &[6.0, -12.0, 3.0, 18.0], 1e-12, "second derivative");
}
