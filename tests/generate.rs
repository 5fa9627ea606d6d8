//! The compiled sampler on the tiny DalleBart: the KV-cache decoder equals
//! the teacher-forced forward pass, greedy is its argmax, super-conditioning
//! at scale 1 changes nothing, seeds are independent of the device split,
//! and top-k / top-p never leave their allowed sets.
mod common;
use common::*;
use dalle_xla::data::EncodedText;
use dalle_xla::generate::{Flow, Request, RunOptions, Sampler, SamplingSettings};
use dalle_xla::graph::{Graph, Tensor};
use dalle_xla::models::dallebart::{parameter_specs, DalleBart, DalleBartConfig};
use dalle_xla::nn::{Init, Precision, VarBuilder};
use dalle_xla::{DType, HostTensor};
use std::collections::BTreeMap;

fn config() -> DalleBartConfig {
    DalleBartConfig::tiny()
}

/// Random weights large enough that the logits are far from uniform.
fn weights(c: &DalleBartConfig, seed: u64) -> BTreeMap<String, HostTensor> {
    parameter_specs(c)
        .unwrap()
        .into_iter()
        .map(|s| {
            let init = if s.name.contains("LayerNorm") || s.name.contains("layernorm") || s.name.contains("final_ln") { s.init } else { Init::Normal(0.3) };
            let v = init.sample(seed, &s.name, DType::F32, &s.ty.shape);
            (s.name, v)
        })
        .collect()
}

/// A caption of `len` random ids (BOS/EOS framing does not matter to the model).
fn caption(c: &DalleBartConfig, len: usize, seed: u64) -> EncodedText {
    let mut r = rng(seed);
    let t = c.max_text_length as usize;
    let mut ids: Vec<i32> = (0..t).map(|_| rand::Rng::gen_range(&mut r, 3..c.encoder_vocab_size as i32)).collect();
    let mut mask = vec![1; t];
    for i in len..t {
        ids[i] = 1;
        mask[i] = 0;
    }
    EncodedText { input_ids: ids, attention_mask: mask }
}

fn sampler(c: &DalleBartConfig, w: &BTreeMap<String, HostTensor>, replicas: usize) -> Sampler {
    Sampler::new(&client(), c.clone(), w, "test weights", DType::F32, replicas).unwrap_or_else(|e| panic!("{e}"))
}

fn generate(s: &Sampler, prompts: &[EncodedText], n: usize, seed: u64, settings: &SamplingSettings, run: &RunOptions) -> Vec<Vec<Vec<i32>>> {
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { text: p.clone(), n, key_index: i as u64 }).collect();
    let uncond = caption(s.config(), 2, 999);
    s.generate(&requests, &uncond, seed, settings, run, |_| Flow::Continue).unwrap_or_else(|e| panic!("{e}")).tokens
}

