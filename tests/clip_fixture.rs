//! CLIP against Hugging Face transformers: tests/fixtures/clip_tiny was written
//! by tools/make_clip_fixture.py (a tiny random CLIPModel in HF's layout, with
//! its tokenizer and image processor). Same files in, same ids, embeddings
//! and logits out; bad checkpoints are refused with the tensor named.
mod common;
use common::*;
use dalle_xla::models::clip::{parameter_specs, ClipConfig, ClipTokenizer, Preprocessor, Scorer, ScorerOptions};
use dalle_xla::models::vqgan::{load_safetensors, save_safetensors};
use dalle_xla::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tiny")
}

fn expected() -> BTreeMap<String, HostTensor> {
    load_safetensors(&fixture().join("expected.safetensors")).unwrap()
}

fn expected_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap()
}

fn prompts() -> Vec<String> {
    expected_json()["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

fn images() -> Vec<image::RgbImage> {
    (0..3).map(|i| image::open(fixture().join(format!("image_{i}.png"))).unwrap().to_rgb8()).collect()
}

fn rows(t: &HostTensor) -> Vec<Vec<f64>> {
    let v = t.to_f64_vec();
    v.chunks(t.shape[1] as usize).map(|r| r.to_vec()).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-clip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the fixture directory whose weights are `edit`ed.
fn edited_checkpoint(name: &str, edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) -> PathBuf {
    let dir = temp_dir(name);
    for f in ["config.json", "tokenizer.json", "preprocessor_config.json", "special_tokens_map.json"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    let mut w = load_safetensors(&fixture().join("model.safetensors")).unwrap();
    edit(&mut w);
    save_safetensors(&dir.join("model.safetensors"), &w.into_iter().collect::<Vec<_>>()).unwrap();
    dir
}

#[test]
fn parameter_tree_equals_transformers_names_and_shapes() {
    let config = ClipConfig::load_hf(&fixture().join("config.json")).unwrap();
    let specs = parameter_specs(&config).unwrap();
    let mut ours: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    ours.sort();
    let theirs: Vec<String> = expected_json()["parameter_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    assert_eq!(ours, theirs, "parameter names differ from transformers' CLIPModel");
    let weights = load_safetensors(&fixture().join("model.safetensors")).unwrap();
    for s in &specs {
        assert_eq!(s.ty.shape, weights[&s.name].shape, "shape of {}", s.name);
    }
}

#[test]
fn tokenizer_ids_match_transformers_exactly() {
    let want = expected()["input_ids"].to_vec::<i32>().unwrap();
    let from_json = ClipTokenizer::load(&fixture().join("tokenizer.json"), 77).unwrap();
    assert_eq!(from_json.encode_batch(&prompts()).unwrap(), want, "ids from tokenizer.json");
    // The same vocabulary given as vocab.json + merges.txt.
    let dir = temp_dir("vocab");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    let from_files = ClipTokenizer::load(&dir, 77).unwrap();
    assert_eq!(from_files.encode_batch(&prompts()).unwrap(), want, "ids from vocab.json + merges.txt");
    // The last prompt is longer than 77 tokens: truncated with the end token kept.
    let long = &want[3 * 77..];
    assert_eq!(long[76], from_json.eos);
    assert!(long[1..76].iter().all(|&t| t != from_json.eos));
}

#[test]
fn preprocessing_matches_the_image_processor_exactly() {
    let pre = Preprocessor::load(&fixture().join("preprocessor_config.json"), 32).unwrap();
    let got = pre.batch(&images());
    let want = &expected()["pixel_values"];
    assert_eq!(got.shape, want.shape);
    assert_close(&got.to_f64_vec(), &want.to_f64_vec(), 1e-6, "pixel values");
}

#[test]
fn embeddings_and_logits_match_transformers() {
    let client = client();
    let scorer = Scorer::load(&fixture(), &client, &ScorerOptions { images_per_device: 2, devices: 1, prompts_per_call: 3 }).unwrap();
    let e = expected();
    let texts = scorer.text_embeds(&prompts()).unwrap();
    for (i, (g, w)) in texts.iter().zip(rows(&e["text_embeds"])).enumerate() {
        assert_close(&g.iter().map(|&x| x as f64).collect::<Vec<_>>(), &w, 1e-4, &format!("text_embeds[{i}]"));
    }
    let imgs = scorer.image_embeds_from_pixels(&e["pixel_values"]).unwrap();
    for (i, (g, w)) in imgs.iter().zip(rows(&e["image_embeds"])).enumerate() {
        assert_close(&g.iter().map(|&x| x as f64).collect::<Vec<_>>(), &w, 1e-4, &format!("image_embeds[{i}]"));
    }
    // From the PNG files through our preprocessing to logits_per_image.
    let logits = scorer.score_many(&prompts(), &images()).unwrap();
    for (i, (g, w)) in logits.iter().zip(rows(&e["logits_per_image"])).enumerate() {
        assert_close(&g.iter().map(|&x| x as f64).collect::<Vec<_>>(), &w, 1e-4, &format!("logits_per_image[{i}]"));
    }
    let one = scorer.score(&prompts()[1], &images()).unwrap();
    assert_eq!(one, logits.iter().map(|r| r[1]).collect::<Vec<_>>());
}

#[test]
fn large_batches_split_over_devices_give_the_same_scores() {
    let client = client();
    let opts = ScorerOptions { images_per_device: 2, devices: 4, prompts_per_call: 2 };
    let scorer = Scorer::load(&fixture(), &client, &opts).unwrap();
    let many: Vec<image::RgbImage> = images().into_iter().cycle().take(11).collect();
    let split = scorer.score(&prompts()[0], &many).unwrap();
    let single = Scorer::load(&fixture(), &client, &ScorerOptions { devices: 1, ..opts }).unwrap();
    let alone = single.score(&prompts()[0], &many).unwrap();
    assert_close(&split.iter().map(|&x| x as f64).collect::<Vec<_>>(), &alone.iter().map(|&x| x as f64).collect::<Vec<_>>(), 1e-5, "scores");
    assert_eq!(split[0], split[3], "the same image scores the same wherever it lands");
}

#[test]
fn bad_checkpoints_and_inputs_are_refused_with_the_culprit_named() {
    let client = client();
    let opts = ScorerOptions { devices: 1, ..Default::default() };
    let missing = edited_checkpoint("missing", |w| {
        w.remove("vision_model.encoder.layers.1.mlp.fc2.bias");
    });
    let err = Scorer::load(&missing, &client, &opts).err().expect("a missing tensor is an error").to_string();
    assert!(err.contains("vision_model.encoder.layers.1.mlp.fc2.bias"), "{err}");

    let reshaped = edited_checkpoint("shape", |w| {
        w.insert("text_projection.weight".into(), HostTensor::zeros(dalle_xla::DType::F32, &[16, 31]));
    });
    let err = Scorer::load(&reshaped, &client, &opts).err().expect("a wrong shape is an error").to_string();
    assert!(err.contains("text_projection.weight") && err.contains("[16, 31]"), "{err}");

    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap().replace("\"quick_gelu\"", "\"swishy\"");
    let err = ClipConfig::from_hf_json(&config, "config.json").unwrap_err().to_string();
    assert!(err.contains("hidden_act") && err.contains("swishy"), "{err}");

    let scorer = Scorer::load(&fixture(), &client, &opts).unwrap();
    let err = scorer.score("a red circle", &[]).unwrap_err().to_string();
    assert!(err.contains("no images"), "{err}");
}
