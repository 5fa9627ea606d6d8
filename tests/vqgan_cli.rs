//! The VQGAN commands end to end through the `dalle` binary: train a tiny
//! tokenizer on shapes images, encode the images to shards, decode a shard
//! back to PNG files, judge its reconstructions with the shapes checker; and
//! the messages for a bad `--vqgan`.
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

    judge_reconstructions(&dir, &data, &run);

    let out = dalle(&["encode", "--vqgan", &s(&dir.join("no-such-run")), "--images", &s(&data), "--out", &s(&enc), "--cpu-devices", "1"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(text.contains("no-such-run"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The "holds" share of `row` in `dalle data shapes-judge`'s table.
fn holds_share(table: &str, row: &str) -> String {
    let line = table.lines().find(|l| l.split_whitespace().next() == Some(row)).unwrap_or_else(|| panic!("no {row} row in:\n{table}"));
    line.split_whitespace().nth(1).expect("holds column").to_string()
}

/// The checker's verdicts on `images` (each against the caption of the same
/// index in `data`), as the table prints them.
fn share_by_library(images: &Path, data: &Path, n: usize) -> String {
    let holds = (0..n)
        .filter(|&i| {
            let stem = dalle_xla::data::shapes::file_stem(i);
            let caption = std::fs::read_to_string(data.join(format!("{stem}.txt"))).unwrap();
            if images != data {
                assert_eq!(std::fs::read_to_string(images.join(format!("{stem}.txt"))).unwrap(), caption, "captions travel with the reconstructions");
            }
            let image = image::open(images.join(format!("{stem}.png"))).unwrap().to_rgb8();
            dalle_xla::data::shapes::check(&image, caption.trim()).unwrap().holds
        })
        .count();
    format!("{:.1}%", 100.0 * holds as f64 / n as f64)
}

fn judge_reconstructions(dir: &Path, data: &Path, run: &Path) {
    let s = |p: &Path| p.display().to_string();
    let judged = dir.join("judged");
    let out = dalle(&["data", "shapes-judge", "--images", &s(data), "--vqgan", &s(run), "--out", &s(&judged), "--cpu-devices", "1"]);
    let table = check(&out, "shapes-judge");
    assert!(table.contains("12 images of"), "{table}");
    assert_eq!(std::fs::read_dir(&judged).unwrap().count(), 24, "one reconstruction and its caption per image");
    assert_eq!(holds_share(&table, "real"), share_by_library(data, data, 12), "{table}");
    assert_eq!(holds_share(&table, "vqgan"), share_by_library(&judged, data, 12), "{table}");

    let out = dalle(&["data", "shapes-judge", "--images", &s(data), "--n", "5"]);
    assert!(check(&out, "shapes-judge --n 5").contains("5 images of"));
    let refused = |args: &[&str], names: &[&str]| {
        let out = dalle(args);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && !text.contains("panicked"), "{text}");
        for name in names {
            assert!(text.contains(name), "the error names {name}: {text}");
        }
    };
    refused(&["data", "shapes-judge", "--images", &s(data), "--n", "13"], &["--n", "12"]);
    refused(&["data", "shapes-judge", "--images", &s(&dir.join("no-such-folder"))], &["no-such-folder"]);
    refused(&["data", "shapes-judge", "--images", &s(data), "--vqgan", &s(run), "--out", &s(&judged), "--cpu-devices", "1"], &["--out", "not empty"]);
    refused(&["data", "shapes-judge", "--images", &s(data), "--out", &s(&dir.join("x"))], &["--vqgan"]);
    let larger = dir.join("shapes48");
    dalle_xla::data::shapes::generate(2, 48, 9, &larger).unwrap();
    refused(&["data", "shapes-judge", "--images", &s(&larger), "--vqgan", &s(run), "--cpu-devices", "1"], &["48x48", "32x32"]);
}
