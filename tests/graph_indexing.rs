//! Gather, scatter-add, take, take_along_axis, one_hot and dynamic slices:
//! forward against plain Rust (with XLA's index clamping written out), VJPs
//! against finite differences.
mod common;
use common::*;
use dalle_xla::graph::{GatherDims, Graph, ScatterDims, Tensor, TensorType};
use dalle_xla::{DType, HostTensor};
use rand::Rng;

fn f32t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// Random integers in [lo, hi) as an integer host tensor.
fn random_ints(seed: u64, dtype: DType, shape: &[i64], lo: i64, hi: i64) -> HostTensor {
    let mut r = rng(seed);
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.gen_range(lo..hi) as f64).collect();
    HostTensor::from_f64(dtype, shape, &v).unwrap()
}

fn ints(dtype: DType, shape: &[i64], v: &[i64]) -> HostTensor {
    HostTensor::from_f64(dtype, shape, &v.iter().map(|&x| x as f64).collect::<Vec<_>>()).unwrap()
}

fn clamp(i: f64, hi: i64) -> usize {
    (i as i64).clamp(0, hi) as usize
}

#[test]
fn take_rows_of_an_embedding_table_with_clamped_ids() {
    let table = random(&mut rng(1), DType::F32, &[5, 3], -1.0, 1.0);
    // Repeated ids and ids outside [0, 5) on both sides.
    let ids = ints(DType::I32, &[2, 4], &[0, 4, 4, -2, 7, 1, 2, 2]);
    let reference = |v: &[Vec<f64>]| {
        let mut out = Vec::new();
        for &id in &v[1] {
            let row = clamp(id, 4);
            out.extend_from_slice(&v[0][row * 3..row * 3 + 3]);
        }
        out
    };
    let out = check_forward(
        &[f32t(&[5, 3]), TensorType::new(DType::I32, &[2, 4])],
        &[table.clone(), ids.clone()],
        |p| p[0].take(&p[1], 0),
        reference,
        0.0,
        "take axis 0",
    );
    assert_eq!(out.shape, vec![2, 4, 3]);

    // The gradient adds the cotangent of every lookup into its (clamped) row.
    let ids_c = ids.clone();
    check_vjp(&[vec![5, 3]], &[table], move |p| p[0].take(&p[0].graph().constant(ids_c.clone()), 0), "take axis 0");
}

#[test]
fn take_along_a_middle_axis_with_i64_ids() {
    let x = random(&mut rng(2), DType::F32, &[2, 5, 3], -1.0, 1.0);
    let ids = random_ints(3, DType::I64, &[2, 2], -1, 6);
    let reference = |v: &[Vec<f64>]| {
        let mut out = Vec::new();
        for i in 0..2 {
            for &id in &v[1] {
                let j = clamp(id, 4);
                out.extend_from_slice(&v[0][i * 15 + j * 3..i * 15 + j * 3 + 3]);
            }
        }
        out
    };
    let out = check_forward(
        &[f32t(&[2, 5, 3]), TensorType::new(DType::I64, &[2, 2])],
        &[x.clone(), ids.clone()],
        |p| p[0].take(&p[1], 1),
        reference,
        0.0,
        "take axis 1",
    );
    assert_eq!(out.shape, vec![2, 2, 2, 3]);
    check_vjp(&[vec![2, 5, 3]], &[x], move |p| p[0].take(&p[0].graph().constant(ids.clone()), -2), "take axis 1");
}

#[test]
fn take_along_axis_matches_numpy() {
    let x = random(&mut rng(4), DType::F32, &[3, 4], -1.0, 1.0);
    let idx = random_ints(5, DType::I32, &[3, 6], -1, 5);
    let reference = |v: &[Vec<f64>]| {
        let mut out = Vec::new();
        for i in 0..3 {
            for j in 0..6 {
                out.push(v[0][i * 4 + clamp(v[1][i * 6 + j], 3)]);
            }
        }
        out
    };
    check_forward(
        &[f32t(&[3, 4]), TensorType::new(DType::I32, &[3, 6])],
        &[x.clone(), idx.clone()],
        |p| p[0].take_along_axis(&p[1], 1),
        reference,
        0.0,
        "take_along_axis 1",
    );
    check_vjp(&[vec![3, 4]], &[x.clone()], move |p| p[0].take_along_axis(&p[0].graph().constant(idx.clone()), -1), "take_along_axis 1");

    let idx0 = random_ints(6, DType::I32, &[2, 4], 0, 3);
    let reference0 = |v: &[Vec<f64>]| {
        let mut out = Vec::new();
        for i in 0..2 {
            for j in 0..4 {
                out.push(v[0][clamp(v[1][i * 4 + j], 2) * 4 + j]);
            }
        }
        out
    };
    check_forward(
        &[f32t(&[3, 4]), TensorType::new(DType::I32, &[2, 4])],
        &[x, idx0],
        |p| p[0].take_along_axis(&p[1], 0),
        reference0,
        0.0,
        "take_along_axis 0",
    );
}

