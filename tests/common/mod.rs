//! Shared test helpers: one CPU client per test binary, reference checks and
//! finite-difference gradient checks.
#![allow(dead_code)]

use dalle_xla::graph::{vjp, Graph, Tensor, TensorType};
use dalle_xla::optim::{Optimizer, StepScalars};
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::OnceLock;

/// Platform under test: `$DALLE_TEST_PLATFORM` (default `cpu`).
pub fn platform() -> String {
    std::env::var("DALLE_TEST_PLATFORM").unwrap_or_else(|_| "cpu".into())
}

/// A client with 8 devices (virtual CPU devices on CPU platforms).
pub fn client() -> Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let p = platform();
            let opts = if p.contains("cpu") { ClientOptions::cpu_devices(8) } else { ClientOptions::default() };
            open_client(&p, None, &opts).expect("open the PJRT client (run scripts/install-plugin first)")
        })
        .clone()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Random values in [lo, hi).
pub fn random(rng: &mut StdRng, dtype: DType, shape: &[i64], lo: f64, hi: f64) -> HostTensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    HostTensor::from_f64(dtype, shape, &v).unwrap()
}

pub fn compile(g: &Graph, outs: &[&Tensor]) -> Program {
    Program::compile(&client(), g, outs, &ProgramOptions::default()).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

pub fn run1(g: &Graph, out: &Tensor, inputs: &[&HostTensor]) -> HostTensor {
    compile(g, &[out]).run(inputs).unwrap_or_else(|e| panic!("run failed: {e}")).remove(0)
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length {} != {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()) || (g == w);
        assert!(ok, "{what}: element {i}: got {g}, want {w} (tol {tol})\n got  {got:?}\n want {want:?}");
    }
}

/// Builds `f` over parameters of `types`, runs it on `inputs` and compares
/// with `reference` computed in plain Rust on f64 values.
pub fn check_forward(
    types: &[TensorType],
    inputs: &[HostTensor],
    f: impl Fn(&[Tensor]) -> dalle_xla::graph::Result<Tensor>,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    tol: f64,
    what: &str,
) -> HostTensor {
    let g = Graph::new(what);
    let params: Vec<Tensor> = types.iter().enumerate().map(|(i, t)| g.param(&format!("x{i}"), t.dtype, &t.shape)).collect();
    let y = f(&params).unwrap_or_else(|e| panic!("{what}: build failed: {e}"));
    let refs: Vec<&HostTensor> = inputs.iter().collect();
    let out = run1(&g, &y, &refs);
    let want = reference(&inputs.iter().map(|h| h.to_f64_vec()).collect::<Vec<_>>());
    assert_close(&out.to_f64_vec(), &want, tol, what);
    out
}

/// Checks the VJP of `f` against central finite differences in f64, along
/// three random directions, with a random output cotangent.
pub fn check_vjp(shapes: &[Vec<i64>], inputs: &[HostTensor], f: impl Fn(&[Tensor]) -> dalle_xla::graph::Result<Tensor>, what: &str) {
    let mut r = rng(7);
    let g = Graph::new(what);
    let params: Vec<Tensor> = shapes.iter().enumerate().map(|(i, s)| g.param(&format!("x{i}"), DType::F64, s)).collect();
    let y = f(&params).unwrap_or_else(|e| panic!("{what}: build failed: {e}"));
    let ct = g.param("ct", DType::F64, y.shape());
    let wrt: Vec<&Tensor> = params.iter().collect();
    let grads = vjp(&[&y], &[&ct], &wrt).unwrap_or_else(|e| panic!("{what}: vjp failed: {e}"));
    let mut outs = vec![&y];
    outs.extend(grads.iter());
    let prog = compile(&g, &outs);

    let x: Vec<HostTensor> = inputs.iter().map(|h| h.cast(DType::F64)).collect();
    let ct_val = random(&mut r, DType::F64, y.shape(), -1.0, 1.0);
    let run = |xs: &[HostTensor]| {
        let mut args: Vec<&HostTensor> = xs.iter().collect();
        args.push(&ct_val);
        prog.run(&args).unwrap_or_else(|e| panic!("{what}: run failed: {e}"))
    };
    let base = run(&x);
    let cts = ct_val.to_f64_vec();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let eps = 1e-6;
    for trial in 0..3 {
        let dirs: Vec<Vec<f64>> = x.iter().map(|h| (0..h.numel()).map(|_| r.gen_range(-1.0..1.0)).collect()).collect();
        let shifted = |sign: f64| -> Vec<HostTensor> {
            x.iter()
                .zip(&dirs)
                .map(|(h, d)| {
                    let v: Vec<f64> = h.to_f64_vec().iter().zip(d).map(|(a, b)| a + sign * eps * b).collect();
                    HostTensor::from_f64(DType::F64, &h.shape, &v).unwrap()
                })
                .collect()
        };
        let plus = run(&shifted(1.0))[0].to_f64_vec();
        let minus = run(&shifted(-1.0))[0].to_f64_vec();
        let numeric = (dot(&plus, &cts) - dot(&minus, &cts)) / (2.0 * eps);
        let analytic: f64 = (0..x.len()).map(|i| dot(&base[i + 1].to_f64_vec(), &dirs[i])).sum();
        let tol = 1e-5 * (1.0 + numeric.abs());
        assert!(
            (numeric - analytic).abs() <= tol,
            "{what}: VJP mismatch on direction {trial}: finite differences {numeric}, vjp {analytic}"
        );
    }
}

