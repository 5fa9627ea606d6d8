//! Released checkpoints: tests/fixtures/released holds tiny models in the
//! released layouts, saved by the reference packages' own serializers
//! (tools/make_released_fixtures.py: dalle-mini's DalleBart with use_scan off
//! and on, f32 and f16; the VQGAN in vqgan-jax's layout; transformers'
//! FlaxCLIPModel). After `dalle convert` our outputs must match theirs, the
//! export must round-trip, fine-tuning must start from their loss, and bad
//! inputs must fail clearly without leaving files behind.
mod common;
use common::*;
use dalle_xla::graph::Graph;
use dalle_xla::models::convert::{convert_dir, export_dallebart, ConvertOptions, ExportOptions};
use dalle_xla::models::dallebart::{load_weights_dir, DalleBart};
use dalle_xla::models::vqgan::{open_vqgan, Vqgan};
use dalle_xla::nn::{Precision, VarBuilder};
use dalle_xla::weights::{load_clip_dir, load_safetensors, load_sharded_safetensors, select_params, FlaxFile, ModelKind};
use dalle_xla::{DType, HostTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DALLEBART: [&str; 4] = ["dallebart_f32", "dallebart_f32_scan", "dallebart_f16", "dallebart_f16_scan"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released").join(name)
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-released-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn convert(src: &Path, out: &Path) -> dalle_xla::models::convert::ConvertReport {
    convert_dir(src, out, &ConvertOptions::default()).unwrap_or_else(|e| panic!("converting {}: {e}", src.display()))
}

/// Our logits for the fixture's batch with `weights`.
fn dallebart_logits(config: &dalle_xla::models::dallebart::DalleBartConfig, weights: &BTreeMap<String, HostTensor>, expected: &BTreeMap<String, HostTensor>) -> HostTensor {
    let (b, t) = (expected["input_ids"].shape[0], config.max_text_length);
    let g = Graph::new("released");
    let ids = g.param("input_ids", DType::I32, &[b, t]);
    let mask = g.param("attention_mask", DType::I32, &[b, t]);
    let labels = g.param("labels", DType::I32, &[b, config.image_length]);
    let vb = VarBuilder::new(&g, DType::F32);
    let logits = DalleBart::new(config.clone(), Precision::f32()).forward(&vb, &ids, &mask, &labels).unwrap();
    let values = select_params(weights, &vb.specs(), "converted").unwrap();
    let mut inputs: Vec<&HostTensor> = vec![&expected["input_ids"], &expected["attention_mask"], &expected["labels"]];
    inputs.extend(values.iter());
    compile(&g, &[&logits]).run(&inputs).unwrap().remove(0)
}

#[test]
fn converted_dallebart_logits_match_dalle_mini() {
    for name in DALLEBART {
        let out = scratch(name).join("converted");
        let report = convert(&fixture(name), &out);
        assert_eq!(report.kind, ModelKind::Dallebart);
        assert!(report.unused.is_empty(), "{name}: unused {:?}", report.unused);
        assert!(out.join("model.safetensors").is_file() && out.join("model.yaml").is_file() && out.join("tokenizer.json").is_file());
        let converted = load_weights_dir(&out).unwrap();
        let direct = load_weights_dir(&fixture(name)).unwrap();
        assert_eq!(converted.config, direct.config, "{name}");
        assert!(converted.weights == direct.weights, "{name}: the flax directory loaded directly differs from its conversion");
        assert!(converted.normalize_text);
        let f16 = name.contains("f16");
        assert!(converted.weights.values().all(|t| t.dtype == if f16 { DType::F16 } else { DType::F32 }), "{name}: dtype kept");

        // `dalle generate --model DIR` takes both directories too.
        for dir in [&out, &fixture(name)] {
            let g = dalle_xla::generate::load_dallebart(dir.to_str().unwrap(), None).unwrap();
            assert!(g.weights == converted.weights && g.config == converted.config && g.tokenizer.is_some());
        }
        assert!(dalle_xla::generate::load_dallebart(out.to_str().unwrap(), Some(3)).is_err());

        let expected = load_safetensors(&fixture(name).join("expected.safetensors")).unwrap();
        let logits = dallebart_logits(&converted.config, &converted.weights, &expected);
        assert_eq!(logits.shape, expected["logits"].shape);
        // The reference computed in f32 on the stored (f16-rounded) weights: the same tolerance holds.
        assert_close(&logits.to_f64_vec(), &expected["logits"].to_f64_vec(), 1e-4, &format!("{name} logits"));
    }
}

#[test]
fn scanned_and_unscanned_checkpoints_are_the_same_parameters() {
    // use_scan stacks layer i of each array at row i: unstacked, the trees agree name by name.
    for (plain, scanned) in [("dallebart_f32", "dallebart_f32_scan")] {
        let a = FlaxFile::open(&fixture(plain).join("flax_model.msgpack")).unwrap();
        let b = FlaxFile::open(&fixture(scanned).join("flax_model.msgpack")).unwrap();
        assert_eq!(a.arrays.len(), 73);
        assert_eq!(b.arrays.len(), 42);
        let stacked = &b.arrays["model.encoder.layers.FlaxBartEncoderLayers.GLU_0.Dense_0.kernel"];
        assert_eq!(stacked.shape, vec![2, 32, 64]);
        let row = b.read_row("model.encoder.layers.FlaxBartEncoderLayers.GLU_0.Dense_0.kernel", 1).unwrap();
        assert_eq!(row.shape, vec![32, 64]);
        let whole = b.read("model.encoder.layers.FlaxBartEncoderLayers.GLU_0.Dense_0.kernel").unwrap();
        assert_eq!(row.data, whole.data[whole.data.len() / 2..]);
    }
}

#[test]
fn export_round_trips_to_identical_tensors() {
    for name in DALLEBART {
        let dir = scratch(&format!("export-{name}"));
        let m = load_weights_dir(&fixture(name)).unwrap();
        let out = dir.join("exported");
        let files = export_dallebart(&m.config, &m.weights, m.normalize_text, Some(&fixture(name)), &out, &ExportOptions::default()).unwrap();
        assert!(files.iter().any(|(f, _)| f == "flax_model.msgpack") && out.join("tokenizer.json").is_file());
        // The export is a flax directory again: it loads (converting in memory) to the same weights.
        let back = load_weights_dir(&out).unwrap();
        assert_eq!(back.config, m.config);
        assert!(back.weights == m.weights, "{name}: exported tensors differ");
        // Against the original file, array by array (scanned originals row by row).
        let original = FlaxFile::open(&fixture(name).join("flax_model.msgpack")).unwrap();
        let exported = FlaxFile::open(&out.join("flax_model.msgpack")).unwrap();
        assert_eq!(exported.arrays.len(), 73, "{name}: exported without use_scan");
        for (n, a) in &exported.arrays {
            let got = exported.read(n).unwrap();
            let want = match original.arrays.contains_key(n) {
                true => original.read(n).unwrap(),
                false => {
                    let (stacked, row) = scanned_name(n);
                    original.read_row(&stacked, row).unwrap()
                }
            };
            assert_eq!(a.dtype, want.dtype, "{name}: {n}");
            assert!(got == want, "{name}: '{n}' differs after the round trip");
        }
        // A second export to the same place is refused without --overwrite, and leaves it intact.
        let e = export_dallebart(&m.config, &m.weights, true, None, &out, &ExportOptions::default()).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert!(out.join("flax_model.msgpack").is_file());
    }
}

fn scanned_name(n: &str) -> (String, usize) {
    for (one, all) in [("FlaxBartEncoderLayer_", "FlaxBartEncoderLayers"), ("FlaxBartDecoderLayer_", "FlaxBartDecoderLayers")] {
        if let Some(at) = n.find(one) {
            let rest = &n[at + one.len()..];
            let (i, tail) = rest.split_once('.').unwrap();
            return (format!("{}{all}.{tail}", &n[..at]), i.parse().unwrap());
        }
    }
    panic!("{n} is not a layer parameter")
}

#[test]
fn converted_vqgan_latents_match_taming() {
    let dir = scratch("vqgan");
    let out = dir.join("vqgan");
    let report = convert(&fixture("vqgan"), &out);
    assert_eq!(report.kind, ModelKind::Vqgan);
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let expected = load_safetensors(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan_tiny/expected.safetensors")).unwrap();
    // `--vqgan DIR` takes the converted directory and the flax one alike.
    let (config, weights, _) = open_vqgan(out.to_str().unwrap()).unwrap();
    let (flax_config, flax_weights, _) = open_vqgan(fixture("vqgan").to_str().unwrap()).unwrap();
    assert_eq!(config, flax_config);
    assert!(weights == flax_weights);
    assert!(weights.values().all(|t| t.dtype == DType::BF16), "the checkpoint's bfloat16 is kept");

    let images = &expected["images"];
    let g = Graph::new("released_vqgan");
    let x = g.param("images", DType::F32, &images.shape);
    let vb = VarBuilder::new(&g, DType::F32);
    let model = Vqgan::new(config.clone());
    let latents = model.encode_latents(&vb, &x).unwrap();
    let q = model.quantize(&vb, &latents).unwrap();
    let values = select_params(&weights, &vb.specs(), "converted").unwrap();
    let mut inputs: Vec<&HostTensor> = vec![images];
    inputs.extend(values.iter());
    let got = compile(&g, &[&latents, &q.indices]).run(&inputs).unwrap();
    assert_close(&got[0].to_f64_vec(), &expected["latents"].to_f64_vec(), 1e-4, "latents");
    assert_eq!(got[1].to_vec::<i32>().unwrap(), expected["indices"].to_vec::<i32>().unwrap(), "codes");
}

#[test]
fn converted_clip_has_the_pytorch_names_and_layouts() {
    let dir = scratch("clip");
    let out = dir.join("clip");
    let report = convert(&fixture("clip"), &out);
    assert_eq!(report.kind, ModelKind::Clip);
    assert!(report.unused.is_empty());
    for f in ["config.json", "tokenizer.json", "vocab.json", "merges.txt", "model.yaml"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let ours = load_sharded_safetensors(&out).unwrap();
    let theirs = load_safetensors(&fixture("clip").join("expected_pt.safetensors")).unwrap();
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (name, want) in &theirs {
        assert!(&ours[name] == want, "'{name}': ours {:?}{:?}, PyTorch layout {:?}{:?}", ours[name].dtype, ours[name].shape, want.dtype, want.shape);
    }
    for name in ["visual_projection.weight", "text_projection.weight", "logit_scale", "vision_model.embeddings.patch_embedding.weight", "text_model.embeddings.token_embedding.weight"] {
        assert!(ours.contains_key(name), "{name}");
    }
    assert_eq!(ours["visual_projection.weight"].shape, vec![16, 32], "Linear weights are [out, in]");
    // Reranking loads the converted directory and the flax one alike.
    let converted = load_clip_dir(&out).unwrap();
    let direct = load_clip_dir(&fixture("clip")).unwrap();
    assert!(converted.weights == ours && direct.weights == ours);
    assert_eq!(converted.config["projection_dim"], 16);
    assert!(load_clip_dir(&fixture("dallebart_f32")).err().unwrap().to_string().contains("not CLIP"));
    assert_eq!(ours["vision_model.embeddings.patch_embedding.weight"].shape, vec![32, 3, 8, 8], "conv weights are OIHW");
    // The CLIP scorer (reranking, `dalle clip score`) reads the flax directory's weights as the converted ones.
    let (flax_config, flax_weights) = dalle_xla::models::clip::load_checkpoint(&fixture("clip")).unwrap();
    let (converted_config, converted_weights) = dalle_xla::models::clip::load_checkpoint(&out).unwrap();
    assert_eq!(flax_config, converted_config);
    assert!(!flax_weights.is_empty() && flax_weights == converted_weights);
}

#[test]
fn truncated_or_corrupted_msgpack_is_refused_naming_file_and_tensor() {
    let dir = scratch("corrupt");
    let bytes = std::fs::read(fixture("dallebart_f32").join("flax_model.msgpack")).unwrap();
    for (case, data) in [("truncated", bytes[..bytes.len() * 2 / 3].to_vec()), ("cut in the structure", bytes[..5].to_vec())] {
        let src = dir.join(case.replace(' ', "_"));
        copy_dir(&fixture("dallebart_f32"), &src);
        std::fs::write(src.join("flax_model.msgpack"), &data).unwrap();
        let out = dir.join(format!("{}-out", case.replace(' ', "_")));
        let e = convert_dir(&src, &out, &ConvertOptions::default()).unwrap_err().to_string();
        assert!(e.contains("flax_model.msgpack") && e.contains("truncated"), "{case}: {e}");
        assert!(e.contains("inside 'model.") || data.len() == 5, "{case}: names the array: {e}");
        assert!(!out.exists(), "{case}: nothing written");
    }
    // A dtype name no numpy has, in the record of one array.
    let mut bad = bytes.clone();
    let at = bad.windows(7).position(|w| w == b"float32").unwrap();
    bad[at..at + 7].copy_from_slice(b"floa732");
    let src = dir.join("bad_dtype");
    copy_dir(&fixture("dallebart_f32"), &src);
    std::fs::write(src.join("flax_model.msgpack"), &bad).unwrap();
    let e = convert_dir(&src, &dir.join("bad_dtype-out"), &ConvertOptions::default()).unwrap_err().to_string();
    assert!(e.contains("unsupported dtype 'floa732'") && e.contains("in 'lm_head.kernel'") && e.contains("flax_model.msgpack"), "{e}");
    // Garbage after the tree.
    let mut long = bytes.clone();
    long.extend_from_slice(b"\x00\x01");
    std::fs::write(src.join("flax_model.msgpack"), &long).unwrap();
    let e = convert_dir(&src, &dir.join("garbage-out"), &ConvertOptions::default()).unwrap_err().to_string();
    assert!(e.contains("garbage"), "{e}");
    // No leftovers of the temporary output directories.
    let left: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains("partial")).collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");
}

#[test]
fn wrong_configs_files_and_shapes_are_refused_clearly() {
    let dir = scratch("bad");
    let set = |src: &Path, key: &str, value: serde_json::Value| {
        let p = src.join("config.json");
        let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c[key] = value;
        std::fs::write(&p, serde_json::to_string(&c).unwrap()).unwrap();
    };
    let case = |name: &str| {
        let src = dir.join(name);
        copy_dir(&fixture("dallebart_f32"), &src);
        src
    };
    let fails = |src: &Path, wants: &[&str]| {
        let out = src.with_file_name(format!("{}-out", src.file_name().unwrap().to_string_lossy()));
        let e = convert_dir(src, &out, &ConvertOptions::default()).unwrap_err().to_string();
        for w in wants {
            assert!(e.contains(w), "expected '{w}' in: {e}");
        }
        assert!(!out.exists(), "nothing written for: {e}");
        e
    };
    // Settings our model does not implement, named.
    for (key, value) in [("use_alibi", serde_json::json!(true)), ("ln_positions", serde_json::json!("swinv2")), ("use_bias", serde_json::json!(true)), ("sinkhorn_iters", serde_json::json!(3))] {
        let src = case(&format!("key-{key}"));
        set(&src, key, value);
        fails(&src, &[key, "not supported"]);
    }
    // A shape the config disagrees with: file and tensor named.
    let src = case("shape");
    set(&src, "decoder_ffn_dim", serde_json::json!(48));
    fails(&src, &["flax_model.msgpack", "GLU_0.Dense_0.kernel", "[32, 64]", "[32, 48]"]);
    // Another model's config.
    let src = case("clip-config");
    std::fs::copy(fixture("clip").join("config.json"), src.join("config.json")).unwrap();
    fails(&src, &["text_model"]);
    let e = load_weights_dir(&fixture("clip")).err().expect("CLIP is not DalleBart").to_string();
    assert!(e.contains("CLIP model, not DalleBart"), "{e}");
    let e = open_vqgan(fixture("dallebart_f32").to_str().unwrap()).err().expect("not a VQGAN").to_string();
    assert!(e.contains("not a VQGAN"), "{e}");
    // A missing tokenizer file.
    let src = case("no-tokenizer");
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    fails(&src, &["tokenizer.json", "missing"]);
    assert!(load_weights_dir(&src).err().unwrap().to_string().contains("tokenizer.json"));
    // Two candidate weight files.
    let src = case("two-files");
    std::fs::write(src.join("model.safetensors"), b"").unwrap();
    fails(&src, &["two candidate weight files", "flax_model.msgpack", "model.safetensors"]);
    // A converted directory with a wrong-shaped tensor, named on load.
    let out = dir.join("converted");
    convert(&fixture("dallebart_f32"), &out);
    let manifest = std::fs::read_to_string(out.join("model.yaml")).unwrap().replace("decoder_ffn_dim: 64", "decoder_ffn_dim: 48");
    std::fs::write(out.join("model.yaml"), manifest).unwrap();
    let e = load_weights_dir(&out).err().unwrap().to_string();
    assert!(e.contains("Dense_0.kernel") && e.contains("[32, 48]"), "{e}");
    // And the output directory is never overwritten unasked.
    let e = convert_dir(&fixture("dallebart_f32"), &out, &ConvertOptions::default()).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--overwrite"), "{e}");
    convert_dir(&fixture("dallebart_f32"), &out, &ConvertOptions { overwrite: true, ..Default::default() }).unwrap();
    assert!(load_weights_dir(&out).is_ok());
}

#[test]
fn sharded_output_loads_like_a_single_file() {
    let dir = scratch("shards");
    let out = dir.join("sharded");
    let report = convert_dir(&fixture("dallebart_f16_scan"), &out, &ConvertOptions { shard_bytes: 40_000, dtype: Some(DType::F32), ..Default::default() }).unwrap();
    let shards: Vec<&String> = report.files.iter().map(|(n, _)| n).filter(|n| n.starts_with("model-")).collect();
    assert!(shards.len() >= 3, "{:?}", report.files);
    assert!(out.join("model.safetensors.index.json").is_file());
    let sharded = load_weights_dir(&out).unwrap();
    let single = load_weights_dir(&fixture("dallebart_f16_scan")).unwrap();
    assert_eq!(sharded.weights.len(), single.weights.len());
    for (n, t) in &single.weights {
        assert!(sharded.weights[n] == t.cast(DType::F32), "{n}: converted to f32 exactly");
    }
}
