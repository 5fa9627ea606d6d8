//! Data faults through the `dalle` binary: a VQGAN dataset smaller than one
//! batch is an error naming the count (not a spinning loader), `encode`
//! verifies its shards against a manifest on a rerun, refuses inputs that
//! changed unless told to restart and never writes an empty shard, `decode`
//! does not overwrite files unless asked, and a damaged weights file is
//! refused instead of decoding to garbage.

use dalle_xla::models::vqgan::{load_safetensors, weights_file, VqganConfig, ENCODE_MANIFEST};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hardening-data-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `dalle ARGS`, killing it after `limit`; (status code, stdout + stderr).
fn dalle_within(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let dir = std::env::temp_dir();
    let n = std::process::id() as usize * 1000 + {
        static K: AtomicUsize = AtomicUsize::new(0);
        K.fetch_add(1, Ordering::SeqCst)
    };
    let (out_path, err_path) = (dir.join(format!("dalle-out-{n}")), dir.join(format!("dalle-err-{n}")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dalle"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run dalle");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dalle {args:?} did not finish within {limit:?}:\n{}", std::fs::read_to_string(&err_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", std::fs::read_to_string(&out_path).unwrap_or_default(), std::fs::read_to_string(&err_path).unwrap_or_default());
    let _ = (std::fs::remove_file(out_path), std::fs::remove_file(err_path));
    (status.code(), text)
}

fn dalle(args: &[&str]) -> (Option<i32>, String) {
    dalle_within(args, Duration::from_secs(120))
}

/// The tiny fixture VQGAN (16x16 images, 64 tokens) as a weights file the commands accept.
fn fixture_weights(dir: &Path) -> PathBuf {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan_tiny");
    let config: VqganConfig = serde_yaml::from_str(&std::fs::read_to_string(fixture.join("config.yaml")).unwrap()).unwrap();
    let weights: Vec<_> = load_safetensors(&fixture.join("params.safetensors")).unwrap().into_iter().collect();
    let file = dir.join("vqgan.safetensors");
    std::fs::write(&file, weights_file(&config, &weights).unwrap()).unwrap();
    file
}

// ---------------------------------------------------------------- 2: fewer images than a batch