/// A parameter's value after every step, and its final optimizer state by suffix.
pub type OptimizerRun = (Vec<Vec<f64>>, Vec<(String, Vec<f64>)>);

/// Runs `opt` on one parameter through `grads`, from the optimizer's initial
/// state; returns the parameter after every step and the final state.
pub fn optimizer_steps(opt: &dyn Optimizer, p0: &HostTensor, grads: &[HostTensor], lr: f64) -> OptimizerRun {
    optimizer_steps_together(opt, &[(p0, grads)], lr).remove(0)
}

/// [`optimizer_steps`] for several parameters updated in one program by
/// `Optimizer::update_all`, as trainers update them: each parameter starts
/// from its value and takes its own gradient at every step.
pub fn optimizer_steps_together(opt: &dyn Optimizer, parameters: &[(&HostTensor, &[HostTensor])], lr: f64) -> Vec<OptimizerRun> {
    optimizer_steps_stacked(opt, parameters, lr, &[])
}

/// [`optimizer_steps_together`] with `stacks` of parameters (indices into
/// `parameters`) updated as scanned layer stacks.
pub fn optimizer_steps_stacked(opt: &dyn Optimizer, parameters: &[(&HostTensor, &[HostTensor])], lr: f64, stacks: &[Vec<usize>]) -> Vec<OptimizerRun> {
    let g = Graph::new("optimizer_step");
    let params: Vec<Tensor> = parameters.iter().enumerate().map(|(k, (p0, _))| g.param(&format!("p{k}"), DType::F32, &p0.shape)).collect();
    let grads: Vec<Tensor> = parameters.iter().enumerate().map(|(k, (p0, _))| g.param(&format!("g{k}"), DType::F32, &p0.shape)).collect();
    let specs: Vec<_> = params.iter().map(|p| opt.state(p.ty())).collect();
    let state: Vec<Vec<Tensor>> =
        specs.iter().enumerate().map(|(k, sp)| sp.iter().map(|s| g.param(&format!("p{k}/{}", s.suffix), s.ty.dtype, &s.ty.shape)).collect()).collect();
    let lr_t = g.param("lr", DType::F32, &[]);
    let count = g.param("count", DType::F32, &[]);
    let updated = opt.update_all(&params, &grads, &state, &StepScalars { lr: &lr_t, count: &count, partitions: 1 }, stacks).unwrap();
    let outs: Vec<&Tensor> = updated.iter().flat_map(|(p, st)| std::iter::once(p).chain(st)).collect();
    let prog = compile(&g, &outs);
    let mut values: Vec<HostTensor> = parameters.iter().map(|(p0, _)| (*p0).clone()).collect();
    let mut states: Vec<Vec<HostTensor>> = specs.iter().map(|sp| sp.iter().map(|s| s.initial_value()).collect()).collect();
    let mut histories = vec![Vec::new(); parameters.len()];
    let steps = parameters.iter().map(|(_, gr)| gr.len()).min().unwrap_or(0);
    for t in 0..steps {
        let (lr_h, c) = (HostTensor::scalar(lr as f32), HostTensor::scalar((t + 1) as f32));
        let mut args: Vec<&HostTensor> = values.iter().collect();
        args.extend(parameters.iter().map(|(_, gr)| &gr[t]));
        args.extend(states.iter().flatten());
        args.push(&lr_h);
        args.push(&c);
        let mut out = prog.run(&args).unwrap().into_iter();
        for k in 0..parameters.len() {
            values[k] = out.next().unwrap();
            states[k] = out.by_ref().take(specs[k].len()).collect();
            histories[k].push(values[k].to_f64_vec());
        }
    }
    histories
        .into_iter()
        .zip(specs.iter().zip(&states))
        .map(|(history, (sp, sv))| (history, sp.iter().zip(sv).map(|(s, v)| (s.suffix.clone(), v.to_f64_vec())).collect()))
        .collect()
}
