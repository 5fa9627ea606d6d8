//! Distributed Shampoo against optax-shampoo 0.0.6 (tests/fixtures/shampoo,
//! written by tools/make_shampoo_fixture.py), its inverse p-th root on its
//! own, its config errors, and a short DalleBart training with it.
mod common;
use common::*;
use dalle_xla::graph::{emit_module, Graph, ModuleOptions, Tensor};
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::optim::{inverse_pth_root, inverse_pth_roots, inverse_pth_roots_in_chunks, Graft, Optimizer, OptimizerConfig, Shampoo, StepScalars};
use dalle_xla::{DType, HostTensor};
use std::collections::BTreeMap;

fn fixture() -> (BTreeMap<String, HostTensor>, serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shampoo/steps.safetensors");
    let (tensors, meta) = dalle_xla::weights::load_safetensors_with_metadata(&path).unwrap();
    (tensors, serde_json::from_str(&meta["settings"]).unwrap())
}

fn row(t: &HostTensor, i: usize, shape: &[i64]) -> HostTensor {
    let n = shape.iter().product::<i64>() as usize;
    HostTensor::from_f64(DType::F32, shape, &t.to_f64_vec()[i * n..(i + 1) * n]).unwrap()
}

fn fixture_optimizer(s: &serde_json::Value) -> Shampoo {
    let int = |k: &str| s[k].as_i64().unwrap();
    let float = |k: &str| s[k].as_f64().unwrap();
    Shampoo {
        beta1: float("beta1"),
        beta2: float("beta2"),
        weight_decay: float("weight_decay"),
        block_size: int("block_size"),
        merge_small_dims_block_size: int("merge_small_dims_block_size"),
        skip_preconditioning_dim_size_gt: int("skip_preconditioning_dim_size_gt"),
        start_preconditioning_step: int("start_preconditioning_step"),
        preconditioning_compute_steps: int("preconditioning_compute_steps"),
        graft: Graft::RmspropNormalized,
        nesterov: false,
        ..Shampoo::default()
    }
}

/// Each fixture parameter's name, initial value and gradients.
fn fixture_parameters(f: &BTreeMap<String, HostTensor>, steps: usize) -> Vec<(String, HostTensor, Vec<HostTensor>)> {
    let names: Vec<String> = f.keys().filter_map(|k| k.strip_suffix("/init").map(String::from)).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    names
        .into_iter()
        .map(|name| {
            let shape = f[&format!("{name}/grads")].shape[1..].to_vec();
            let p0 = HostTensor::from_f64(DType::F32, &shape, &f[&format!("{name}/init")].to_f64_vec()).unwrap();
            let grads = (0..steps).map(|t| row(&f[&format!("{name}/grads")], t, &shape)).collect();
            (name, p0, grads)
        })
        .collect()
}

/// Where the reference's statistic k (block by block, last dimension
/// fastest, then each dimension of the block) sits in our state: (index among
/// our statistic stacks, row of that stack). Our stacks hold the blocks of one
/// shape together: per dimension, the full blocks first and the remainder
/// block second, groups ordered with the last dimension fastest, each group's
/// blocks in row-major order, then each dimension.
fn reference_order(merged: &[i64], block: i64) -> Vec<(usize, usize)> {
    // Per dimension, per piece: (run, index in run); and per run, its count.
    let pieces: Vec<Vec<(usize, i64)>> = merged
        .iter()
        .map(|&d| if block < d { (0..(d + block - 1) / block).map(|j| if j < d / block { (0, j) } else { (1, 0) }).collect() } else { vec![(0, 0)] })
        .collect();
    let runs: Vec<usize> = pieces.iter().map(|p| p.iter().map(|&(r, _)| r + 1).max().unwrap()).collect();
    let count = |d: usize, run: usize| pieces[d].iter().filter(|&&(r, _)| r == run).count() as i64;
    let rank = merged.len();
    let mut out = vec![];
    let mut index = vec![0usize; rank];
    loop {
        let (mut group, mut row) = (0, 0i64);
        for d in 0..rank {
            let (run, j) = pieces[d][index[d]];
            group = group * runs[d] + run;
            row = row * count(d, run) + j;
        }
        for axis in 0..rank {
            out.push((group * rank + axis, row as usize));
        }
        // Next block, the last dimension fastest.
        let mut d = rank;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < pieces[d].len() {
                break;
            }
            index[d] = 0;
        }
    }
}

