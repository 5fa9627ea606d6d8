//! Convolution, pooling and upsampling: forward against direct loops in plain
//! Rust, VJPs against finite differences in f64.
mod common;
use common::*;
use dalle_xla::graph::{same_padding, ConvDims, Convolution, Graph, Tensor, TensorType};
use dalle_xla::DType;

/// One NHWC x HWIO convolution configuration.
#[derive(Clone, Debug)]
struct Cfg {
    x: [i64; 4],
    k: [i64; 4],
    strides: [i64; 2],
    padding: [(i64, i64); 2],
    lhs_dil: [i64; 2],
    rhs_dil: [i64; 2],
    groups: i64,
}

impl Cfg {
    fn apply(&self, x: &Tensor, k: &Tensor) -> dalle_xla::graph::Result<Tensor> {
        x.conv2d(k, &self.strides, &self.padding, &self.lhs_dil, &self.rhs_dil, self.groups)
    }

    fn out_size(&self, d: usize) -> i64 {
        let n = self.x[1 + d];
        let dil_in = (n - 1) * self.lhs_dil[d] + 1 + self.padding[d].0 + self.padding[d].1;
        let dil_k = (self.k[d] - 1) * self.rhs_dil[d] + 1;
        (dil_in - dil_k) / self.strides[d] + 1
    }

    /// Direct definition: each output pixel sums kernel taps over the input
    /// positions they land on after dilation and padding.
    fn reference(&self, x: &[f64], k: &[f64]) -> Vec<f64> {
        let [nb, h, w, c] = self.x;
        let [kh, kw, ci, co] = self.k;
        let (oh, ow) = (self.out_size(0), self.out_size(1));
        let out_per_group = co / self.groups;
        let mut out = vec![0.0; (nb * oh * ow * co) as usize];
        for n in 0..nb {
            for y in 0..oh {
                for xx in 0..ow {
                    for o in 0..co {
                        let g = o / out_per_group;
                        let mut acc = 0.0;
                        for dy in 0..kh {
                            for dx in 0..kw {
                                let py = y * self.strides[0] + dy * self.rhs_dil[0] - self.padding[0].0;
                                let px = xx * self.strides[1] + dx * self.rhs_dil[1] - self.padding[1].0;
                                if py < 0 || px < 0 || py % self.lhs_dil[0] != 0 || px % self.lhs_dil[1] != 0 {
                                    continue;
                                }
                                let (iy, ix) = (py / self.lhs_dil[0], px / self.lhs_dil[1]);
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                for i in 0..ci {
                                    let xv = x[(((n * h + iy) * w + ix) * c + g * ci + i) as usize];
                                    let kv = k[(((dy * kw + dx) * ci + i) * co + o) as usize];
                                    acc += xv * kv;
                                }
                            }
                        }
                        out[(((n * oh + y) * ow + xx) * co + o) as usize] = acc;
                    }
                }
            }
        }
        out
    }
}

fn check_cfg(cfg: &Cfg, seed: u64) {
    let what = format!("conv2d {cfg:?}");
    let mut r = rng(seed);
    let x = random(&mut r, DType::F32, &cfg.x, -1.0, 1.0);
    let k = random(&mut r, DType::F32, &cfg.k, -1.0, 1.0);
    let types = [TensorType::new(DType::F32, &cfg.x), TensorType::new(DType::F32, &cfg.k)];
    let c = cfg.clone();
    let out = check_forward(&types, &[x.clone(), k.clone()], |p| c.apply(&p[0], &p[1]), |v| cfg.reference(&v[0], &v[1]), 1e-4, &what);
    assert_eq!(out.shape, vec![cfg.x[0], cfg.out_size(0), cfg.out_size(1), cfg.k[3]], "{what}: output shape");
    check_vjp(&[cfg.x.to_vec(), cfg.k.to_vec()], &[x, k], |p| c.apply(&p[0], &p[1]), &what);
}

fn base() -> Cfg {
    Cfg { x: [2, 5, 5, 3], k: [3, 3, 3, 4], strides: [1, 1], padding: [(1, 1), (1, 1)], lhs_dil: [1, 1], rhs_dil: [1, 1], groups: 1 }
}

#[test]
fn conv2d_same_padding_stride_1() {
    check_cfg(&base(), 1);
}