#[test]
fn one_hot_marks_labels_and_zeroes_out_of_range_ones() {
    let labels = ints(DType::I32, &[2, 3], &[0, 3, 1, -1, 4, 2]);
    let reference = |v: &[Vec<f64>]| {
        let mut out = vec![0.0; 6 * 4];
        for (i, &l) in v[0].iter().enumerate() {
            if (0.0..4.0).contains(&l) {
                out[i * 4 + l as usize] = 1.0;
            }
        }
        out
    };
    let out = check_forward(
        &[TensorType::new(DType::I32, &[2, 3])],
        &[labels],
        |p| Tensor::one_hot(&p[0], 4, DType::BF16),
        reference,
        0.0,
        "one_hot",
    );
    assert_eq!((out.dtype, out.shape.clone()), (DType::BF16, vec![2, 3, 4]));
}

#[test]
fn general_gather_with_index_vectors_and_windows() {
    // Index vectors along indices dim 1 address operand dims (0, 2); windows of
    // [1, 2, 3] with dim 0 collapsed land in output dims (1, 2).
    let x = random(&mut rng(8), DType::F32, &[4, 5, 6], -1.0, 1.0);
    let idx = ints(DType::I32, &[3, 2], &[1, 2, 3, 5, -1, 9]);
    let dims = GatherDims { offset_dims: vec![1, 2], collapsed_slice_dims: vec![0], start_index_map: vec![0, 2], index_vector_dim: 1 };
    let reference = |v: &[Vec<f64>]| {
        let mut out = Vec::new();
        for b in 0..3 {
            let (s0, s2) = (clamp(v[1][b * 2], 3), clamp(v[1][b * 2 + 1], 3));
            for j in 0..2 {
                for k in 0..3 {
                    out.push(v[0][s0 * 30 + j * 6 + s2 + k]);
                }
            }
        }
        out
    };
    let d = dims.clone();
    let out = check_forward(
        &[f32t(&[4, 5, 6]), TensorType::new(DType::I32, &[3, 2])],
        &[x.clone(), idx.clone()],
        move |p| p[0].gather(&p[1], d.clone(), &[1, 2, 3]),
        reference,
        0.0,
        "gather",
    );
    assert_eq!(out.shape, vec![3, 2, 3]);
    check_vjp(&[vec![4, 5, 6]], &[x], move |p| p[0].gather(&p[0].graph().constant(idx.clone()), dims.clone(), &[1, 2, 3]), "gather");
}

#[test]
fn scatter_add_accumulates_repeats_and_drops_out_of_range_windows() {
    let x = random(&mut rng(9), DType::F32, &[5, 3], -1.0, 1.0);
    let u = random(&mut rng(10), DType::F32, &[4, 3], -1.0, 1.0);
    let idx = ints(DType::I32, &[4], &[2, 0, 2, 7]);
    let dims = ScatterDims {
        update_window_dims: vec![1],
        inserted_window_dims: vec![0],
        scatter_dims_to_operand_dims: vec![0],
        index_vector_dim: 1,
    };
    let reference = |v: &[Vec<f64>]| {
        let mut out = v[0].clone();
        for (b, &i) in v[1].iter().enumerate() {
            if (0.0..5.0).contains(&i) {
                for k in 0..3 {
                    out[i as usize * 3 + k] += v[2][b * 3 + k];
                }
            }
        }
        out
    };
    let d = dims.clone();
    check_forward(
        &[f32t(&[5, 3]), TensorType::new(DType::I32, &[4]), f32t(&[4, 3])],
        &[x.clone(), idx.clone(), u.clone()],
        move |p| p[0].scatter_add(&p[1], &p[2], d.clone()),
        reference,
        1e-6,
        "scatter_add",
    );
    check_vjp(
        &[vec![5, 3], vec![4, 3]],
        &[x, u],
        move |p| p[0].scatter_add(&p[0].graph().constant(idx.clone()), &p[1], dims.clone()),
        "scatter_add",
    );
}

#[test]
fn dynamic_slice_reads_a_clamped_window_at_runtime_starts() {
    let x = random(&mut rng(11), DType::F32, &[4, 5], -1.0, 1.0);
    let scalar = TensorType::new(DType::I32, &[]);
    let reference = |v: &[Vec<f64>]| {
        let (r0, c0) = (clamp(v[1][0], 2), clamp(v[2][0], 2));
        let mut out = Vec::new();
        for i in 0..2 {
            for j in 0..3 {
                out.push(v[0][(r0 + i) * 5 + c0 + j]);
            }
        }
        out
    };
    for (r, c) in [(1, 0), (3, 4), (-2, 1)] {
        check_forward(
            &[f32t(&[4, 5]), scalar.clone(), scalar.clone()],
            &[x.clone(), ints(DType::I32, &[], &[r]), ints(DType::I32, &[], &[c])],
            |p| p[0].dynamic_slice(&[&p[1], &p[2]], &[2, 3]),
            reference,
            0.0,
            "dynamic_slice",
        );
    }
    check_vjp(
        &[vec![4, 5]],
        &[x],
        |p| {
            let g = p[0].graph();
            let (r, c) = (g.scalar(3.0, DType::I32), g.scalar(1.0, DType::I64));
            p[0].dynamic_slice(&[&r, &c], &[2, 3])?.tanh()
        },
        "dynamic_slice",
    );
}