/// Teacher-forced logits `[B, L, V+1]` for captions and image tokens, in f32.
fn teacher_forced(c: &DalleBartConfig, w: &BTreeMap<String, HostTensor>, texts: &[EncodedText], tokens: &[Vec<i32>]) -> Vec<Vec<Vec<f64>>> {
    let b = texts.len() as i64;
    let (t, l) = (c.max_text_length, c.image_length);
    let g = Graph::new("teacher_forced");
    let ids = g.param("ids", DType::I32, &[b, t]);
    let mask = g.param("mask", DType::I32, &[b, t]);
    let labels = g.param("labels", DType::I32, &[b, l]);
    let vb = VarBuilder::new(&g, DType::F32);
    let logits = DalleBart::new(c.clone(), Precision::f32()).forward(&vb, &ids, &mask, &labels).unwrap();
    let params: Vec<HostTensor> = vb.specs().iter().map(|s| w[&s.name].clone()).collect();
    let flat = |f: &dyn Fn(&EncodedText) -> &Vec<i32>| texts.iter().flat_map(|x| f(x).clone()).collect::<Vec<i32>>();
    let ids_v = HostTensor::new(&[b, t], &flat(&|x| &x.input_ids)).unwrap();
    let mask_v = HostTensor::new(&[b, t], &flat(&|x| &x.attention_mask)).unwrap();
    let labels_v = HostTensor::new(&[b, l], &tokens.iter().flatten().copied().collect::<Vec<_>>()).unwrap();
    let mut inputs: Vec<&HostTensor> = vec![&ids_v, &mask_v, &labels_v];
    inputs.extend(params.iter());
    let out = run1(&g, &logits, &inputs).to_f64_vec();
    let v = (c.image_vocab_size + 1) as usize;
    out.chunks(l as usize * v).map(|seq| seq.chunks(v).map(|r| r.to_vec()).collect()).collect()
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

#[test]
fn kv_cache_steps_equal_the_teacher_forced_decoder_at_every_position() {
    let c = config();
    let w = weights(&c, 1);
    let texts = [caption(&c, 9, 1), caption(&c, 5, 2)];
    let mut r = rng(3);
    let tokens: Vec<Vec<i32>> = (0..2).map(|_| (0..c.image_length).map(|_| rand::Rng::gen_range(&mut r, 0..c.image_vocab_size as i32)).collect()).collect();
    let want = teacher_forced(&c, &w, &texts, &tokens);

    // The cached decoder, unrolled over every position in one program.
    let (b, t, l) = (2i64, c.max_text_length, c.image_length);
    let g = Graph::new("cached");
    let ids = g.param("ids", DType::I32, &[b, t]);
    let mask = g.param("mask", DType::I32, &[b, t]);
    let inputs = g.param("decoder_inputs", DType::I32, &[b, l]);
    let vb = VarBuilder::new(&g, DType::F32);
    let model = DalleBart::new(c.clone(), Precision::f32());
    let states = model.encode(&vb, &ids, &mask).unwrap();
    let cross = model.cross_attention_kv(&vb, &states, &mask).unwrap();
    let mut cache = model.empty_cache(&g, b);
    let mut steps = vec![];
    for p in 0..l {
        let token = inputs.narrow(1, p, 1).unwrap().reshape(&[b]).unwrap();
        let position = g.scalar(p as f64, DType::I32);
        steps.push(model.decode_step(&vb, &token, &position, &mut cache, &cross).unwrap().unsqueeze(1).unwrap());
    }
    let logits = Tensor::concat(&steps.iter().collect::<Vec<_>>(), 1).unwrap();
    let mut shifted = vec![];
    for seq in &tokens {
        shifted.push(c.bos_token() as i32);
        shifted.extend(&seq[..l as usize - 1]);
    }
    let ids_v = HostTensor::new(&[b, t], &texts.iter().flat_map(|x| x.input_ids.clone()).collect::<Vec<_>>()).unwrap();
    let mask_v = HostTensor::new(&[b, t], &texts.iter().flat_map(|x| x.attention_mask.clone()).collect::<Vec<_>>()).unwrap();
    let in_v = HostTensor::new(&[b, l], &shifted).unwrap();
    let params: Vec<HostTensor> = vb.specs().iter().map(|s| w[&s.name].clone()).collect();
    let mut args: Vec<&HostTensor> = vec![&ids_v, &mask_v, &in_v];
    args.extend(params.iter());
    let got = run1(&g, &logits, &args).to_f64_vec();
    let want_flat: Vec<f64> = want.iter().flatten().flatten().copied().collect();
    assert_close(&got, &want_flat, 1e-4, "cached logits vs teacher-forced logits");
}

#[test]
fn greedy_decoding_is_the_argmax_of_the_teacher_forced_logits() {
    let c = config();
    let w = weights(&c, 2);
    let texts = vec![caption(&c, 7, 4), caption(&c, 12, 5), caption(&c, 3, 6)];
    let s = sampler(&c, &w, 2);
    let out = generate(&s, &texts, 1, 0, &SamplingSettings::greedy(), &RunOptions { chunk: 5, ..Default::default() });
    let tokens: Vec<Vec<i32>> = out.iter().map(|cands| cands[0].clone()).collect();
    assert!(tokens.iter().all(|t| t.len() == c.image_length as usize));
    let logits = teacher_forced(&c, &w, &texts, &tokens);
    for (i, (seq, rows)) in tokens.iter().zip(&logits).enumerate() {
        for (p, (tok, row)) in seq.iter().zip(rows).enumerate() {
            let best = argmax(&row[..c.image_vocab_size as usize]);
            assert_eq!(*tok as usize, best, "prompt {i} position {p}: greedy token {tok}, argmax {best}");
        }
    }
    let distinct: std::collections::HashSet<&Vec<i32>> = tokens.iter().collect();
    assert!(distinct.len() > 1, "different captions should give different images: {tokens:?}");
}

#[test]
fn condition_scale_one_makes_the_unconditional_pass_change_nothing() {
    let c = config();
    let w = weights(&c, 3);
    let texts = vec![caption(&c, 6, 7), caption(&c, 10, 8)];
    let s = sampler(&c, &w, 1);
    let run = RunOptions::default();
    let settings = SamplingSettings { condition_scale: 1.0, top_k: Some(8), ..Default::default() };
    let plain = generate(&s, &texts, 3, 5, &settings, &run);
    let mut shape = settings.shape();
    assert!(!shape.super_conditioning);
    shape.super_conditioning = true;
    let requests: Vec<Request> = texts.iter().enumerate().map(|(i, p)| Request { text: p.clone(), n: 3, key_index: i as u64 }).collect();
    let with_uncond = s.generate_shaped(&requests, &caption(&c, 2, 999), 5, &settings, shape, &run, |_| Flow::Continue).unwrap().tokens;
    assert_eq!(plain, with_uncond);
    // And at scale 10 it does change the images.
    let scaled = generate(&s, &texts, 3, 5, &SamplingSettings { condition_scale: 10.0, ..settings.clone() }, &run);
    assert_ne!(plain, scaled);
}

#[test]
fn the_same_seed_gives_the_same_images_on_one_and_eight_devices_and_any_batch_split() {
    let c = config();
    let w = weights(&c, 4);
    let texts: Vec<EncodedText> = (0..3).map(|i| caption(&c, 4 + i, 10 + i as u64)).collect();
    let settings = SamplingSettings { top_k: Some(16), temperature: 1.3, ..Default::default() };
    let one = generate(&sampler(&c, &w, 1), &texts, 5, 42, &settings, &RunOptions::default());
    let eight = generate(&sampler(&c, &w, 8), &texts, 5, 42, &settings, &RunOptions { rows_per_device: 1, chunk: 7, ..Default::default() });
    assert_eq!(one, eight, "1 device vs 8 devices (15 rows padded to 16)");
    let other_seed = generate(&sampler(&c, &w, 1), &texts, 5, 43, &settings, &RunOptions::default());
    assert_ne!(one, other_seed);
    // Candidates of one prompt differ from each other.
    assert_ne!(one[0][0], one[0][1]);
}

#[test]
fn top_k_one_equals_greedy_with_and_without_super_conditioning() {
    let c = config();
    let w = weights(&c, 5);
    let texts = vec![caption(&c, 8, 20), caption(&c, 4, 21)];
    let s = sampler(&c, &w, 2);
    for scale in [1.0, 10.0] {
        let greedy = SamplingSettings { sample: false, condition_scale: scale, ..Default::default() };
        let top1 = SamplingSettings { top_k: Some(1), condition_scale: scale, ..Default::default() };
        let run = RunOptions::default();
        assert_eq!(generate(&s, &texts, 2, 0, &greedy, &run), generate(&s, &texts, 2, 9, &top1, &run), "scale {scale}");
    }
}

/// For every sampled position, the token is inside the set the filter allows.
fn check_allowed(c: &DalleBartConfig, w: &BTreeMap<String, HostTensor>, settings: &SamplingSettings, allowed: impl Fn(&[f64]) -> Vec<usize>) -> usize {
    let texts: Vec<EncodedText> = (0..4).map(|i| caption(&c, 3 + 2 * i, 30 + i as u64)).collect();
    let s = sampler(c, w, 8);
    let n = 16;
    let out = generate(&s, &texts, n, 7, settings, &RunOptions::default());
    let mut distinct = std::collections::HashSet::new();
    let mut checked = 0;
    for (i, cands) in out.iter().enumerate() {
        let reps: Vec<EncodedText> = vec![texts[i].clone(); n];
        let logits = teacher_forced(c, w, &reps, cands);
        for (seq, rows) in cands.iter().zip(&logits) {
            for (p, (tok, row)) in seq.iter().zip(rows).enumerate() {
                let scaled: Vec<f64> = row[..c.image_vocab_size as usize].iter().map(|v| v / settings.temperature as f64).collect();
                let ok = allowed(&scaled);
                assert!(ok.contains(&(*tok as usize)), "prompt {i} position {p}: token {tok} outside the allowed set {ok:?}");
                distinct.insert((p, *tok));
                checked += 1;
            }
        }
    }
    assert!(distinct.len() > c.image_length as usize, "sampling should not be deterministic: {} distinct (position, token) pairs", distinct.len());
    checked
}

fn sorted_desc(row: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
    idx
}

#[test]
fn top_k_never_samples_outside_the_k_most_likely_tokens() {
    let c = config();
    let w = weights(&c, 6);
    let k = 5;
    let settings = SamplingSettings { top_k: Some(k), condition_scale: 1.0, temperature: 2.0, ..Default::default() };
    let checked = check_allowed(&c, &w, &settings, |row| {
        // Values tied with the k-th are allowed as well.
        let order = sorted_desc(row);
        let kth = row[order[k - 1]];
        order.into_iter().filter(|&i| row[i] >= kth - 1e-5).collect()
    });
    assert!(checked >= 1000, "{checked}");
}

#[test]
fn top_p_never_samples_outside_the_nucleus() {
    let c = config();
    let w = weights(&c, 7);
    let p = 0.6;
    let settings = SamplingSettings { top_p: Some(p), condition_scale: 1.0, temperature: 1.5, ..Default::default() };
    check_allowed(&c, &w, &settings, |row| {
        let order = sorted_desc(row);
        let max = row[order[0]];
        let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
        let mut before = 0.0;
        let mut keep = vec![];
        for &i in &order {
            // Kept while the more likely tokens hold less than p (a small margin for f32 sums).
            if before < p as f64 + 1e-4 {
                keep.push(i);
            }
            before += (row[i] - max).exp() / z;
        }
        keep
    });
}

#[test]
fn bad_requests_are_refused_with_a_message_naming_the_value() {
    let c = config();
    let w = weights(&c, 8);
    let s = sampler(&c, &w, 1);
    let text = caption(&c, 4, 1);
    let run = RunOptions::default();
    let err = |settings: SamplingSettings, n: usize| {
        let requests = vec![Request { text: text.clone(), n, key_index: 0 }];
        match s.generate(&requests, &text, 0, &settings, &run, |_| Flow::Continue) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    };
    assert!(err(SamplingSettings::default(), 0).contains("0 images"));
    assert!(err(SamplingSettings { top_p: Some(1.5), ..Default::default() }, 1).contains("top-p"));
    assert!(err(SamplingSettings { top_p: Some(0.0), ..Default::default() }, 1).contains("top-p"));
    assert!(err(SamplingSettings { temperature: -1.0, ..Default::default() }, 1).contains("temperature"));
    assert!(err(SamplingSettings { top_k: Some(0), ..Default::default() }, 1).contains("top-k"));
    assert!(err(SamplingSettings { top_k: Some(65), ..Default::default() }, 1).contains("top-k"));
    match s.generate(&[], &text, 0, &SamplingSettings::default(), &run, |_| Flow::Continue) {
        Err(e) => assert!(e.to_string().contains("no prompts"), "{e}"),
        Ok(_) => panic!("an empty prompt list must be refused"),
    }
    // Wrong weights: a missing tensor and a wrong shape name the tensor.
    let mut missing = w.clone();
    missing.remove("lm_head.kernel");
    let e = Sampler::new(&client(), c.clone(), &missing, "weights.safetensors", DType::F32, 1).err().expect("missing tensor");
    assert!(e.to_string().contains("lm_head.kernel") && e.to_string().contains("weights.safetensors"), "{e}");
    let mut wrong = w.clone();
    wrong.insert("lm_head.kernel".into(), HostTensor::zeros(DType::F32, &[3, 3]));
    let e = Sampler::new(&client(), c.clone(), &wrong, "weights.safetensors", DType::F32, 1).err().expect("wrong shape");
    assert!(e.to_string().contains("lm_head.kernel") && e.to_string().contains("[3, 3]"), "{e}");
    // A cancelled run stops with Cancelled.
    let requests = vec![Request { text: text.clone(), n: 1, key_index: 0 }];
    let r = s.generate(&requests, &text, 0, &SamplingSettings::greedy(), &RunOptions { chunk: 4, ..Default::default() }, |p| {
        if p.positions_done >= 4 {
            Flow::Cancel
        } else {
            Flow::Continue
        }
    });
    assert!(matches!(r, Err(dalle_xla::Error::Cancelled)));
}

#[test]
fn partial_tokens_are_reported_per_chunk_and_bf16_runs() {
    let c = config();
    let w = weights(&c, 9);
    let text = caption(&c, 6, 2);
    let s = Sampler::new(&client(), c.clone(), &w, "w", DType::BF16, 2).unwrap();
    let requests = vec![Request { text: text.clone(), n: 3, key_index: 0 }];
    let mut seen = vec![];
    let run = RunOptions { chunk: 4, partial_tokens: true, ..Default::default() };
    let out = s.generate(&requests, &text, 1, &SamplingSettings::default(), &run, |p| {
        seen.push((p.positions_done, p.tokens_done, p.partial.map(|rows| rows.len())));
        Flow::Continue
    });
    let out = out.unwrap();
    assert_eq!(out.tokens[0].len(), 3);
    assert!(out.tokens[0].iter().flatten().all(|&t| (0..c.image_vocab_size as i32).contains(&t)));
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 8, 12, 16]);
    assert_eq!(seen.last().unwrap().1, 3 * 16);
    assert_eq!(seen[0].2, Some(3), "partial grids hold the batch's real rows");
}