#[test]
fn conv2d_stride_2_with_padding() {
    // Odd sizes, asymmetric padding: the gradient must cope with the rows the stride skips.
    check_cfg(&Cfg { x: [2, 7, 6, 3], k: [3, 3, 3, 2], strides: [2, 2], padding: [(1, 1), (0, 1)], ..base() }, 2);
    check_cfg(&Cfg { x: [1, 6, 6, 2], k: [4, 4, 2, 3], strides: [2, 2], padding: [(1, 1), (1, 1)], ..base() }, 3);
}

#[test]
fn conv2d_lhs_dilation_is_a_transposed_convolution() {
    check_cfg(&Cfg { x: [1, 4, 3, 2], k: [3, 3, 2, 3], padding: [(2, 2), (1, 2)], lhs_dil: [2, 2], ..base() }, 4);
}

#[test]
fn conv2d_rhs_dilation() {
    check_cfg(&Cfg { x: [1, 7, 6, 2], k: [2, 3, 2, 2], padding: [(0, 0), (1, 1)], rhs_dil: [2, 2], ..base() }, 5);
    check_cfg(&Cfg { x: [1, 9, 9, 2], k: [3, 3, 2, 2], strides: [2, 1], padding: [(2, 1), (0, 0)], rhs_dil: [2, 3], ..base() }, 6);
}

#[test]
fn conv2d_depthwise_and_grouped() {
    // feature_group_count = channels: one filter (or two, multiplier 2) per channel.
    check_cfg(&Cfg { x: [2, 5, 5, 4], k: [3, 3, 1, 4], groups: 4, ..base() }, 7);
    check_cfg(&Cfg { x: [1, 6, 5, 3], k: [3, 3, 1, 6], strides: [2, 2], groups: 3, ..base() }, 8);
    check_cfg(&Cfg { x: [2, 5, 6, 4], k: [2, 2, 2, 6], padding: [(0, 1), (1, 0)], groups: 2, ..base() }, 9);
}

#[test]
fn conv_with_nchw_oihw_dimension_numbers() {
    // The same convolution expressed channels-first must give the channels-last result, transposed.
    let cfg = Cfg { strides: [2, 1], padding: [(1, 0), (1, 1)], ..base() };
    let mut r = rng(10);
    let x = random(&mut r, DType::F32, &cfg.x, -1.0, 1.0);
    let k = random(&mut r, DType::F32, &cfg.k, -1.0, 1.0);
    let conv = Convolution {
        dims: ConvDims { lhs: vec![0, 1, 2, 3], rhs: vec![0, 1, 2, 3], out: vec![0, 1, 2, 3] },
        strides: cfg.strides.to_vec(),
        padding: cfg.padding.to_vec(),
        lhs_dilation: vec![1, 1],
        rhs_dilation: vec![1, 1],
        feature_group_count: 1,
        batch_group_count: 1,
    };
    let f = |p: &[Tensor]| {
        let xc = p[0].transpose(&[0, 3, 1, 2])?;
        let kc = p[1].transpose(&[3, 2, 0, 1])?;
        xc.convolution(&kc, conv.clone())?.transpose(&[0, 2, 3, 1])
    };
    let types = [TensorType::new(DType::F32, &cfg.x), TensorType::new(DType::F32, &cfg.k)];
    check_forward(&types, &[x.clone(), k.clone()], f, |v| cfg.reference(&v[0], &v[1]), 1e-4, "conv NCHW/OIHW");
    check_vjp(&[cfg.x.to_vec(), cfg.k.to_vec()], &[x, k], f, "conv NCHW/OIHW");
}

#[test]
fn same_padding_keeps_ceil_of_input_over_stride() {
    for (n, k, s, d) in [(5, 3, 1, 1), (7, 3, 2, 1), (8, 4, 2, 1), (6, 3, 1, 2), (9, 1, 3, 1)] {
        let (lo, hi) = same_padding(n, k, s, d);
        let dil_k = (k - 1) * d + 1;
        let out = (n + lo + hi - dil_k) / s + 1;
        assert_eq!(out, (n + s - 1) / s, "n={n} k={k} s={s} d={d}: padding ({lo}, {hi})");
        assert!(hi - lo == 0 || hi - lo == 1, "extra padding goes high: ({lo}, {hi})");
    }
}

