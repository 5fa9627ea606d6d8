//! Optimizer steps over scanned layer stacks: the same tensor of every layer
//! updated in one loop gives the updates of the tensors one by one, for every
//! optimizer, and the program holds one step per stack whatever its depth.
mod common;
use common::*;
use dalle_xla::graph::{emit_module, Graph, ModuleOptions, Tensor};
use dalle_xla::optim::{AdamW, Adafactor, Optimizer, Shampoo, StepScalars};
use dalle_xla::{DType, HostTensor};

/// Shampoo that preconditions from its third step, refreshes every third
/// step and cuts [24, 20] into several blocks, so that a few steps cover
/// statistics, refreshes and preconditioned updates.
fn busy_shampoo() -> Shampoo {
    Shampoo { block_size: 8, start_preconditioning_step: 2, preconditioning_compute_steps: 3, weight_decay: 0.01, ..Shampoo::default() }
}

fn optimizers() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("adamw", Box::new(AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 })),
        ("adafactor", Box::new(Adafactor::default())),
        ("shampoo", Box::new(busy_shampoo())),
    ]
}

#[test]
fn a_stack_updated_in_one_loop_equals_its_layers_updated_one_by_one() {
    let steps = 8;
    let mut r = rng(3);
    // Three layers' [24, 20] kernel and [20] bias, and a parameter outside the stacks.
    let shapes: [&[i64]; 7] = [&[24, 20], &[20], &[24, 20], &[20], &[24, 20], &[20], &[6, 5]];
    let values: Vec<HostTensor> = shapes.iter().map(|s| random(&mut r, DType::F32, s, -1.0, 1.0)).collect();
    let grads: Vec<Vec<HostTensor>> = shapes.iter().map(|s| (0..steps).map(|_| random(&mut r, DType::F32, s, -0.5, 0.5)).collect()).collect();
    let parameters: Vec<(&HostTensor, &[HostTensor])> = values.iter().zip(&grads).map(|(v, g)| (v, g.as_slice())).collect();
    let stacks = [vec![0, 2, 4], vec![1, 3, 5]];
    for (name, opt) in optimizers() {
        let want = optimizer_steps_together(&*opt, &parameters, 0.01);
        let got = optimizer_steps_stacked(&*opt, &parameters, 0.01, &stacks);
        for (k, ((want_history, want_state), (got_history, got_state))) in want.iter().zip(&got).enumerate() {
            for (step, (w, g)) in want_history.iter().zip(got_history).enumerate() {
                assert_close(g, w, 1e-6, &format!("{name}: parameter {k} after step {}", step + 1));
            }
            // The parameter moved: the comparison is not between two unchanged values.
            assert!(want_history[steps - 1].iter().zip(values[k].to_f64_vec()).any(|(a, b)| a != &b), "{name}: parameter {k} never moved");
            for ((suffix, w), (_, g)) in want_state.iter().zip(got_state) {
                assert_close(g, w, 1e-6, &format!("{name}: state {suffix} of parameter {k}"));
            }
        }
    }
}

/// StableHLO of one update of `layers` layers of a [24, 20] kernel, stacked or not.
fn update_program(opt: &dyn Optimizer, layers: usize, stacked: bool) -> String {
    let g = Graph::new("update");
    let params: Vec<Tensor> = (0..layers).map(|k| g.param(&format!("w{k}"), DType::F32, &[24, 20])).collect();
    let grads: Vec<Tensor> = (0..layers).map(|k| g.param(&format!("g{k}"), DType::F32, &[24, 20])).collect();
    let state: Vec<Vec<Tensor>> =
        params.iter().enumerate().map(|(k, p)| opt.state(p.ty()).iter().map(|s| g.param(&format!("w{k}/{}", s.suffix), s.ty.dtype, &s.ty.shape)).collect()).collect();
    let (lr, count) = (g.param("lr", DType::F32, &[]), g.param("count", DType::F32, &[]));
    let stacks = if stacked { vec![(0..layers).collect::<Vec<_>>()] } else { vec![] };
    let updated = opt.update_all(&params, &grads, &state, &StepScalars { lr: &lr, count: &count, partitions: 1 }, &stacks).unwrap();
    let outs: Vec<Tensor> = updated.into_iter().flat_map(|(p, st)| std::iter::once(p).chain(st)).collect();
    emit_module(&g, &outs, &ModuleOptions::default()).unwrap()
}

/// The update's arithmetic: divisions, square roots and matrix products (the
/// stacking around it only concatenates and slices).
fn arithmetic_ops(program: &str) -> usize {
    ["stablehlo.divide", "stablehlo.sqrt", "stablehlo.rsqrt", "stablehlo.dot_general"].iter().map(|op| program.matches(op).count()).sum()
}

#[test]
fn a_stacked_update_does_not_grow_with_depth() {
    for (name, opt) in optimizers() {
        let ops = |layers, stacked| arithmetic_ops(&update_program(&*opt, layers, stacked));
        let (one_by_one4, one_by_one16) = (ops(4, false), ops(16, false));
        let (stacked4, stacked16) = (ops(4, true), ops(16, true));
        assert!(one_by_one4 > 0, "{name}: no arithmetic found in the program");
        // One by one, each layer's update is in the program.
        assert!(one_by_one16 >= one_by_one4 + 12, "{name}: one by one, {one_by_one4} -> {one_by_one16} ops for 4 -> 16 layers");
        assert_eq!(stacked16, stacked4, "{name}: stacked, the update is in the program once whatever the depth");
        assert!(stacked4 < one_by_one4, "{name}: stacked {stacked4} ops against {one_by_one4} for 4 layers one by one");
    }
}

#[test]
fn a_stack_of_parameters_of_different_types_is_refused() {
    let g = Graph::new("update");
    let opt = AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let params = vec![g.param("a", DType::F32, &[4, 3]), g.param("b", DType::F32, &[3, 4])];
    let grads = params.clone();
    let state: Vec<Vec<Tensor>> =
        params.iter().enumerate().map(|(k, p)| opt.state(p.ty()).iter().map(|s| g.param(&format!("p{k}/{}", s.suffix), s.ty.dtype, &s.ty.shape)).collect()).collect();
    let (lr, count) = (g.param("lr", DType::F32, &[]), g.param("count", DType::F32, &[]));
    let err = opt.update_all(&params, &grads, &state, &StepScalars { lr: &lr, count: &count, partitions: 1 }, &[vec![0, 1]]).err().expect("refused");
    assert!(err.to_string().contains("differ in type"), "{err}");
}
