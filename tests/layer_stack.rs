//! DalleBart's layer stacks computed unrolled, rematerialised, scanned, and
//! scanned and rematerialised:
//! the same parameters by name, the same loss and gradients, the same
//! training run, and one compiled layer body for the scanned stack.
mod common;
use common::*;
use dalle_xla::graph::{emit_module, grad, Graph, ModuleOptions, Tensor};
use dalle_xla::models::dallebart::{DalleBart, DalleBartConfig, TrainConfig, Trainer};
use dalle_xla::nn::{ParamSpec, Precision, VarBuilder};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use std::collections::HashMap;

fn config(scan: bool, remat: bool) -> DalleBartConfig {
    DalleBartConfig { encoder_layers: 3, decoder_layers: 3, scan_layers: scan, remat_layers: remat, ..DalleBartConfig::tiny() }
}

/// The graph of the loss and its gradient for every parameter, its outputs and the parameter specs.
fn loss_and_grads_graph(config: &DalleBartConfig, batch: i64) -> (Graph, Vec<Tensor>, Vec<ParamSpec>) {
    let model = DalleBart::new(config.clone(), Precision::f32());
    let g = Graph::new("loss_and_grads");
    let ids = g.param("input_ids", DType::I32, &[batch, config.max_text_length]);
    let mask = g.param("attention_mask", DType::I32, &[batch, config.max_text_length]);
    let labels = g.param("labels", DType::I32, &[batch, config.image_length]);
    let vb = VarBuilder::new(&g, DType::F32);
    let loss = model.loss(&vb, &ids, &mask, &labels).unwrap();
    let params = vb.tensors();
    let grads = grad(&loss, &params.iter().collect::<Vec<_>>()).unwrap();
    let mut outs = vec![loss];
    outs.extend(grads);
    (g, outs, vb.specs())
}

/// The loss and its gradient for every parameter, as one program, with the parameter specs.
fn loss_and_grads(config: &DalleBartConfig, batch: i64) -> (Program, Vec<ParamSpec>) {
    let (g, outs, specs) = loss_and_grads_graph(config, batch);
    (Program::compile(&client(), &g, &outs.iter().collect::<Vec<_>>(), &ProgramOptions::default()).unwrap(), specs)
}

fn batch(config: &DalleBartConfig, b: i64, seed: u64) -> Vec<HostTensor> {
    let mut r = rng(seed);
    let ids = random(&mut r, DType::F32, &[b, config.max_text_length], 0.0, config.encoder_vocab_size as f64);
    let labels = random(&mut r, DType::F32, &[b, config.image_length], 0.0, config.image_vocab_size as f64);
    // The second caption is padded after 5 tokens.
    let mask: Vec<f64> = (0..b * config.max_text_length).map(|i| if i / config.max_text_length == 1 && i % config.max_text_length >= 5 { 0.0 } else { 1.0 }).collect();
    vec![
        ids.cast(DType::I32),
        HostTensor::from_f64(DType::I32, &[b, config.max_text_length], &mask).unwrap(),
        labels.cast(DType::I32),
    ]
}

/// Runs `program` on `inputs` and `weights` given by name.
fn run_by_name(program: &Program, specs: &[ParamSpec], inputs: &[HostTensor], weights: &HashMap<String, HostTensor>) -> Vec<HostTensor> {
    let mut args: Vec<&HostTensor> = inputs.iter().collect();
    args.extend(specs.iter().map(|s| &weights[&s.name]));
    program.run(&args).unwrap()
}

#[test]
fn scanned_and_rematerialised_stacks_equal_the_unrolled_one() {
    let (unrolled, specs) = loss_and_grads(&config(false, false), 2);
    let mut r = rng(7);
    let weights: HashMap<String, HostTensor> = specs.iter().map(|s| (s.name.clone(), random(&mut r, DType::F32, &s.ty.shape, -0.2, 0.2))).collect();
    let inputs = batch(&config(false, false), 2, 8);
    let want = run_by_name(&unrolled, &specs, &inputs, &weights);
    let want_grad: HashMap<&str, Vec<f64>> = specs.iter().enumerate().map(|(k, s)| (s.name.as_str(), want[1 + k].to_f64_vec())).collect();
    for (scan, remat, what) in [(true, false, "scanned"), (true, true, "scanned and rematerialised"), (false, true, "rematerialised")] {
        let (program, other) = loss_and_grads(&config(scan, remat), 2);
        let names = |v: &[ParamSpec]| {
            let mut n: Vec<String> = v.iter().map(|s| s.name.clone()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&other), names(&specs), "{what}: the parameters keep their per-layer names");
        let got = run_by_name(&program, &other, &inputs, &weights);
        assert_close(&got[0].to_f64_vec(), &want[0].to_f64_vec(), 1e-5, &format!("{what} loss"));
        for (k, s) in other.iter().enumerate() {
            assert_close(&got[1 + k].to_f64_vec(), &want_grad[s.name.as_str()], 1e-4, &format!("{what} gradient of {}", s.name));
        }
    }
}