#[test]
fn conv_shape_errors_name_the_op_and_both_shapes() {
    let g = Graph::new("bad_conv");
    let x = g.param("x", DType::F32, &[1, 5, 5, 3]);
    let k = g.param("k", DType::F32, &[3, 3, 4, 2]);
    let e = x.conv2d(&k, &[1, 1], &[(0, 0); 2], &[1, 1], &[1, 1], 1).unwrap_err().to_string();
    assert!(e.contains("convolution") && e.contains("[1, 5, 5, 3]") && e.contains("[3, 3, 4, 2]"), "{e}");
    let k2 = g.param("k2", DType::F32, &[3, 3, 3, 2]);
    let e = x.conv2d(&k2, &[0, 1], &[(0, 0); 2], &[1, 1], &[1, 1], 1).unwrap_err().to_string();
    assert!(e.contains("strides") && e.contains("[0, 1]"), "{e}");
    let e = x.conv2d(&k2, &[1, 1], &[(0, 0)], &[1, 1], &[1, 1], 1).unwrap_err().to_string();
    assert!(e.contains("padding"), "{e}");
    let kb = g.param("kb", DType::BF16, &[3, 3, 3, 2]);
    let e = x.conv2d(&kb, &[1, 1], &[(0, 0); 2], &[1, 1], &[1, 1], 1).unwrap_err().to_string();
    assert!(e.contains("dtype"), "{e}");
    let e = x.reshape(&[5, 5, 3]).unwrap().conv2d(&k2, &[1, 1], &[(0, 0); 2], &[1, 1], &[1, 1], 1).unwrap_err().to_string();
    assert!(e.contains("NHWC") && e.contains("[5, 5, 3]"), "{e}");
}

/// Reference windowed reduction over H and W of an NHWC array.
fn pool_ref(x: &[f64], s: [i64; 4], win: [i64; 2], st: [i64; 2], pad: [(i64, i64); 2], max: bool) -> Vec<f64> {
    let [n, h, w, c] = s;
    let oh = (h + pad[0].0 + pad[0].1 - win[0]) / st[0] + 1;
    let ow = (w + pad[1].0 + pad[1].1 - win[1]) / st[1] + 1;
    let mut out = Vec::new();
    for b in 0..n {
        for y in 0..oh {
            for xx in 0..ow {
                for ch in 0..c {
                    let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                    for dy in 0..win[0] {
                        for dx in 0..win[1] {
                            let (iy, ix) = (y * st[0] + dy - pad[0].0, xx * st[1] + dx - pad[1].0);
                            if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                continue;
                            }
                            let v = x[(((b * h + iy) * w + ix) * c + ch) as usize];
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                    out.push(if max { acc } else { acc / (win[0] * win[1]) as f64 });
                }
            }
        }
    }
    out
}

#[test]
fn avg_pool_and_max_pool() {
    let shape = [2, 6, 5, 3];
    let mut r = rng(20);
    let x = random(&mut r, DType::F32, &shape, -1.0, 1.0);
    let ty = [TensorType::new(DType::F32, &shape)];
    for (win, st, pad) in [([2, 2], [2, 2], [(0, 0), (0, 1)]), ([3, 3], [1, 2], [(1, 1), (1, 1)]), ([3, 2], [2, 1], [(0, 1), (0, 0)])] {
        let what = format!("avg_pool {win:?} {st:?} {pad:?}");
        check_forward(&ty, &[x.clone()], |p| p[0].avg_pool(&win, &st, &pad), |v| pool_ref(&v[0], shape, win, st, pad, false), 1e-5, &what);
        check_vjp(&[shape.to_vec()], &[x.clone()], |p| p[0].avg_pool(&win, &st, &pad), &what);
        let what = format!("max_pool {win:?} {st:?} {pad:?}");
        check_forward(&ty, &[x.clone()], |p| p[0].max_pool(&win, &st, &pad), |v| pool_ref(&v[0], shape, win, st, pad, true), 0.0, &what);
        check_vjp(&[shape.to_vec()], &[x.clone()], |p| p[0].max_pool(&win, &st, &pad), &what);
    }
}

#[test]
fn upsample_nearest2x_repeats_each_pixel() {
    let shape = [2, 3, 2, 3];
    let mut r = rng(21);
    let x = random(&mut r, DType::F32, &shape, -1.0, 1.0);
    let reference = |v: &[Vec<f64>]| {
        let [n, h, w, c] = shape;
        let mut out = Vec::new();
        for b in 0..n {
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    for ch in 0..c {
                        out.push(v[0][(((b * h + y / 2) * w + xx / 2) * c + ch) as usize]);
                    }
                }
            }
        }
        out
    };
    let out = check_forward(&[TensorType::new(DType::F32, &shape)], &[x.clone()], |p| p[0].upsample_nearest2x(), reference, 0.0, "upsample");
    assert_eq!(out.shape, vec![2, 6, 4, 3]);
    check_vjp(&[shape.to_vec()], &[x], |p| p[0].upsample_nearest2x(), "upsample");
}

