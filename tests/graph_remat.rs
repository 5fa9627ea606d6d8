//! Rematerialisation: same gradients as without it, and the recomputation is
//! really in the program, fenced by an optimisation barrier.
mod common;
use common::*;
use dalle_xla::graph::{emit_module, grad, remat, Graph, ModuleOptions, Tensor};
use dalle_xla::DType;

/// A small MLP block with two outputs: `sin(tanh(x w1) w2)` and `tanh(x w1)`.
fn block(p: &[Tensor]) -> dalle_xla::graph::Result<Vec<Tensor>> {
    let h = p[0].matmul(&p[1])?.tanh()?;
    Ok(vec![h.matmul(&p[2])?.sin()?, h])
}

fn loss_of(y: &Tensor) -> Tensor {
    y.square().unwrap().sum_all().unwrap()
}

/// Builds the loss with or without remat and returns (graph, loss, grads).
fn build(with_remat: bool) -> (Graph, Tensor, Vec<Tensor>) {
    let g = Graph::new(if with_remat { "remat" } else { "plain" });
    let x = g.param("x", DType::F32, &[4, 8]);
    let w1 = g.param("w1", DType::F32, &[8, 8]);
    let w2 = g.param("w2", DType::F32, &[8, 3]);
    let outs = if with_remat { remat(block, &[&x, &w1, &w2]).unwrap() } else { block(&[x.clone(), w1.clone(), w2.clone()]).unwrap() };
    // Only the first output feeds the loss: the second gets no cotangent.
    let loss = loss_of(&outs[0]);
    let grads = grad(&loss, &[&x, &w1, &w2]).unwrap();
    (g, loss, grads)
}

#[test]
fn remat_gradients_equal_plain_gradients() {
    let mut r = rng(30);
    let inputs = [random(&mut r, DType::F32, &[4, 8], -1.0, 1.0), random(&mut r, DType::F32, &[8, 8], -1.0, 1.0), random(&mut r, DType::F32, &[8, 3], -1.0, 1.0)];
    let refs: Vec<_> = inputs.iter().collect();
    let run = |with_remat: bool| {
        let (g, loss, grads) = build(with_remat);
        let mut outs = vec![&loss];
        outs.extend(grads.iter());
        compile(&g, &outs).run(&refs).unwrap()
    };
    let (plain, rem) = (run(false), run(true));
    for (i, (a, b)) in plain.iter().zip(&rem).enumerate() {
        assert_close(&b.to_f64_vec(), &a.to_f64_vec(), 1e-5, &format!("output {i} (loss, dx, dw1, dw2)"));
    }
    // And against finite differences in f64.
    check_vjp(&[vec![4, 8], vec![8, 8], vec![8, 3]], &inputs, |p| Ok(remat(block, &[&p[0], &p[1], &p[2]])?.remove(0)), "remat block");
}

#[test]
fn emitted_module_recomputes_behind_an_optimization_barrier() {
    let text = |with_remat: bool| {
        let (g, _, grads) = build(with_remat);
        emit_module(&g, &grads, &ModuleOptions::default()).unwrap()
    };
    let (plain, rem) = (text(false), text(true));
    let count = |s: &str, op: &str| s.lines().filter(|l| l.contains(op)).count();
    assert_eq!(count(&plain, "stablehlo.tanh"), 1, "plain program computes tanh once:\n{plain}");
    assert_eq!(count(&plain, "stablehlo.optimization_barrier"), 0);
    assert_eq!(count(&rem, "stablehlo.tanh"), 2, "remat program recomputes tanh:\n{rem}");

    // The recomputation reads the barrier's results: the barrier fences the three
    // inputs and the cotangent, and the second tanh comes after it.
    let lines: Vec<&str> = rem.lines().collect();
    let barrier = lines
        .iter()
        .position(|l| l.contains("stablehlo.optimization_barrier") && l.matches("tensor<").count() >= 8)
        .unwrap_or_else(|| panic!("no barrier over inputs and cotangent:\n{rem}"));
    let barrier_name = lines[barrier].trim().split(':').next().unwrap().trim().to_string();
    let second_tanh = lines.iter().rposition(|l| l.contains("stablehlo.tanh")).unwrap();
    assert!(second_tanh > barrier, "recomputed tanh (line {second_tanh}) must follow the barrier (line {barrier})");
    let recompute_dot = lines[barrier..second_tanh]
        .iter()
        .find(|l| l.contains("stablehlo.dot_general"))
        .unwrap_or_else(|| panic!("no recomputed matmul between barrier and tanh:\n{rem}"));
    assert!(recompute_dot.contains(&format!("{barrier_name}#0")), "recomputed matmul reads barrier outputs: {recompute_dot}");
}

#[test]
fn remat_rejects_captured_tensors() {
    let g = Graph::new("capture");
    let x = g.param("x", DType::F32, &[3]);
    let outside = g.param("w", DType::F32, &[3]);
    let w = outside.clone();
    let e = remat(move |p| Ok(vec![p[0].mul(&w)?]), &[&x]).unwrap_err().to_string();
    assert!(e.contains("remat") && e.contains("not one of its inputs"), "{e}");
    let w = outside.clone();
    let e = remat(move |_| Ok(vec![w.clone()]), &[&x]).unwrap_err().to_string();
    assert!(e.contains("remat") && e.contains("did not compute"), "{e}");
}
