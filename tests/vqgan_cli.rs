//! The VQGAN commands end to end through the `dalle` binary: train a tiny
//! tokenizer on shapes images, encode the images to shards, decode a shard
//! back to PNG files; and the messages for a bad `--vqgan`.
use std::path::Path;
use std::process::Command;

fn dalle(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dalle")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache")).output().expect("run dalle")
}

fn check(out: &std::process::Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn train_encode_decode() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("shapes");
    dalle_xla::data::shapes::generate(12, 32, 9, &data).unwrap();
    let (run, enc, png) = (dir.join("run"), dir.join("encoded"), dir.join("png"));
    let s = |p: &Path| p.display().to_string();

    let data_set = format!("data.images={}", s(&data));
    let out = dalle(&[
        "train-vqgan", "--config", "configs/vqgan/tiny.yaml", "--run", &s(&run), "--cpu-devices", "1",
        "--set", &data_set, "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.log_every=1",
        "--set", "model.ch_mult=[1,2]", "--set", "model.attn_resolutions=[]",
    ]);
    let text = check(&out, "train-vqgan");
    assert!(text.contains("training without the perceptual loss"), "{text}");
    assert!(run.join("vqgan.safetensors").is_file() && run.join("metrics.jsonl").is_file() && run.join("config.yaml").is_file());

    let out = dalle(&["encode", "--vqgan", &s(&run), "--images", &s(&data), "--out", &s(&enc), "--shard-size", "8", "--cpu-devices", "2", "--batch-per-device", "2"]);
    let text = check(&out, "encode");
    assert!(text.contains("encoded 12 images into 2 new shard(s)"), "{text}");
    let out = dalle(&["encode", "--vqgan", &s(&run), "--images", &s(&data), "--out", &s(&enc), "--shard-size", "8", "--cpu-devices", "2"]);
    let text = check(&out, "encode again");
    assert!(text.contains("2 of 2 shards were already there"), "{text}");

    let shard = enc.join("shard-00000-of-00002.parquet");
    let out = dalle(&["decode", "--vqgan", &s(&run.join("vqgan.safetensors")), "--tokens", &s(&shard), "--out", &s(&png), "--cpu-devices", "1"]);
    let text = check(&out, "decode");
    assert!(text.contains("decoded 8 images"), "{text}");
    let image = image::open(png.join("000007.png")).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    assert!(png.join("000007.txt").is_file(), "captions travel with the decoded images");

    let out = dalle(&["encode", "--vqgan", &s(&dir.join("no-such-run")), "--images", &s(&data), "--out", &s(&enc), "--cpu-devices", "1"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(text.contains("no-such-run"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
