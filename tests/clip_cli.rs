//! `dalle clip score` and `dalle train-clip` through the binary: a table and
//! a JSON file of scores matching the library's, undecodable images skipped
//! and counted, no images or an existing output refused; a short training run
//! exports a transformers CLIP directory that `clip score` loads.
use dalle_xla::data::shapes;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dalle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache")).output().expect("run dalle")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-clip-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip_tiny");

#[test]
fn clip_score_prints_writes_and_skips_undecodable_images() {
    let dir = temp_dir("score");
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    let out = dir.join("scores.json");
    let images: Vec<String> = (0..3).map(|i| format!("{FIXTURE}/image_{i}.png")).collect();
    let mut args = vec!["clip", "score", "--clip", FIXTURE, "--prompt", "A photo of a red circle", "--out", out.to_str().unwrap(), "--cpu-devices", "2"];
    args.extend(images.iter().map(String::as_str));
    args.push(broken.to_str().unwrap());
    let o = dalle(&args);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("image_0.png") && t.contains("skipped 1 image(s)"), "{t}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["scores"].as_array().unwrap().len(), 3);
    assert_eq!(json["skipped"][0]["image"], broken.to_str().unwrap());
    // The fixture's first prompt and images: transformers' logits_per_image[:, 0].
    let expected = dalle_xla::models::vqgan::load_safetensors(&Path::new(FIXTURE).join("expected.safetensors")).unwrap();
    let want = expected["logits_per_image"].to_f64_vec();
    for i in 0..3 {
        let got = json["scores"][i]["logits_per_image"][0].as_f64().unwrap();
        assert!((got - want[i * 4]).abs() < 1e-4, "image {i}: {got} vs transformers {}", want[i * 4]);
    }

    let again = dalle(&args);
    assert!(!again.status.success() && text(&again).contains("--overwrite"), "{}", text(&again));
    let none = dalle(&["clip", "score", "--clip", FIXTURE, "--prompt", "x", "--out", dir.join("n.json").to_str().unwrap()]);
    assert!(!none.status.success() && text(&none).contains("no images"), "{}", text(&none));
    let bad = dalle(&["clip", "score", "--clip", dir.to_str().unwrap(), "--prompt", "x", &images[0], "--out", dir.join("b.json").to_str().unwrap()]);
    assert!(!bad.status.success() && text(&bad).contains("config.json"), "{}", text(&bad));
    for o in [&none, &bad] {
        assert!(!text(o).contains("panicked"), "{}", text(o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_clip_exports_a_directory_that_clip_score_loads() {
    let dir = temp_dir("train");
    let data = dir.join("shapes");
    shapes::generate(64, 32, 5, &data).unwrap();
    let run = dir.join("run");
    let o = dalle(&[
        "train-clip", "--config", "configs/clip/tiny.yaml", "--run", run.to_str().unwrap(), "--cpu-devices", "2",
        "--set", &format!("data.images={}", data.display()), "--set", "train.steps=6", "--set", "train.batch_size=16",
        "--set", "train.devices=2", "--set", "train.log_every=3", "--set", "checkpoint.every_steps=3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        assert!(run.join("clip").join(f).is_file(), "clip/{f} exported");
    }
    assert!(run.join("metrics.jsonl").is_file());
    let first = data.join(shapes::file_stem(0)).with_extension("png");
    let caption = std::fs::read_to_string(data.join(shapes::file_stem(0)).with_extension("txt")).unwrap();
    let out = dir.join("scores.json");
    let o = dalle(&["clip", "score", "--clip", run.join("clip").to_str().unwrap(), "--prompt", caption.trim(), first.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.is_file());
    std::fs::remove_dir_all(&dir).ok();
}
