//! while_loop and fori_loop: forward against plain Rust loops, fori_loop's VJP
//! (first and second order) against finite differences, and the errors.
mod common;
use common::*;
use dalle_xla::graph::{emit_module, fori_loop, fori_loop_storing, grad, while_loop, Function, Graph, ModuleOptions, Stores, Tensor, TensorType};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};

fn f32t(shape: &[i64]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

#[test]
fn while_loop_doubles_until_a_runtime_limit() {
    // Carries: x [2], the step count, and the limit (an outer value passed through).
    let types = [f32t(&[2]), TensorType::scalar(DType::I32), f32t(&[])];
    let cond = Function::build("cond", &types, |a| Ok(vec![a[0].max(&[0], false)?.lt(&a[2])?])).unwrap();
    let body = Function::build("body", &types, |a| {
        Ok(vec![a[0].scale(2.0)?.add_scalar(0.5)?, a[1].add_scalar(1.0)?, a[2].clone()])
    })
    .unwrap();
    let g = Graph::new("while");
    let x = g.param("x", DType::F32, &[2]);
    let limit = g.param("limit", DType::F32, &[]);
    let steps = g.scalar(0.0, DType::I32);
    let out = while_loop(&cond, &body, &[&x, &steps, &limit]).unwrap();
    let prog = compile(&g, &[&out[0], &out[1]]);

    for (xv, lim) in [([0.3, -1.0], 50.0), ([7.0, 2.0], 3.0), ([0.1, 0.2], 1000.0)] {
        let (mut rx, mut rn) = (xv.to_vec(), 0);
        while rx.iter().cloned().fold(f64::MIN, f64::max) < lim {
            rx = rx.iter().map(|v| v * 2.0 + 0.5).collect();
            rn += 1;
        }
        let res = prog
            .run(&[&HostTensor::from_f64(DType::F32, &[2], &xv).unwrap(), &HostTensor::from_f64(DType::F32, &[], &[lim]).unwrap()])
            .unwrap();
        assert_close(&res[0].to_f64_vec(), &rx, 1e-6, "while_loop carry");
        assert_eq!(res[1].to_f64_vec(), vec![rn as f64], "while_loop step count for limit {lim}");
    }
}

#[test]
fn differentiating_a_while_loop_is_a_clear_error() {
    let types = [f32t(&[])];
    let cond = Function::build("cond", &types, |a| Ok(vec![a[0].lt(&a[0].scalar_like(10.0))?])).unwrap();
    let body = Function::build("body", &types, |a| Ok(vec![a[0].scale(3.0)?])).unwrap();
    let g = Graph::new("while_grad");
    let x = g.param("x", DType::F32, &[]);
    let y = while_loop(&cond, &body, &[&x]).unwrap().remove(0);
    let e = grad(&y, &[&x]).unwrap_err().to_string();
    assert!(e.contains("while_loop") && e.contains("fori_loop"), "{e}");
}

/// x <- tanh(W x + 0.1 i) for i in 2..6; W passes through unchanged.
fn recurrence(p: &[Tensor]) -> dalle_xla::graph::Result<Tensor> {
    recurrence_storing(p, Stores::Nothing)
}

/// [`recurrence`] by a loop that stores `stores` for its VJP.
fn recurrence_storing(p: &[Tensor], stores: Stores) -> dalle_xla::graph::Result<Tensor> {
    let out = fori_loop_storing(stores, 2, 6, &[&p[0], &p[1]], |i, c| {
        let shift = i.cast(c[1].dtype())?.scale(0.1)?;
        Ok(vec![c[0].clone(), c[0].matmul(&c[1].unsqueeze(1)?)?.squeeze(1)?.add(&shift)?.tanh()?])
    })?;
    Ok(out[1].clone())
}

/// Loops and matrix products in the program of `sum(recurrence)` and its gradient.
fn loops_and_products_in_gradient(stores: Stores) -> (usize, usize) {
    let g = Graph::new("loops");
    let w = g.param("w", DType::F32, &[3, 3]);
    let x = g.param("x", DType::F32, &[3]);
    let y = recurrence_storing(&[w.clone(), x.clone()], stores).unwrap().sum_all().unwrap();
    let grads = grad(&y, &[&w, &x]).unwrap();
    let module = emit_module(&g, &[y, grads[0].clone(), grads[1].clone()], &ModuleOptions::default()).unwrap();
    (module.matches("stablehlo.while").count(), module.matches("stablehlo.dot_general").count())
}

fn recurrence_reference(v: &[Vec<f64>]) -> Vec<f64> {
    let (w, mut x) = (&v[0], v[1].clone());
    for i in 2..6 {
        x = (0..3).map(|r| ((0..3).map(|k| w[r * 3 + k] * x[k]).sum::<f64>() + 0.1 * i as f64).tanh()).collect();
    }
    x
}

#[test]
fn fori_loop_forward_and_vjp() {
    let mut r = rng(1);
    let w = random(&mut r, DType::F32, &[3, 3], -1.0, 1.0);
    let x = random(&mut r, DType::F32, &[3], -1.0, 1.0);
    check_forward(&[f32t(&[3, 3]), f32t(&[3])], &[w.clone(), x.clone()], recurrence, recurrence_reference, 1e-5, "fori_loop");
    check_vjp(&[vec![3, 3], vec![3]], &[w, x], recurrence, "fori_loop");
}

#[test]
fn loops_that_store_for_their_gradient_give_the_same_values_and_gradients_with_less_recomputation() {
    let mut r = rng(4);
    let w = random(&mut r, DType::F32, &[3, 3], -1.0, 1.0);
    let x = random(&mut r, DType::F32, &[3], -1.0, 1.0);
    for stores in [Stores::Carries, Stores::Activations] {
        let f = |p: &[Tensor]| recurrence_storing(p, stores);
        let what = format!("fori_loop storing {stores:?}");
        check_forward(&[f32t(&[3, 3]), f32t(&[3])], &[w.clone(), x.clone()], f, recurrence_reference, 1e-5, &what);
        check_vjp(&[vec![3, 3], vec![3]], &[w.clone(), x.clone()], f, &what);
    }
    // The loss and its gradient. Storing nothing, the gradient runs the loop
    // forward again (3 loops, 2 forward products) and the backward loop
    // recomputes the body's product besides its 2 for the gradient; storing
    // the carries saves the second forward loop; storing the activations
    // (the products) also saves recomputing the product.
    assert_eq!(loops_and_products_in_gradient(Stores::Nothing), (3, 5));
    assert_eq!(loops_and_products_in_gradient(Stores::Carries), (2, 4));
    assert_eq!(loops_and_products_in_gradient(Stores::Activations), (2, 3));
}

#[test]
fn a_storing_loop_without_a_gradient_stores_nothing() {
    // 4096 iterations of a [256] carry: stacking it would take 4 MiB.
    for stores in [Stores::Carries, Stores::Activations] {
        let g = Graph::new("forward_only");
        let x = g.param("x", DType::F32, &[256]);
        let y = fori_loop_storing(stores, 0, 4096, &[&x], |_, c| Ok(vec![c[0].sin()?.tanh()?])).unwrap().remove(0);
        let program = Program::compile(&client(), &g, &[&y], &ProgramOptions::replicated(1)).unwrap();
        let temporaries = program.exe.compiled_memory_stats().unwrap().temporaries;
        assert!(temporaries < 1 << 20, "a forward-only loop storing {stores:?} keeps {temporaries} bytes of temporaries");
    }
}

#[test]
fn a_second_order_gradient_through_a_storing_loop_is_a_clear_error() {
    for stores in [Stores::Carries, Stores::Activations] {
        let g = Graph::new("second");
        let w = g.param("w", DType::F32, &[3, 3]);
        let x = g.param("x", DType::F32, &[3]);
        let y = recurrence_storing(&[w.clone(), x.clone()], stores).unwrap().sum_all().unwrap();
        let dx = grad(&y, &[&x]).unwrap().remove(0);
        let z = dx.mul(&x).unwrap().sum_all().unwrap();
        let e = grad(&z, &[&w]).unwrap_err().to_string();
        assert!(e.contains("fori_loop_storing"), "{stores:?}: {e}");
    }
}

#[test]
fn fori_loop_vjp_stores_only_the_carries_that_change() {
    // W [3, 3] passes through the 4 iterations unchanged; x [3] changes. The
    // gradient program records x per iteration ([4, 3]) but never W ([4, 3, 3]):
    // scanned layers pass every layer's weights through like W.
    let g = Graph::new("recorded");
    let w = g.param("w", DType::F32, &[3, 3]);
    let x = g.param("x", DType::F32, &[3]);
    let y = recurrence(&[w.clone(), x.clone()]).unwrap().sum_all().unwrap();
    let grads = grad(&y, &[&w, &x]).unwrap();
    let module = emit_module(&g, &grads, &ModuleOptions::default()).unwrap();
    assert!(module.contains("tensor<4x3xf32>"), "the changing carry is recorded per iteration");
    assert!(!module.contains("tensor<4x3x3xf32>"), "the invariant carry must not be stacked:\n{module}");
}

#[test]
fn fori_loop_vjp_with_integer_carries_and_a_dynamic_index() {
    // Carries: an accumulator, a table read at a counter carried as i32, the counter.
    let f = |p: &[Tensor]| {
        let k0 = p[0].graph().scalar(1.0, DType::I32);
        let out = fori_loop(0, 3, &[&p[0], &p[1], &k0], |_, c| {
            let row = c[1].dynamic_slice(&[&c[2], &c[2].zeros_like()?], &[1, 2])?.squeeze(0)?;
            Ok(vec![c[0].mul(&row)?.add(&row.sin()?)?, c[1].clone(), c[2].add_scalar(1.0)?])
        })?;
        out[0].mul(&out[0])
    };
    let reference = |v: &[Vec<f64>]| {
        let mut acc = v[0].clone();
        for k in 1..4usize {
            acc = (0..2).map(|j| acc[j] * v[1][k * 2 + j] + v[1][k * 2 + j].sin()).collect();
        }
        acc.iter().map(|a| a * a).collect()
    };
    let mut r = rng(2);
    let acc = random(&mut r, DType::F32, &[2], -1.0, 1.0);
    let table = random(&mut r, DType::F32, &[4, 2], -1.0, 1.0);
    check_forward(&[f32t(&[2]), f32t(&[4, 2])], &[acc.clone(), table.clone()], f, reference, 1e-5, "fori_loop int carries");
    check_vjp(&[vec![2], vec![4, 2]], &[acc, table], f, "fori_loop int carries");
}

#[test]
fn second_order_gradient_through_fori_loop() {
    // g(W, x) = sum(d/dx sum(loop(W, x)) * x): the inner gradient is itself a
    // pair of loops, which the outer gradient differentiates.
    let f = |p: &[Tensor]| {
        let y = recurrence(p)?.sum_all()?;
        let dx = grad(&y, &[&p[1]])?.remove(0);
        dx.mul(&p[1])?.sum_all()?.reshape(&[1])
    };
    let mut r = rng(3);
    let w = random(&mut r, DType::F32, &[3, 3], -1.0, 1.0);
    let x = random(&mut r, DType::F32, &[3], -1.0, 1.0);
    check_vjp(&[vec![3, 3], vec![3]], &[w, x], f, "second-order fori_loop");
}

#[test]
fn nested_fori_loops() {
    // s = sum over i in 0..3, j in 0..4 of (i * x + j).
    let f = |p: &[Tensor]| {
        let out = fori_loop(0, 3, &[&p[0], &p[1]], |i, c| {
            let inner = fori_loop(0, 4, &[&c[0], &c[1], i], |j, d| {
                let dt = d[0].dtype();
                let term = d[0].mul(&d[2].cast(dt)?)?.add(&j.cast(dt)?)?;
                Ok(vec![d[0].clone(), d[1].add(&term)?, d[2].clone()])
            })?;
            Ok(vec![c[0].clone(), inner[1].clone()])
        })?;
        Ok(out[1].clone())
    };
    let reference = |v: &[Vec<f64>]| {
        (0..2)
            .map(|k| {
                let mut s = v[1][k];
                for i in 0..3 {
                    for j in 0..4 {
                        s += i as f64 * v[0][k] + j as f64;
                    }
                }
                s
            })
            .collect()
    };
    let mut r = rng(4);
    let x = random(&mut r, DType::F32, &[2], -1.0, 1.0);
    let s = random(&mut r, DType::F32, &[2], -1.0, 1.0);
    check_forward(&[f32t(&[2]), f32t(&[2])], &[x.clone(), s.clone()], f, reference, 1e-5, "nested fori_loop");
    check_vjp(&[vec![2], vec![2]], &[x, s], f, "nested fori_loop");
}

#[test]
fn empty_fori_loop_returns_its_init() {
    let g = Graph::new("empty");
    let x = g.param("x", DType::F32, &[2]);
    let out = fori_loop(5, 5, &[&x], |_, c| Ok(vec![c[0].scale(2.0)?])).unwrap();
    assert_eq!(out[0].id(), x.id());
}

#[test]
fn bad_loops_are_rejected_with_the_op_named() {
    let g = Graph::new("bad");
    let x = g.param("x", DType::F32, &[2]);

    let e = fori_loop(0, 3, &[&x], |_, c| Ok(vec![c[0].sum_all()?])).unwrap_err().to_string();
    assert!(e.contains("fori_loop") && e.contains("carry types"), "{e}");
    let e = fori_loop(0, 1 << 40, &[&x], |_, c| Ok(c.to_vec())).unwrap_err().to_string();
    assert!(e.contains("fori_loop") && e.contains("i32"), "{e}");
    let e = fori_loop(0, 3, &[], |_, c| Ok(c.to_vec())).unwrap_err().to_string();
    assert!(e.contains("fori_loop"), "{e}");
    // A body capturing an outer tensor instead of taking it as a carry.
    let e = fori_loop(0, 3, &[&x], |_, c| Ok(vec![c[0].add(&x)?])).unwrap_err().to_string();
    assert!(e.contains("belongs to graph"), "{e}");

    let types = [f32t(&[2])];
    let not_bool = Function::build("cond", &types, |a| Ok(vec![a[0].sum_all()?])).unwrap();
    let body = Function::build("body", &types, |a| Ok(vec![a[0].clone()])).unwrap();
    let e = while_loop(&not_bool, &body, &[&x]).unwrap_err().to_string();
    assert!(e.contains("while_loop") && e.contains("bool scalar"), "{e}");
    let cond = Function::build("cond", &types, |a| Ok(vec![a[0].sum_all()?.gt(&a[0].scalar_like(0.0))?])).unwrap();
    let y = g.param("y", DType::F32, &[3]);
    let e = while_loop(&cond, &body, &[&y]).unwrap_err().to_string();
    assert!(e.contains("while_loop") && e.contains("carries"), "{e}");
}