#[test]
fn dynamic_update_slice_writes_a_clamped_window() {
    let x = random(&mut rng(12), DType::F32, &[4, 5], -1.0, 1.0);
    let u = random(&mut rng(13), DType::F32, &[2, 2], -1.0, 1.0);
    let scalar = TensorType::new(DType::I32, &[]);
    let reference = |v: &[Vec<f64>]| {
        let (r0, c0) = (clamp(v[2][0], 2), clamp(v[3][0], 3));
        let mut out = v[0].clone();
        for i in 0..2 {
            for j in 0..2 {
                out[(r0 + i) * 5 + c0 + j] = v[1][i * 2 + j];
            }
        }
        out
    };
    for (r, c) in [(0, 1), (3, -1), (2, 9)] {
        check_forward(
            &[f32t(&[4, 5]), f32t(&[2, 2]), scalar.clone(), scalar.clone()],
            &[x.clone(), u.clone(), ints(DType::I32, &[], &[r]), ints(DType::I32, &[], &[c])],
            |p| p[0].dynamic_update_slice(&p[1], &[&p[2], &p[3]]),
            reference,
            0.0,
            "dynamic_update_slice",
        );
    }
    check_vjp(
        &[vec![4, 5], vec![2, 2]],
        &[x, u],
        |p| {
            let g = p[0].graph();
            let (r, c) = (g.scalar(1.0, DType::I32), g.scalar(3.0, DType::I32));
            p[0].dynamic_update_slice(&p[1].sin()?, &[&r, &c])?.square()
        },
        "dynamic_update_slice",
    );
}

#[test]
fn second_order_gradient_through_take() {
    // d/dw of sum((d/dtable sum(take(table, ids) * w)) * table): exercises the
    // VJPs of scatter_add and of gather built by the first VJP.
    let table = random(&mut rng(14), DType::F32, &[4, 2], -1.0, 1.0);
    let w = random(&mut rng(15), DType::F32, &[3, 2], -1.0, 1.0);
    let ids = ints(DType::I32, &[3], &[1, 3, 1]);
    check_vjp(
        &[vec![4, 2], vec![3, 2]],
        &[table, w],
        move |p| {
            let ids = p[0].graph().constant(ids.clone());
            let y = p[0].take(&ids, 0)?.mul(&p[1])?.sum_all()?;
            let dt = dalle_xla::graph::grad(&y, &[&p[0]])?.remove(0);
            dt.mul(&p[0])?.mul(&p[0])?.sum_all()?.reshape(&[1])
        },
        "second-order take",
    );
}

#[test]
fn bad_indexing_arguments_are_rejected_with_the_op_named() {
    let g = Graph::new("errors");
    let table = g.param("table", DType::F32, &[5, 3]);
    let float_ids = g.param("float_ids", DType::F32, &[2]);
    let ids = g.param("ids", DType::I32, &[2, 2]);

    let e = table.take(&float_ids, 0).unwrap_err().to_string();
    assert!(e.contains("take") && e.contains("integers"), "{e}");
    let e = table.take(&ids, 2).unwrap_err().to_string();
    assert!(e.contains("take") && e.contains("axis 2"), "{e}");
    let e = Tensor::one_hot(&ids, 0, DType::F32).unwrap_err().to_string();
    assert!(e.contains("one_hot") && e.contains("depth"), "{e}");
    let e = Tensor::one_hot(&float_ids, 3, DType::F32).unwrap_err().to_string();
    assert!(e.contains("one_hot"), "{e}");
    let e = table.take_along_axis(&ids, 0).unwrap_err().to_string();
    assert!(e.contains("take_along_axis"), "{e}");

    // Index vectors of length 2 but a one-entry start_index_map.
    let dims = GatherDims { offset_dims: vec![1], collapsed_slice_dims: vec![0], start_index_map: vec![0], index_vector_dim: 1 };
    let e = table.gather(&ids, dims, &[1, 3]).unwrap_err().to_string();
    assert!(e.contains("gather") && e.contains("start_index_map"), "{e}");

    let start = g.scalar(0.0, DType::I32);
    let e = table.dynamic_slice(&[&start], &[1, 1]).unwrap_err().to_string();
    assert!(e.contains("dynamic_slice") && e.contains("2 start indices"), "{e}");
    let e = table.dynamic_slice(&[&start, &start], &[6, 1]).unwrap_err().to_string();
    assert!(e.contains("dynamic_slice") && e.contains("[6, 1]"), "{e}");
    let big = g.zeros(DType::F32, &[6, 1]);
    let e = table.dynamic_update_slice(&big, &[&start, &start]).unwrap_err().to_string();
    assert!(e.contains("dynamic_update_slice") && e.contains("does not fit"), "{e}");
}