#[test]
fn train_vqgan_with_fewer_images_than_a_batch_fails_naming_the_count() {
    for n in [1, 7] {
        let dir = scratch("few-images");
        dalle_xla::data::shapes::generate(n, 32, 3, &dir.join("images")).unwrap();
        let data = format!("data.images={}", s(&dir.join("images")));
        let (code, out) = dalle_within(
            &[
                "train-vqgan", "--config", "configs/vqgan/tiny.yaml", "--run", &s(&dir.join("run")), "--cpu-devices", "1",
                "--set", &data, "--set", "train.batch_size=8", "--set", "train.steps=3",
            ],
            Duration::from_secs(90),
        );
        assert_eq!(code, Some(1), "{n} images: {out}");
        assert!(out.contains(&format!("has {n} usable image(s)")) && out.contains("fewer than one batch of 8"), "{out}");
    }

    // Ten listed, but only six readable: found while serving the first epoch.
    let dir = scratch("few-readable");
    let images = dir.join("images");
    dalle_xla::data::shapes::generate(6, 32, 3, &images).unwrap();
    for i in 0..4 {
        std::fs::write(images.join(format!("zz_broken_{i}.png")), b"not a png").unwrap();
        std::fs::write(images.join(format!("zz_broken_{i}.txt")), "broken").unwrap();
    }
    let data = format!("data.images={}", s(&images));
    let (code, out) = dalle_within(
        &[
            "train-vqgan", "--config", "configs/vqgan/tiny.yaml", "--run", &s(&dir.join("run")), "--cpu-devices", "1",
            "--set", &data, "--set", "train.batch_size=8", "--set", "train.steps=3",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("only 6 of the 10 images") && out.contains("fewer than one batch of 8"), "{out}");
}

// ---------------------------------------------------------------- 3: encode reruns

fn encode(vqgan: &Path, images: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["encode", "--cpu-devices", "1", "--shard-size", "4", "--workers", "1"];
    let (v, i, o) = (s(vqgan), s(images), s(out));
    args.extend(["--vqgan", &v, "--images", &i, "--out", &o]);
    args.extend(extra);
    dalle(&args)
}

fn shards(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
}

#[test]
fn encode_verifies_shards_refuses_changed_inputs_and_writes_no_empty_shard() {
    let dir = scratch("encode");
    let vqgan = fixture_weights(&dir);
    let (images, out) = (dir.join("images"), dir.join("encoded"));
    dalle_xla::data::shapes::generate(10, 16, 4, &images).unwrap();
    let (code, text) = encode(&vqgan, &images, &out, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(out.join(ENCODE_MANIFEST).is_file());
    assert_eq!(shards(&out), ["shard-00000-of-00003.parquet", "shard-00001-of-00003.parquet", "shard-00002-of-00003.parquet"]);
    let good = std::fs::read(out.join("shard-00001-of-00003.parquet")).unwrap();

    // A truncated shard and an emptied one are found and encoded again.
    std::fs::write(out.join("shard-00001-of-00003.parquet"), &good[..good.len() / 2]).unwrap();
    std::fs::write(out.join("shard-00002-of-00003.parquet"), b"").unwrap();
    let (code, text) = encode(&vqgan, &images, &out, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 of 3 shards were already there") && text.contains("2 damaged or missing shard(s) encoded again"), "{text}");
    assert_eq!(std::fs::read(out.join("shard-00001-of-00003.parquet")).unwrap(), good, "the repaired shard is the original");

    // The input folder grew: refused, then started over on request, with no shards of the old split left.
    dalle_xla::data::shapes::generate(14, 16, 4, &images).unwrap();
    let (code, text) = encode(&vqgan, &images, &out, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("input images changed") && text.contains("10 image(s)") && text.contains("14") && text.contains("--restart"), "{text}");
    let (code, text) = encode(&vqgan, &images, &out, &["--restart"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(shards(&out).len(), 4);
    assert!(shards(&out).iter().all(|n| n.ends_with("-of-00004.parquet")), "{:?}", shards(&out));

    // No readable image at all: an error, and no shard file.
    let (broken, empty_out) = (dir.join("broken"), dir.join("empty-out"));
    std::fs::create_dir_all(&broken).unwrap();
    for i in 0..2 {
        std::fs::write(broken.join(format!("{i}.png")), b"not a png").unwrap();
        std::fs::write(broken.join(format!("{i}.txt")), "a caption").unwrap();
    }
    let (code, text) = encode(&vqgan, &broken, &empty_out, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nothing was encoded"), "{text}");
    assert!(!empty_out.exists() || shards(&empty_out).is_empty(), "{:?}", shards(&empty_out));
}

// ---------------------------------------------------------------- 6: decode outputs and damaged weights

#[test]
fn decode_keeps_existing_files_unless_asked_and_refuses_damaged_weights() {
    let dir = scratch("decode");
    let vqgan = fixture_weights(&dir);
    let tokens = dir.join("tokens.txt");
    let line: Vec<String> = (0..64).map(|i| (i % 32).to_string()).collect();
    std::fs::write(&tokens, format!("{}\n{}\n", line.join(" "), line.join(","))).unwrap();
    let out = dir.join("png");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("000001.png"), b"a user's file").unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["decode".to_string(), "--cpu-devices".into(), "1".into(), "--vqgan".into(), s(&vqgan), "--tokens".into(), s(&tokens), "--out".into(), s(&out)];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let run = |a: Vec<String>| dalle(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, text) = run(args(&[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("000001.png") && text.contains("--overwrite"), "{text}");
    assert_eq!(std::fs::read(out.join("000001.png")).unwrap(), b"a user's file");
    let (code, text) = run(args(&["--overwrite"]));
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(image::open(out.join("000001.png")).unwrap().width(), 16);

    // A block of 0xff in the tensor data: refused, naming the tensor.
    let mut bytes = std::fs::read(&vqgan).unwrap();
    let n = bytes.len();
    bytes[n - 4096..n - 2048].fill(0xff);
    std::fs::write(&vqgan, &bytes).unwrap();
    let (code, text) = run(args(&["--overwrite"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not match its SHA-256") && text.contains("tensor '"), "{text}");
}
