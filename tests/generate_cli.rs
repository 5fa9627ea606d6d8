//! `dalle generate` end to end through the binary: a tiny DalleBart overfit
//! on four captions generates exactly their token sequences (greedy) and
//! decodes them with a VQGAN to PNG files, grids and results.jsonl; existing
//! outputs are not overwritten; with `--clip` the candidates are reranked
//! by CLIP and the best kept in order; bad input gets messages naming the value.
use dalle_xla::graph::Graph;
use dalle_xla::models::vqgan::{weights_file, Vqgan, VqganConfig};
use dalle_xla::nn::VarBuilder;
use dalle_xla::DType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A CPU client for scoring the written images in this process.
fn client() -> dalle_xla::pjrt::Client {
    dalle_xla::pjrt::open_client("cpu", None, &dalle_xla::pjrt::ClientOptions::cpu_devices(1)).expect("the CPU client")
}

fn dalle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache")).output().expect("run dalle")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
    text(out)
}

fn fails(out: &Output, what: &str, needle: &str) {
    assert!(!out.status.success(), "{what} should fail:\n{}", text(out));
    let t = text(out);
    assert!(t.contains(needle), "{what}: the message should mention '{needle}':\n{t}");
    assert!(!t.contains("panicked"), "{what} panicked:\n{t}");
}

/// A random VQGAN whose 4x4 grid of `n_embed` codes matches the tiny DalleBart.
fn vqgan_file(path: &Path, n_embed: i64) {
    let config = VqganConfig { ch: 32, ch_mult: vec![1, 2, 2], attn_resolutions: vec![], n_embed, resolution: 16, ..VqganConfig::tiny() };
    let g = Graph::new("vqgan");
    let images = g.param("images", DType::F32, &[1, 16, 16, 3]);
    let vb = VarBuilder::new(&g, DType::F32);
    Vqgan::new(config.clone()).reconstruct(&vb, &images).unwrap();
    let weights: Vec<_> = vb.specs().iter().map(|s| (s.name.clone(), s.init.sample(1, &s.name, DType::F32, &s.ty.shape))).collect();
    std::fs::write(path, weights_file(&config, &weights).unwrap()).unwrap();
}

struct Setup {
    dir: PathBuf,
    run: String,
    vqgan: String,
    captions: Vec<String>,
    encodings: Vec<Vec<i64>>,
}

