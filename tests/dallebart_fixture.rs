//! DalleBart against dalle-mini's own implementation: the fixture in
//! tests/fixtures/dallebart_tiny was written by tools/make_dallebart_fixture.py
//! from the `dalle-mini` package (flax) for configs/tiny.yaml. Same parameters
//! by flax name, same batch: our logits, loss and gradients must match.
mod common;
use common::*;
use dalle_xla::graph::{grad, Graph, Tensor};
use dalle_xla::models::dallebart::{DalleBart, DalleBartConfig};
use dalle_xla::nn::{Precision, VarBuilder};
use dalle_xla::{DType, HostTensor};
use std::collections::HashMap;

fn load(name: &str) -> HashMap<String, HostTensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dallebart_tiny").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::I32 => DType::I32,
                other => panic!("unexpected dtype {other:?} for {n}"),
            };
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            (n, HostTensor { dtype, shape, data: v.data().to_vec() })
        })
        .collect()
}

fn tiny_model() -> DalleBartConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    dalle_xla::models::dallebart::TrainConfig::load(&path, &[]).unwrap().0.model
}

#[test]
fn logits_loss_and_gradients_match_dalle_mini() {
    let params = load("params.safetensors");
    let expected = load("expected.safetensors");
    let config = tiny_model();
    let (b, t) = (expected["input_ids"].shape[0], config.max_text_length);

    let g = Graph::new("fixture");
    let ids = g.param("input_ids", DType::I32, &[b, t]);
    let mask = g.param("attention_mask", DType::I32, &[b, t]);
    let labels = g.param("labels", DType::I32, &[b, config.image_length]);
    let vb = VarBuilder::new(&g, DType::F32);
    let model = DalleBart::new(config, Precision::f32());
    let logits = model.forward(&vb, &ids, &mask, &labels).unwrap();
    let loss = dalle_xla::nn::cross_entropy(&logits, &labels).unwrap();
    let specs = vb.specs();

    // The same parameter tree as the reference: every name, every shape.
    let mut ours: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut theirs: Vec<&str> = params.keys().map(String::as_str).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "parameter names differ from dalle-mini's flax tree");
    for s in &specs {
        assert_eq!(s.ty.shape, params[&s.name].shape, "shape of {}", s.name);
    }

    let tensors = vb.tensors();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let grads = grad(&loss, &refs).unwrap();
    let mut outs: Vec<&Tensor> = vec![&logits, &loss];
    outs.extend(grads.iter());
    let program = compile(&g, &outs);
    let mut inputs: Vec<&HostTensor> = vec![&expected["input_ids"], &expected["attention_mask"], &expected["labels"]];
    inputs.extend(specs.iter().map(|s| &params[&s.name]));
    let out = program.run(&inputs).unwrap();

    assert_close(&out[0].to_f64_vec(), &expected["logits"].to_f64_vec(), 2e-4, "logits");
    assert_close(&out[1].to_f64_vec(), &expected["loss"].to_f64_vec(), 1e-5, "loss");
    for (s, got) in specs.iter().zip(&out[2..]) {
        let want = &expected[&format!("grad/{}", s.name)];
        let scale = want.to_f64_vec().iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        let diff = got.to_f64_vec().iter().zip(want.to_f64_vec()).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-3 * scale + 1e-7, "gradient of {}: max difference {diff} (largest value {scale})", s.name);
    }
}
