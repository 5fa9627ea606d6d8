//! Forward results against plain Rust and VJPs against finite differences for
//! the elementwise primitives.
mod common;
use common::*;
use dalle_xla::graph::TensorType;
use dalle_xla::DType;

type UnaryCase = (&'static str, fn(&dalle_xla::graph::Tensor) -> dalle_xla::graph::Result<dalle_xla::graph::Tensor>, fn(f64) -> f64, f64, f64, bool);

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse; integrate exp(-t^2) by Simpson's rule.
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn unary_forward_and_vjp() {
    let cases: Vec<UnaryCase> = vec![
        ("neg", |t| t.neg(), |x| -x, -2.0, 2.0, true),
        ("exp", |t| t.exp(), f64::exp, -2.0, 2.0, true),
        ("expm1", |t| t.expm1(), f64::exp_m1, -1.0, 1.0, true),
        ("log", |t| t.log(), f64::ln, 0.5, 3.0, true),
        ("log1p", |t| t.log1p(), f64::ln_1p, 0.0, 3.0, true),
        ("tanh", |t| t.tanh(), f64::tanh, -2.0, 2.0, true),
        ("sigmoid", |t| t.sigmoid(), |x| 1.0 / (1.0 + (-x).exp()), -3.0, 3.0, true),
        ("sqrt", |t| t.sqrt(), f64::sqrt, 0.5, 4.0, true),
        ("rsqrt", |t| t.rsqrt(), |x| 1.0 / x.sqrt(), 0.5, 4.0, true),
        ("abs", |t| t.abs(), f64::abs, 0.1, 2.0, true),
        ("sin", |t| t.sin(), f64::sin, -3.0, 3.0, true),
        ("cos", |t| t.cos(), f64::cos, -3.0, 3.0, true),
        ("erf", |t| t.erf(), erf, -2.0, 2.0, true),
        ("floor", |t| t.floor(), f64::floor, -3.0, 3.0, false),
        ("ceil", |t| t.ceil(), f64::ceil, -3.0, 3.0, false),
        ("sign", |t| t.sign(), f64::signum, -3.0, 3.0, false),
        ("square", |t| t.square(), |x| x * x, -3.0, 3.0, true),
    ];
    let mut r = rng(1);
    for (name, f, reference, lo, hi, differentiable) in cases {
        let shape = vec![3, 4];
        let x = random(&mut r, DType::F32, &shape, lo, hi);
        check_forward(&[TensorType::new(DType::F32, &shape)], &[x.clone()], |p| f(&p[0]), |v| v[0].iter().map(|a| reference(*a)).collect(), 1e-5, name);
        if differentiable {
            check_vjp(&[shape.clone()], &[x], |p| f(&p[0]), name);
        }
    }
}

type BinaryCase = (&'static str, fn(&dalle_xla::graph::Tensor, &dalle_xla::graph::Tensor) -> dalle_xla::graph::Result<dalle_xla::graph::Tensor>, fn(f64, f64) -> f64);

#[test]
fn binary_forward_and_vjp_with_broadcasting() {
    let cases: Vec<BinaryCase> = vec![
        ("add", |a, b| a.add(b), |a, b| a + b),
        ("sub", |a, b| a.sub(b), |a, b| a - b),
        ("mul", |a, b| a.mul(b), |a, b| a * b),
        ("div", |a, b| a.div(b), |a, b| a / b),
        ("max", |a, b| a.maximum(b), f64::max),
        ("min", |a, b| a.minimum(b), f64::min),
        ("pow", |a, b| a.pow(b), f64::powf),
        ("atan2", |a, b| a.atan2(b), f64::atan2),
    ];
    let mut r = rng(2);
    for (name, f, reference) in cases {
        // [2,3] op [3]: the second operand broadcasts along the first axis.
        let a = random(&mut r, DType::F32, &[2, 3], 0.5, 2.0);
        let b = random(&mut r, DType::F32, &[3], 0.5, 2.0);
        let types = [TensorType::new(DType::F32, &[2, 3]), TensorType::new(DType::F32, &[3])];
        check_forward(&types, &[a.clone(), b.clone()], |p| f(&p[0], &p[1]), |v| (0..6).map(|i| reference(v[0][i], v[1][i % 3])).collect(), 1e-5, name);
        check_vjp(&[vec![2, 3], vec![3]], &[a, b], |p| f(&p[0], &p[1]), name);
    }
}

#[test]
fn compare_select_convert_and_bitwise() {
    let mut r = rng(3);
    let a = random(&mut r, DType::F32, &[8], -1.0, 1.0);
    let b = random(&mut r, DType::F32, &[8], -1.0, 1.0);
    let t = [TensorType::new(DType::F32, &[8]), TensorType::new(DType::F32, &[8])];
    check_forward(&t, &[a.clone(), b.clone()], |p| p[0].lt(&p[1])?.cast(DType::F32), |v| v[0].iter().zip(&v[1]).map(|(x, y)| (x < y) as u8 as f64).collect(), 0.0, "lt");
    check_forward(&t, &[a.clone(), b.clone()], |p| dalle_xla::graph::Tensor::select(&p[0].ge(&p[1])?, &p[0], &p[1]), |v| v[0].iter().zip(&v[1]).map(|(x, y)| x.max(*y)).collect(), 0.0, "select");
    check_vjp(&[vec![8], vec![8]], &[a.clone(), b.clone()], |p| dalle_xla::graph::Tensor::select(&p[0].ge(&p[1])?, &p[0].mul(&p[1])?, &p[1].exp()?), "select");
    check_forward(&t[..1], &[a.clone()], |p| p[0].scale(10.0)?.cast(DType::I32)?.cast(DType::F32), |v| v[0].iter().map(|x| (x * 10.0).trunc()).collect(), 1e-6, "convert f32->i32");
    // The VJP of a cast is the cast back: d/dx sum(3 * f32(x)) = 3 everywhere, as f64.
    let g = dalle_xla::graph::Graph::new("convert_vjp");
    let x = g.param("x", DType::F64, &[8]);
    let loss = x.cast(DType::F32).unwrap().scale(3.0).unwrap().sum_all().unwrap().cast(DType::F64).unwrap();
    let dx = dalle_xla::graph::grad(&loss, &[&x]).unwrap().remove(0);
    assert_eq!(dx.dtype(), DType::F64);
    let out = run1(&g, &dx, &[&a.cast(DType::F64)]);
    assert_close(&out.to_f64_vec(), &[3.0; 8], 0.0, "convert vjp");

    let ints = dalle_xla::HostTensor::new::<u32>(&[4], &[0xF0F0_0001, 7, 0x8000_0000, 12345]).unwrap();
    let u = [TensorType::new(DType::U32, &[4])];
    let shift = |p: &[dalle_xla::graph::Tensor]| -> dalle_xla::graph::Result<dalle_xla::graph::Tensor> {
        let three = p[0].scalar_like(3.0);
        p[0].shift_left(&three)?.xor(&p[0].shift_right(&three)?)?.or(&p[0].and(&p[0].scalar_like(255.0))?)
    };
    check_forward(&u, &[ints.clone()], shift, |v| v[0].iter().map(|&x| { let x = x as u32; (((x << 3) ^ (x >> 3)) | (x & 255)) as f64 }).collect(), 0.0, "bitwise");
    check_forward(&[TensorType::new(DType::F32, &[4])], &[dalle_xla::HostTensor::new::<f32>(&[4], &[1.0, -2.0, 0.5, 3.0]).unwrap()], |p| p[0].bitcast(DType::U32)?.bitcast(DType::F32), |v| v[0].clone(), 0.0, "bitcast roundtrip");
}
