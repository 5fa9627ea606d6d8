//! Generation matches dalle-mini 0.1.5's `DalleBart.generate` token for token
//! on the tiny config (fixture from tools/make_generate_fixture.py): greedy
//! decoding, and top-k 1 sampling with super-conditioning at scale 10.
mod common;
use common::*;
use dalle_xla::data::EncodedText;
use dalle_xla::generate::{Flow, Request, RunOptions, Sampler, SamplingSettings};
use dalle_xla::models::dallebart::DalleBartConfig;
use dalle_xla::models::vqgan::load_safetensors;
use dalle_xla::DType;
use std::path::Path;

fn texts(ids: &[i32], mask: &[i32], t: usize) -> Vec<EncodedText> {
    ids.chunks(t).zip(mask.chunks(t)).map(|(i, m)| EncodedText { input_ids: i.to_vec(), attention_mask: m.to_vec() }).collect()
}

#[test]
fn greedy_and_super_conditioned_top_k_1_match_dalle_mini() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate_tiny");
    let params = load_safetensors(&dir.join("params.safetensors")).unwrap();
    let expected = load_safetensors(&dir.join("expected.safetensors")).unwrap();
    let c = DalleBartConfig::tiny();
    let t = c.max_text_length as usize;
    let v = |name: &str| expected[name].to_vec::<i32>().unwrap();
    let prompts = texts(&v("input_ids"), &v("attention_mask"), t);
    let uncond = texts(&v("uncond_ids"), &v("uncond_mask"), t).remove(0);
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { text: p.clone(), n: 1, key_index: i as u64 }).collect();
    let want = |name: &str| v(name).chunks(c.image_length as usize).map(|r| r.to_vec()).collect::<Vec<_>>();

    for replicas in [1, 2] {
        let sampler = Sampler::new(&client(), c.clone(), &params, "fixture", DType::F32, replicas).unwrap();
        let run = RunOptions::default();
        let got = |settings: &SamplingSettings| -> Vec<Vec<i32>> {
            let out = sampler.generate(&requests, &uncond, 0, settings, &run, |_| Flow::Continue).unwrap();
            out.tokens.into_iter().map(|mut c| c.remove(0)).collect()
        };
        assert_eq!(got(&SamplingSettings::greedy()), want("greedy"), "greedy on {replicas} device(s)");
        let top1 = SamplingSettings { top_k: Some(1), condition_scale: 10.0, ..Default::default() };
        assert_eq!(got(&top1), want("top1_scale10"), "top-k 1 with condition scale 10 on {replicas} device(s)");
    }
}