#[test]
fn batch_group_count_convolution_and_its_vjp() {
    // batch_group_count splits the input batch into contiguous groups, each
    // convolved with its own slice of output features (the kernel-gradient
    // form of a grouped convolution).
    let (b, h, w, c, o, bg) = (4i64, 5i64, 4i64, 3i64, 6i64, 2i64);
    let (kh, kw) = (2i64, 3i64);
    let conv = Convolution {
        dims: ConvDims::channels_last(2),
        strides: vec![1, 1],
        padding: vec![(1, 0), (1, 1)],
        lhs_dilation: vec![1, 1],
        rhs_dilation: vec![1, 1],
        feature_group_count: 1,
        batch_group_count: bg,
    };
    let (oh, ow) = (h + 1 - kh + 1, w + 2 - kw + 1);
    let reference = |v: &[Vec<f64>]| {
        let (x, k) = (&v[0], &v[1]);
        let nb = b / bg;
        let mut out = vec![0.0; (nb * oh * ow * o) as usize];
        for n in 0..nb {
            for y in 0..oh {
                for xx in 0..ow {
                    for f in 0..o {
                        let src = (f / (o / bg)) * nb + n;
                        let mut acc = 0.0;
                        for dy in 0..kh {
                            for dx in 0..kw {
                                let (iy, ix) = (y + dy - 1, xx + dx - 1);
                                if iy < 0 || ix < 0 || iy >= h || ix >= w {
                                    continue;
                                }
                                for i in 0..c {
                                    acc += x[(((src * h + iy) * w + ix) * c + i) as usize] * k[(((dy * kw + dx) * c + i) * o + f) as usize];
                                }
                            }
                        }
                        out[(((n * oh + y) * ow + xx) * o + f) as usize] = acc;
                    }
                }
            }
        }
        out
    };
    let mut r = rng(12);
    let x = random(&mut r, DType::F32, &[b, h, w, c], -1.0, 1.0);
    let k = random(&mut r, DType::F32, &[kh, kw, c, o], -1.0, 1.0);
    let types = [TensorType::new(DType::F32, &[b, h, w, c]), TensorType::new(DType::F32, &[kh, kw, c, o])];
    let f = |p: &[Tensor]| p[0].convolution(&p[1], conv.clone());
    let out = check_forward(&types, &[x.clone(), k.clone()], f, reference, 1e-4, "batch-grouped conv");
    assert_eq!(out.shape, vec![b / bg, oh, ow, o]);
    check_vjp(&[vec![b, h, w, c], vec![kh, kw, c, o]], &[x, k], f, "batch-grouped conv");
}

#[test]
fn second_order_gradient_through_a_grouped_convolution() {
    // d/dk of |d loss / dx|^2 needs the VJP of the VJP (feature groups turn into
    // batch groups and back); finite differences check the composite.
    let cfg = Cfg { x: [2, 4, 4, 4], k: [3, 3, 2, 4], groups: 2, strides: [2, 1], ..base() };
    let mut r = rng(13);
    let x = random(&mut r, DType::F32, &cfg.x, -1.0, 1.0);
    let k = random(&mut r, DType::F32, &cfg.k, -1.0, 1.0);
    let c = cfg.clone();
    let f = move |p: &[Tensor]| {
        let y = c.apply(&p[0], &p[1])?;
        let dx = dalle_xla::graph::grad(&y.tanh()?.sum_all()?, &[&p[0]])?.remove(0);
        dx.square()?.sum_all()
    };
    check_vjp(&[cfg.x.to_vec(), cfg.k.to_vec()], &[x, k], f, "second-order grouped conv");
}