fn setup() -> Setup {
    let dir = std::env::temp_dir().join(format!("dalle-generate-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let captions: Vec<String> =
        ["a red circle at the top", "two blue squares on the left", "a small green triangle", "a big yellow star at the bottom"].map(String::from).to_vec();
    let mut state = 7u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % 64
    };
    let encodings: Vec<Vec<i64>> = captions.iter().map(|_| (0..16).map(|_| next() as i64).collect()).collect();
    let rows: String = captions
        .iter()
        .zip(&encodings)
        .map(|(c, e)| serde_json::json!({"caption": c, "encoding": e}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("train.jsonl"), rows).unwrap();
    std::fs::write(dir.join("captions.txt"), captions.join("\n")).unwrap();
    let s = |p: PathBuf| p.display().to_string();
    ok(&dalle(&["tokenizer", "--captions", &s(dir.join("captions.txt")), "--vocab-size", "300", "--out", &s(dir.join("tokenizer.json"))]), "tokenizer");
    let run = s(dir.join("run"));
    let files = format!("data.train_files=[{}]", s(dir.join("train.jsonl")));
    let tok = format!("data.tokenizer={}", s(dir.join("tokenizer.json")));
    let out = dalle(&[
        "train", "--config", "configs/tiny.yaml", "--run", &run, "--cpu-devices", "1",
        "--set", "data.kind=files", "--set", &files, "--set", &tok, "--set", "data.eval_fraction=0",
        "--set", "model.encoder_vocab_size=320", "--set", "train.steps=300", "--set", "train.eval_every=0",
        "--set", "optimizer.learning_rate=0.01", "--set", "train.log_every=100",
    ]);
    ok(&out, "train");
    let vqgan = s(dir.join("vqgan.safetensors"));
    vqgan_file(Path::new(&vqgan), 64);
    Setup { dir, run, vqgan, captions, encodings }
}

#[test]
fn an_overfit_model_generates_its_training_images_and_bad_input_is_refused() {
    let Setup { dir, run, vqgan, captions, encodings } = setup();
    let out_dir = dir.join("out").display().to_string();
    let mut args = vec!["generate", "--model", &run, "--vqgan", &vqgan, "--out", &out_dir, "--greedy", "--condition-scale", "1", "--n", "2", "--cpu-devices", "2"];
    for c in &captions {
        args.extend(["--prompt", c.as_str()]);
    }
    let t = ok(&dalle(&args), "generate");
    assert!(t.contains("wrote 8 image(s) and 4 grid(s)"), "{t}");

    let results = std::fs::read_to_string(dir.join("out/results.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = results.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["prompt"], captions[i].as_str());
        let tokens: Vec<Vec<i64>> = serde_json::from_value(line["tokens"].clone()).unwrap();
        assert_eq!(tokens.len(), 2);
        for t in &tokens {
            assert_eq!(t, &encodings[i], "prompt {i} '{}': greedy generation should reproduce its training tokens", captions[i]);
        }
        let images: Vec<String> = serde_json::from_value(line["images"].clone()).unwrap();
        for name in &images {
            let img = image::open(dir.join("out").join(name)).unwrap();
            assert_eq!((img.width(), img.height()), (16, 16), "{name}");
        }
        assert!(dir.join("out").join(line["grid"].as_str().unwrap()).is_file());
        assert_eq!(line["settings"]["sample"], false);
    }

    // The same command again refuses to overwrite; --overwrite replaces.
    fails(&dalle(&args), "a second run into the same --out", "--overwrite");
    let mut again = args.clone();
    again.push("--overwrite");
    ok(&dalle(&again), "generate --overwrite");
    assert!(!std::fs::read_dir(dir.join("out")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".partial")));

    // A long prompt is cut with a warning; sampling with super-conditioning works from the same run.
    let long = "a red circle ".repeat(20);
    let other = dir.join("sampled").display().to_string();
    let t = ok(&dalle(&["generate", "--model", &run, "--vqgan", &vqgan, "--out", &other, "--prompt", &long, "--n", "3", "--top-k", "8", "--cpu-devices", "2"]), "sampled");
    assert!(t.contains("longer than the model reads"), "{t}");
    assert!(Path::new(&other).join("000_002.png").is_file());

    // Bad input: each refused with a message naming the value.
    let o = |name: &str| dir.join(name).display().to_string();
    let base = |out: &str| vec!["generate".to_string(), "--model".into(), run.clone(), "--vqgan".into(), vqgan.clone(), "--out".into(), out.to_string(), "--cpu-devices".into(), "1".into()];
    let with = |extra: &[&str], out: &str| {
        let mut a = base(out);
        a.extend(extra.iter().map(|s| s.to_string()));
        dalle(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    fails(&with(&[], &o("e1")), "no prompts", "no prompts");
    fails(&with(&["--prompt", "x", "--n", "0"], &o("e2")), "--n 0", "--n must be at least 1");
    fails(&with(&["--prompt", "x", "--top-p", "1.5"], &o("e3")), "top-p 1.5", "top-p");
    fails(&with(&["--prompt", "x", "--temperature", "-1"], &o("e4")), "negative temperature", "temperature");
    fails(&with(&["--prompt", "  "], &o("e5")), "empty prompt", "empty");
    fails(&with(&["--prompt", "x", "--dtype", "f8"], &o("e6")), "bad dtype", "--dtype");
    let other_vqgan = o("vqgan128.safetensors");
    vqgan_file(Path::new(&other_vqgan), 128);
    let mut a = base(&o("e7"));
    a[4] = other_vqgan;
    a.extend(["--prompt".to_string(), "x".to_string()]);
    fails(&dalle(&a.iter().map(String::as_str).collect::<Vec<_>>()), "VQGAN with another codebook", "codebook");
    let empty_run = o("empty-run");
    std::fs::create_dir_all(&empty_run).unwrap();
    let mut a = base(&o("e8"));
    a[2] = empty_run;
    a.extend(["--prompt".to_string(), "x".to_string()]);
    fails(&dalle(&a.iter().map(String::as_str).collect::<Vec<_>>()), "a run without checkpoints", "no committed checkpoint");
    fails(&with(&["--prompt", "x", "--step", "7"], &o("e9")), "a missing step", "step 7");
    // Reranking with CLIP (the transformers fixture): 6 sampled candidates per
    // prompt, the 3 best kept, best first; the written images score as recorded.
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip_tiny");
    let ranked = o("ranked");
    let t = ok(
        &with(&["--prompt", &captions[0], "--prompt", &captions[1], "--top-k", "8", "--candidates", "6", "--keep", "3", "--clip", clip], &ranked),
        "generate --clip",
    );
    assert!(t.contains("wrote 6 image(s) and 2 grid(s)"), "{t}");
    let scorer = dalle_xla::models::clip::Scorer::load(Path::new(clip), &client(), &Default::default()).unwrap();
    for (p, line) in std::fs::read_to_string(Path::new(&ranked).join("results.jsonl")).unwrap().lines().enumerate() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let all: Vec<f32> = serde_json::from_value(line["candidate_scores"].clone()).unwrap();
        let scores: Vec<f32> = serde_json::from_value(line["scores"].clone()).unwrap();
        let index: Vec<usize> = serde_json::from_value(line["candidate_index"].clone()).unwrap();
        assert_eq!(all.len(), 6);
        let mut best = all.clone();
        best.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(scores, best[..3].to_vec(), "prompt {p}: the 3 best of {all:?}, best first");
        assert_eq!(index.iter().map(|&i| all[i]).collect::<Vec<_>>(), scores);
        let images: Vec<String> = serde_json::from_value(line["images"].clone()).unwrap();
        assert_eq!(images.len(), 3);
        let written: Vec<image::RgbImage> = images.iter().map(|n| image::open(Path::new(&ranked).join(n)).unwrap().to_rgb8()).collect();
        let rescored = scorer.score(line["prompt"].as_str().unwrap(), &written).unwrap();
        for (got, want) in rescored.iter().zip(&scores) {
            assert!((got - want).abs() < 1e-4, "prompt {p}: written image scores {got}, recorded {want}");
        }
    }
    fails(&with(&["--prompt", "x", "--candidates", "2", "--keep", "3", "--clip", clip], &o("e10")), "--keep above --candidates", "--keep 3");
    fails(&with(&["--prompt", "x", "--candidates", "2"], &o("e11")), "--candidates without --clip", "--clip");
    for e in ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11"] {
        let d = dir.join(e);
        assert!(!d.join("results.jsonl").exists(), "{e}: a refused run must not leave results");
    }
    std::fs::remove_dir_all(&dir).ok();
}
