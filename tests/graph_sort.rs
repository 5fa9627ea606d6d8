//! Sorting primitives: `sort` (values and original positions, stable, both
//! directions) with its VJP, `top_k`, `cumsum`, and per-row categorical draws.
mod common;
use common::*;
use dalle_xla::graph::{random, Graph};
use dalle_xla::{DType, HostTensor};

#[test]
fn sort_orders_values_and_returns_their_positions_stably() {
    let values = [3.0f32, -1.0, 3.0, 7.5, 0.0, -1.0, 2.0, 7.5, 1.0, 0.5, 3.0, -4.0];
    let x = HostTensor::new(&[2, 6], &values).unwrap();
    for descending in [true, false] {
        let g = Graph::new("sort");
        let p = g.param("x", DType::F32, &[2, 6]);
        let (v, i) = p.sort(-1, descending).unwrap();
        let out = compile(&g, &[&v, &i]).run(&[&x]).unwrap();
        let (got_v, got_i) = (out[0].to_vec::<f32>().unwrap(), out[1].to_vec::<i32>().unwrap());
        for row in 0..2 {
            let r = &values[row * 6..row * 6 + 6];
            let mut idx: Vec<usize> = (0..6).collect();
            // Rust's sort_by is stable, like the primitive.
            idx.sort_by(|&a, &b| if descending { r[b].partial_cmp(&r[a]).unwrap() } else { r[a].partial_cmp(&r[b]).unwrap() });
            let want_i: Vec<i32> = idx.iter().map(|&i| i as i32).collect();
            let want_v: Vec<f32> = idx.iter().map(|&i| r[i]).collect();
            assert_eq!(&got_i[row * 6..row * 6 + 6], &want_i[..], "row {row} descending {descending}");
            assert_eq!(&got_v[row * 6..row * 6 + 6], &want_v[..], "row {row} descending {descending}");
        }
    }
}

#[test]
fn sort_along_a_leading_axis_and_of_integers() {
    let x = HostTensor::new(&[3, 2], &[5i32, 1, -2, 9, 4, 4]).unwrap();
    let g = Graph::new("sort_axis0");
    let p = g.param("x", DType::I32, &[3, 2]);
    let (v, i) = p.sort(0, false).unwrap();
    let out = compile(&g, &[&v, &i]).run(&[&x]).unwrap();
    assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![-2, 1, 4, 4, 5, 9]);
    assert_eq!(out[1].to_vec::<i32>().unwrap(), vec![1, 0, 2, 2, 0, 1]);
}

#[test]
fn sort_gradient_flows_back_to_the_original_positions() {
    let mut r = rng(3);
    let x = random(&mut r, DType::F64, &[3, 5], -2.0, 2.0);
    check_vjp(&[vec![3, 5]], &[x.clone()], |p| Ok(p[0].sort(-1, true)?.0), "sort");
    check_vjp(&[vec![3, 5]], &[x], |p| Ok(p[0].top_k(2)?.0.square()?), "top_k");
}

#[test]
fn top_k_takes_the_largest_first_and_rejects_bad_k() {
    let x = HostTensor::new(&[1, 5], &[0.1f32, 0.9, 0.3, 0.9, -1.0]).unwrap();
    let g = Graph::new("top_k");
    let p = g.param("x", DType::F32, &[1, 5]);
    let (v, i) = p.top_k(3).unwrap();
    let out = compile(&g, &[&v, &i]).run(&[&x]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.9, 0.9, 0.3]);
    assert_eq!(out[1].to_vec::<i32>().unwrap(), vec![1, 3, 2], "ties: the lower position first");
    assert!(p.top_k(0).unwrap_err().to_string().contains("top_k"));
    assert!(p.top_k(6).unwrap_err().to_string().contains("1..=5"));
}

#[test]
fn cumsum_is_the_running_sum_and_differentiates() {
    let mut r = rng(4);
    for n in [1i64, 2, 7, 16, 33] {
        let x = random(&mut r, DType::F32, &[2, n], -1.0, 1.0);
        check_forward(
            &[dalle_xla::graph::TensorType::new(DType::F32, &[2, n])],
            &[x],
            |p| p[0].cumsum(-1),
            |v| {
                let mut out = vec![];
                for row in v[0].chunks(n as usize) {
                    let mut acc = 0.0;
                    for x in row {
                        acc += x;
                        out.push(acc);
                    }
                }
                out
            },
            1e-5,
            &format!("cumsum n={n}"),
        );
    }
    let x = random(&mut r, DType::F64, &[2, 9], -1.0, 1.0);
    check_vjp(&[vec![2, 9]], &[x], |p| p[0].cumsum(1), "cumsum");
}

#[test]
fn categorical_rows_follows_the_distribution_and_each_row_its_own_key() {
    // Two rows with the same logits and keys draw the same; a third key draws differently.
    let (b, v) = (3i64, 4i64);
    let logits: Vec<f32> = [0.0f32, 1.0, 2.0, -1.0].repeat(3);
    let probs: Vec<f64> = {
        let e: Vec<f64> = logits[..4].iter().map(|l| (*l as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    };
    let g = Graph::new("categorical_rows");
    let l = g.param("logits", DType::F32, &[b, v]);
    let k = g.param("keys", DType::U32, &[b, 2]);
    let s = g.param("step", DType::U32, &[]);
    let out = random::categorical_rows(&k, &l, &s).unwrap();
    let prog = compile(&g, &[&out]);
    let keys = HostTensor::new(&[b, 2], &[1u32, 2, 1, 2, 9, 9]).unwrap();
    let lv = HostTensor::new(&[b, v], &logits).unwrap();
    let mut counts = [0usize; 4];
    let mut differs = 0;
    let n = 2000;
    for step in 0..n {
        let got = prog.run(&[&lv, &keys, &HostTensor::scalar(step as u32)]).unwrap().remove(0).to_vec::<i32>().unwrap();
        assert_eq!(got[0], got[1], "same key, same step, same draw");
        differs += (got[0] != got[2]) as usize;
        counts[got[0] as usize] += 1;
    }
    assert!(differs > n / 4, "another key draws independently ({differs} of {n} differ)");
    for (i, c) in counts.iter().enumerate() {
        let f = *c as f64 / n as f64;
        assert!((f - probs[i]).abs() < 0.04, "token {i}: frequency {f:.3}, probability {:.3}", probs[i]);
    }
}