#[test]
fn a_scanned_program_traces_one_layer_per_stack() {
    // 3 and 6 layers: the unrolled program grows with depth, the scanned one
    // holds one body per stack whatever the depth.
    let size = |layers: usize, scan: bool| {
        let c = DalleBartConfig { encoder_layers: layers, decoder_layers: layers, ..config(scan, false) };
        let (g, outs, _) = loss_and_grads_graph(&c, 2);
        emit_module(&g, &outs, &ModuleOptions::default()).unwrap().len()
    };
    let (unrolled3, unrolled6, scanned3, scanned6) = (size(3, false), size(6, false), size(3, true), size(6, true));
    assert!(unrolled6 as f64 > 1.6 * unrolled3 as f64, "unrolled: {unrolled3} -> {unrolled6} bytes of StableHLO");
    // Only the stacking of the per-layer weights grows.
    assert!((scanned6 as f64) < 1.2 * scanned3 as f64, "scanned: {scanned3} -> {scanned6} bytes of StableHLO");
    assert!(scanned6 < unrolled6, "scanned {scanned6} vs unrolled {unrolled6} bytes");
}

#[test]
fn a_forward_only_scanned_program_stores_nothing_for_a_backward_pass() {
    // The loss alone, as evaluation and the sampler's encoder build it: with a
    // forward-only builder the scanned loops keep no per-layer stores (no
    // dynamic_update_slice), and the loss is the one a training builder gives.
    let c = config(true, false);
    let model = DalleBart::new(c.clone(), Precision::f32());
    let build = |forward_only: bool| {
        let g = Graph::new("loss");
        let ids = g.param("input_ids", DType::I32, &[2, c.max_text_length]);
        let mask = g.param("attention_mask", DType::I32, &[2, c.max_text_length]);
        let labels = g.param("labels", DType::I32, &[2, c.image_length]);
        let vb = VarBuilder::new(&g, DType::F32);
        let vb = if forward_only { vb.forward_only() } else { vb };
        let loss = model.loss(&vb, &ids, &mask, &labels).unwrap();
        let text = emit_module(&g, &[loss.clone()], &ModuleOptions::default()).unwrap();
        let program = Program::compile(&client(), &g, &[&loss], &ProgramOptions::default()).unwrap();
        (text.matches("dynamic_update_slice").count(), program, vb.specs())
    };
    let (stores_forward_only, forward_only, specs) = build(true);
    let (stores_training, training, training_specs) = build(false);
    assert_eq!(stores_forward_only, 0, "a forward-only scanned program stores per layer");
    assert!(stores_training > 0, "the training builder's loops should store for the backward pass");
    assert_eq!(specs, training_specs, "both builders must ask for the same parameters");
    let weights: HashMap<String, HostTensor> = specs.iter().map(|p| (p.name.clone(), p.init.sample(3, &p.name, p.ty.dtype, &p.ty.shape))).collect();
    let inputs = batch(&c, 2, 5);
    let a = run_by_name(&forward_only, &specs, &inputs, &weights)[0].to_f64_vec()[0];
    let b = run_by_name(&training, &specs, &inputs, &weights)[0].to_f64_vec()[0];
    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "forward-only loss {a} against {b}");
}

fn tiny_training(scan: bool, extra: &[&str]) -> TrainConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let mut overrides: Vec<String> = ["train.devices=2", "train.eval_every=0", "model.encoder_layers=3", &format!("model.scan_layers={scan}")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

/// Shampoo with blocks of 16, preconditioning from step 2 and refreshes
/// every 2 steps, so that 4 steps use statistics, roots and grafting.
const BUSY_SHAMPOO: [&str; 4] =
    ["optimizer.kind=shampoo", "optimizer.block_size=16", "optimizer.start_preconditioning_step=2", "optimizer.preconditioning_compute_steps=2"];

#[test]
fn training_with_scanned_layers_follows_the_unrolled_run() {
    // The scanned model's optimizer updates each layer stack in a loop too.
    for (what, extra) in [("adamw", &[][..]), ("shampoo", &BUSY_SHAMPOO[..])] {
        let mut unrolled = Trainer::new(&client(), tiny_training(false, extra)).unwrap();
        let mut scanned = Trainer::new(&client(), tiny_training(true, extra)).unwrap();
        assert_eq!(scanned.layout().names(), unrolled.layout().names(), "{what}: same checkpoint names in the same order");
        for step in 1..=4 {
            let (a, b) = (unrolled.train_step().unwrap(), scanned.train_step().unwrap());
            assert_close(&[b.loss], &[a.loss], 1e-5, &format!("{what}: loss at step {step}"));
        }
        let (a, b) = (unrolled.values().unwrap(), scanned.values().unwrap());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
            if name.contains('/') {
                // Optimizer state within 1e-4 of each tensor's largest value:
                // Shampoo's inverse roots carry the two programs' slightly
                // different gradients (another reduction order) at full size.
                let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let diff = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
                assert!(diff <= 1e-4 * scale, "{what}: {name} after 4 updates differs by {diff:e}, over 1e-4 of its scale {scale}");
            } else {
                assert_close(&y, &x, 1e-4, &format!("{what}: {name} after 4 updates"));
            }
        }
        // A checkpoint of one loads into the other: the values carry over by name.
        scanned.load_values(&a.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()).unwrap();
        let (c, d) = (unrolled.train_step().unwrap(), scanned.train_step().unwrap());
        assert_close(&[d.loss], &[c.loss], 1e-5, &format!("{what}: step 5 after loading the unrolled run's values"));
    }
}