/// A parameter's values after each step and its final state, against the fixture.
fn check_against_fixture(f: &BTreeMap<String, HostTensor>, name: &str, history: &[Vec<f64>], state: &[(String, Vec<f64>)], how: &str) {
    let shape = f[&format!("{name}/grads")].shape[1..].to_vec();
    let want = &f[&format!("{name}/params")];
    for (t, got) in history.iter().enumerate() {
        assert_close(got, &row(want, t, &shape).to_f64_vec(), 1e-4, &format!("{how}: {name} after step {}", t + 1));
    }
    let reference_name = |suffix: &str| match suffix {
        "graft_nu" => "diag",
        "graft_momentum" => "diag_momentum",
        "shampoo_momentum" => "momentum",
        s => panic!("{how}: {name}: unexpected state {s}"),
    };
    for (suffix, got) in &state[..3] {
        assert_close(got, &f[&format!("{name}/{}", reference_name(suffix))].to_f64_vec(), 1e-4, &format!("{how}: {name}/{suffix}"));
    }
    // The fixture's merged shapes (merge_small_dims_block_size 16) and block size 4.
    let merged: &[i64] = match name {
        "a_matrix" | "b_merged" => &[6, 10],
        "d_vector" => &[7],
        _ => &[],
    };
    let order = if merged.is_empty() { vec![] } else { reference_order(merged, 4) };
    let stacks = (state.len() - 3) / 2;
    assert_eq!(state.len(), 3 + 2 * stacks, "{how}: {name}: state tensors {:?}", state.iter().map(|s| &s.0).collect::<Vec<_>>());
    for (kind, reference) in [("shampoo_stat", "stat"), ("shampoo_precond", "precond")] {
        let ours: Vec<&Vec<f64>> = (0..stacks).map(|j| &state.iter().find(|(s, _)| *s == format!("{kind}{j}")).unwrap_or_else(|| panic!("{how}: {name}: no {kind}{j}")).1).collect();
        let (ours_total, reference_total): (usize, usize) = (ours.iter().map(|v| v.len()).sum(), (0..order.len()).map(|k| f[&format!("{name}/{reference}{k}")].numel()).sum());
        assert_eq!(ours_total, reference_total, "{how}: {name}: our {kind} stacks hold {ours_total} values, the reference's {} matrices {reference_total}", order.len());
        for (k, &(stack, r)) in order.iter().enumerate() {
            let want = f[&format!("{name}/{reference}{k}")].to_f64_vec();
            let n2 = want.len();
            let got = ours[stack].get(r * n2..(r + 1) * n2).unwrap_or_else(|| panic!("{how}: {name}: {kind}{stack} has no row {r}"));
            if reference == "precond" {
                // The fixture must exercise the inverse roots, not keep the identity.
                let n = (n2 as f64).sqrt() as usize;
                let off_identity = want.iter().enumerate().map(|(k, v)| (v - if k % (n + 1) == 0 { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max);
                assert!(off_identity > 1e-2, "{name}/{reference}{k} is still the identity");
            }
            assert_close(got, &want, 1e-4, &format!("{how}: {name}/{reference}{k} (our {kind}{stack}, row {r})"));
        }
    }
}

#[test]
fn matches_optax_shampoo_step_by_step() {
    let (f, s) = fixture();
    let opt = fixture_optimizer(&s);
    let steps = s["steps"].as_u64().unwrap() as usize;
    for (name, p0, grads) in fixture_parameters(&f, steps) {
        let (history, state) = optimizer_steps(&opt, &p0, &grads, s["learning_rate"].as_f64().unwrap());
        check_against_fixture(&f, &name, &history, &state, "one parameter per program");
    }
}

/// Trainers update all parameters in one program, where Shampoo stacks every
/// parameter's statistics of one size into one inverse-root loop: the
/// parameters' results must not mix. Here the refresh inverts one matrix at a
/// time (the chunked path mega's memory needs).
#[test]
fn all_parameters_updated_together_match_optax_shampoo() {
    let (f, s) = fixture();
    let opt = Shampoo { refresh_chunk_bytes: 1, ..fixture_optimizer(&s) };
    let steps = s["steps"].as_u64().unwrap() as usize;
    let parameters = fixture_parameters(&f, steps);
    let inputs: Vec<(&HostTensor, &[HostTensor])> = parameters.iter().map(|(_, p0, grads)| (p0, grads.as_slice())).collect();
    let runs = optimizer_steps_together(&opt, &inputs, s["learning_rate"].as_f64().unwrap());
    for ((name, _, _), (history, state)) in parameters.iter().zip(&runs) {
        check_against_fixture(&f, name, history, state, "all parameters in one program");
    }
}

/// One inverse-root loop per kind of statistic, however many parameters:
/// the program (and its compile time) must not grow a loop per parameter.
#[test]
fn inverse_root_loops_do_not_grow_with_the_parameter_count() {
    let loops = |count: usize| {
        let g = Graph::new("shampoo_loops");
        let opt = Shampoo { block_size: 8, ..Shampoo::default() };
        let params: Vec<Tensor> = (0..count).map(|k| g.param(&format!("w{k}"), DType::F32, &[16, 12])).collect();
        let grads: Vec<Tensor> = (0..count).map(|k| g.param(&format!("g{k}"), DType::F32, &[16, 12])).collect();
        let state: Vec<Vec<Tensor>> =
            params.iter().enumerate().map(|(k, p)| opt.state(p.ty()).iter().map(|s| g.param(&format!("w{k}/{}", s.suffix), s.ty.dtype, &s.ty.shape)).collect()).collect();
        let (lr, count_t) = (g.param("lr", DType::F32, &[]), g.param("count", DType::F32, &[]));
        let updated = opt.update_all(&params, &grads, &state, &StepScalars { lr: &lr, count: &count_t, partitions: 1 }, &[]).unwrap();
        let outs: Vec<Tensor> = updated.into_iter().flat_map(|(p, st)| std::iter::once(p).chain(st)).collect();
        emit_module(&g, &outs, &ModuleOptions::default()).unwrap().matches("stablehlo.while").count()
    };
    let (two, twelve) = (loops(2), loops(12));
    assert!(two > 0, "no loops emitted at all");
    assert_eq!(two, twelve, "inverse-root loops for 2 parameters: {two}, for 12: {twelve}");
}

/// `x^p` of a square row-major matrix, in f64.
fn mat_pow(x: &[f64], n: usize, p: u32) -> Vec<f64> {
    let mul = |a: &[f64], b: &[f64]| -> Vec<f64> { (0..n * n).map(|k| (0..n).map(|j| a[k / n * n + j] * b[j * n + k % n]).sum()).collect() };
    let mut out: Vec<f64> = (0..n * n).map(|k| if k % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
    for _ in 0..p {
        out = mul(&out, x);
    }
    out
}

fn check_root(m: &[f64], x: &[f64], n: usize, p: u32, what: &str) {
    let xp = mat_pow(x, n, p);
    let product: Vec<f64> = (0..n * n).map(|k| (0..n).map(|j| xp[k / n * n + j] * m[j * n + k % n]).sum()).collect();
    let identity: Vec<f64> = (0..n * n).map(|k| if k % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
    assert_close(&product, &identity, 2e-3, what);
}

#[test]
fn inverse_pth_root_of_random_spd_matrices() {
    let mut r = rng(3);
    for (n, p) in [(8usize, 4u32), (8, 2), (5, 4), (1, 2)] {
        // A Aᵀ + 0.1 I: symmetric positive definite, condition number in the
        // hundreds; the second of the stack is 100 times larger.
        let a = random(&mut r, DType::F32, &[n as i64, n as i64], -1.0, 1.0).to_f64_vec();
        let m: Vec<f64> = (0..n * n).map(|k| (0..n).map(|j| a[k / n * n + j] * a[k % n * n + j]).sum::<f64>() + if k % (n + 1) == 0 { 0.1 } else { 0.0 }).collect();
        let stack: Vec<f64> = m.iter().copied().chain(m.iter().map(|v| v * 100.0)).collect();
        let (ni, what) = (n as i64, format!("X^{p} M for n = {n}"));

        let g = Graph::new("root");
        let mt = g.param("m", DType::F32, &[ni, ni]);
        let (root, error) = inverse_pth_root(&mt, p, 1e-6).unwrap();
        let out = compile(&g, &[&root, &error]).run(&[&HostTensor::from_f64(DType::F32, &[ni, ni], &m).unwrap()]).unwrap();
        check_root(&m, &out[0].to_f64_vec(), n, p, &what);
        assert!(out[1].to_f64_vec()[0] < 1e-3, "{what}: reported error {:?}", out[1].to_f64_vec());

        let g = Graph::new("roots");
        let mt = g.param("m", DType::F32, &[2, ni, ni]);
        let (roots, errors) = inverse_pth_roots(&mt, p, 1e-6).unwrap();
        let out = compile(&g, &[&roots, &errors]).run(&[&HostTensor::from_f64(DType::F32, &[2, ni, ni], &stack).unwrap()]).unwrap();
        let x = out[0].to_f64_vec();
        check_root(&m, &x[..n * n], n, p, &format!("{what} (stacked)"));
        check_root(&stack[n * n..], &x[n * n..], n, p, &format!("{what} (stacked, x100)"));
        assert!(out[1].to_f64_vec().iter().all(|&e| e < 1e-3), "{what}: reported errors {:?}", out[1].to_f64_vec());
    }
}

/// The refresh inverts a stack a chunk at a time, padding the last chunk with
/// identities: every matrix must get the root it gets in one whole-stack
/// iteration, and the padding must not show.
#[test]
fn inverse_roots_in_chunks_equal_the_whole_stack() {
    let mut r = rng(11);
    let (n, k, p) = (6usize, 5usize, 4u32);
    let mut stack = Vec::new();
    for scale in [1.0, 30.0, 0.01, 5.0, 1000.0] {
        let a = random(&mut r, DType::F32, &[n as i64, n as i64], -1.0, 1.0).to_f64_vec();
        stack.extend((0..n * n).map(|i| scale * ((0..n).map(|j| a[i / n * n + j] * a[i % n * n + j]).sum::<f64>() + if i % (n + 1) == 0 { 0.5 } else { 0.0 })));
    }
    let shape = [k as i64, n as i64, n as i64];
    let input = HostTensor::from_f64(DType::F32, &shape, &stack).unwrap();
    let run = |chunk: Option<i64>| {
        let g = Graph::new("roots");
        let m = g.param("m", DType::F32, &shape);
        let (roots, errors) = match chunk {
            Some(c) => inverse_pth_roots_in_chunks(&m, p, 1e-6, 1, c).unwrap(),
            None => inverse_pth_roots(&m, p, 1e-6).unwrap(),
        };
        let hlo = emit_module(&g, &[roots.clone(), errors.clone()], &ModuleOptions::default()).unwrap();
        let out = compile(&g, &[&roots, &errors]).run(&[&input]).unwrap();
        (out[0].to_f64_vec(), out[1].to_f64_vec(), hlo.matches("stablehlo.while").count())
    };
    let (whole, whole_errors, whole_loops) = run(None);
    let (chunked, chunked_errors, chunked_loops) = run(Some(2));
    assert_eq!(chunked.len(), whole.len(), "chunked roots have the stack's shape");
    assert!(chunked_loops > whole_loops, "chunks of 2 of 5 matrices emitted no chunk loop ({chunked_loops} loops, {whole_loops} without chunks)");
    assert!(whole_errors.iter().all(|&e| e < 1e-3), "whole-stack errors {whole_errors:?}");
    for i in 0..k {
        let at = i * n * n..(i + 1) * n * n;
        assert_close(&chunked[at.clone()], &whole[at.clone()], 1e-6, &format!("root {i} in chunks against the whole stack"));
        check_root(&stack[at.clone()], &chunked[at], n, p, &format!("chunked root {i}"));
    }
    assert_close(&chunked_errors, &whole_errors, 1e-6, "errors in chunks against the whole stack");
}

#[test]
fn bad_shampoo_settings_are_refused_naming_the_key() {
    let shampoo = OptimizerConfig { kind: "shampoo".into(), ..OptimizerConfig::default() };
    assert!(shampoo.validate().is_ok());
    let built = shampoo.shampoo().unwrap();
    assert_eq!((built.block_size, built.preconditioning_compute_steps, built.start_preconditioning_step), (1024, 10, 101));
    assert_eq!(OptimizerConfig { preconditioning_compute_steps: 200, ..shampoo.clone() }.shampoo().unwrap().start_preconditioning_step, 201);
    let cases: [(OptimizerConfig, &str); 7] = [
        (OptimizerConfig { block_size: 0, ..shampoo.clone() }, "optimizer.block_size"),
        (OptimizerConfig { preconditioning_compute_steps: 0, ..shampoo.clone() }, "optimizer.preconditioning_compute_steps"),
        (OptimizerConfig { start_preconditioning_step: Some(-1), ..shampoo.clone() }, "optimizer.start_preconditioning_step"),
        (OptimizerConfig { skip_preconditioning_dim_size_gt: -3, ..shampoo.clone() }, "optimizer.skip_preconditioning_dim_size_gt"),
        (OptimizerConfig { graft: "adagrad".into(), ..shampoo.clone() }, "optimizer.graft"),
        (OptimizerConfig { beta2: 1.5, ..shampoo.clone() }, "optimizer.beta2"),
        (OptimizerConfig { refresh_chunk_mib: 0.0, ..shampoo.clone() }, "optimizer.refresh_chunk_mib"),
    ];
    for (config, key) in cases {
        let err = config.validate().unwrap_err();
        assert!(err.contains(key), "{key}: {err}");
    }
    let kind = OptimizerConfig { kind: "sgd".into(), ..shampoo }.validate().unwrap_err();
    assert!(kind.contains("shampoo"), "{kind}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let err = TrainConfig::load(&path, &["optimizer.blok_size=4".to_string()]).unwrap_err().to_string();
    assert!(err.contains("blok_size"), "{err}");
}

#[test]
fn tiny_dallebart_learns_with_shampoo() {
    let overrides: Vec<String> = [
        // One layer each: every parameter compiles its own inverse-root loops.
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        "optimizer.kind=shampoo",
        "optimizer.block_size=64",
        "optimizer.start_preconditioning_step=6",
        "optimizer.preconditioning_compute_steps=5",
        "data.num_captions=4",
        "train.eval_every=0",
        "train.devices=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let config = TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0;
    let mut t = Trainer::new(&client(), config).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = t.values().unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.ends_with("/shampoo_precond0")), "state names: {names:?}");
    let first = t.train_step().unwrap().loss;
    let mut last = first;
    for _ in 1..16 {
        last = t.train_step().unwrap().loss;
        assert!(last.is_finite(), "loss {last} at step {}", t.step);
    }
    assert!(last < 0.7 * first, "loss after {} steps is {last} (started at {first})", t.step);
}
