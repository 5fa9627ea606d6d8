//! The data commands of the `dalle` binary (`data shapes`, `data shapes-check`,
//! `data inspect`, `tokenizer`) and `scripts/install-plugin`, run as a user
//! would run them, checked against the library's own answers.

use dalle_xla::data::shapes::scene_at;
use dalle_xla::data::{write_dataset, DataFormat, Record, TextEncoder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dalle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle")).args(args).env("DALLE_LOG", "warn").env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache")).output().expect("run dalle")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a successful run and returns its stdout.
fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), stdout(&out), stderr(&out));
    stdout(&out)
}

/// Asserts a failed run whose `error:` line mentions every one of `names`; returns the exit code.
fn fails_naming(out: Output, names: &[&str]) -> i32 {
    let err = stderr(&out);
    assert!(!out.status.success(), "expected a failure, got success; stdout: {}", stdout(&out));
    assert!(err.contains("error:"), "no error line in: {err}");
    for name in names {
        assert!(err.contains(name), "error does not name {name:?}: {err}");
    }
    assert!(!err.contains("panicked"), "panicked: {err}");
    out.status.code().expect("exit code")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn generate_shapes(dir: &Path, n: usize, seed: u64) -> String {
    ok(dalle(&["data", "shapes", "--n", &n.to_string(), "--size", "48", "--seed", &seed.to_string(), "--out", path_str(dir)]))
}

#[test]
fn shapes_writes_images_captions_and_index_and_resumes() {
    let dir = scratch("shapes");
    let seed = 7;
    let first = generate_shapes(&dir, 4, seed);
    assert!(first.contains("4 written, 0 already present"), "{first}");
    let csv_path = dir.join("captions.csv");
    assert!(first.contains(path_str(&csv_path)), "does not say where captions.csv is: {first}");

    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,caption"));
    for i in 0..4 {
        let expected = scene_at(seed, i as u64).caption();
        assert_eq!(lines.next(), Some(format!("{i:06}.png,{expected}").as_str()));
        assert_eq!(std::fs::read_to_string(dir.join(format!("{i:06}.txt"))).unwrap(), expected);
        let (w, h) = image::image_dimensions(dir.join(format!("{i:06}.png"))).unwrap();
        assert_eq!((w, h), (48, 48));
    }
    assert_eq!(lines.next(), None);

    let again = generate_shapes(&dir, 4, seed);
    assert!(again.contains("0 written, 4 already present"), "{again}");
}

#[test]
fn shapes_rejects_bad_arguments_by_name() {
    let dir = scratch("shapes-bad");
    let out = path_str(&dir);
    fails_naming(dalle(&["data", "shapes", "--n", "2", "--size", "8", "--out", out]), &["size", "16"]);
    fails_naming(dalle(&["data", "shapes", "--n", "2", "--size", "100000", "--out", out]), &["--size", "4096"]);
    fails_naming(dalle(&["data", "shapes", "--n", "0", "--out", out]), &["--n"]);
    // A folder made with another seed is refused rather than mixed.
    generate_shapes(&dir, 2, 1);
    let other = (2..100).find(|&s| scene_at(s, 0).caption() != scene_at(1, 0).caption()).unwrap();
    fails_naming(dalle(&["data", "shapes", "--n", "2", "--size", "48", "--seed", &other.to_string(), "--out", out]), &["000000.txt", "seed"]);
    // Clap rejects what is not a number, naming the flag.
    let bad = dalle(&["data", "shapes", "--n", "many", "--out", out]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--n"), "{}", stderr(&bad));
}

#[test]
fn shapes_check_exit_status_tells_holds_from_fails_from_errors() {
    let dir = scratch("check");
    let seed = 3;
    generate_shapes(&dir, 6, seed);
    let image = dir.join("000000.png");
    let own = scene_at(seed, 0).caption();
    let other = (1..6).map(|i| scene_at(seed, i).caption()).find(|c| *c != own).expect("two distinct captions");

    let holds = dalle(&["data", "shapes-check", path_str(&image), &own]);
    assert_eq!(holds.status.code(), Some(0), "{}{}", stdout(&holds), stderr(&holds));
    assert!(stdout(&holds).starts_with("caption holds"), "{}", stdout(&holds));

    let fails = dalle(&["data", "shapes-check", path_str(&image), &other]);
    assert_eq!(fails.status.code(), Some(1), "{}{}", stdout(&fails), stderr(&fails));
    assert!(stdout(&fails).starts_with("caption does not hold"), "{}", stdout(&fails));
    assert!(stdout(&fails).contains("missing"), "the report says what is missing: {}", stdout(&fails));
    assert!(!stderr(&fails).contains("error:"), "a failed check is an answer, not an error: {}", stderr(&fails));

    let code = fails_naming(dalle(&["data", "shapes-check", path_str(&image), "a purple banana"]), &["banana"]);
    assert_eq!(code, 2);
    let missing = dir.join("no-such.png");
    let code = fails_naming(dalle(&["data", "shapes-check", path_str(&missing), &own]), &["no-such.png"]);
    assert_eq!(code, 2);
    let not_image = dir.join("captions.csv");
    let code = fails_naming(dalle(&["data", "shapes-check", path_str(&not_image), &own]), &["captions.csv"]);
    assert_eq!(code, 2);
}

/// Ids of `text` without `<s>`, `</s>` and padding.
fn body_ids(encoder: &TextEncoder, text: &str) -> Vec<i32> {
    let encoded = encoder.encode(text).unwrap();
    let used = encoded.attention_mask.iter().filter(|&&m| m == 1).count();
    encoded.input_ids[1..used - 1].to_vec()
}

#[test]
fn tokenizer_trains_on_a_text_file() {
    let dir = scratch("tok-text");
    let captions = dir.join("captions.txt");
    let text: String = (0..200).map(|i| format!("a zebra crossing number {}\n\n", i % 7)).collect();
    std::fs::write(&captions, text).unwrap();
    let out = dir.join("nested/tokenizer.json");
    let report = ok(dalle(&["tokenizer", "--captions", path_str(&captions), "--vocab-size", "400", "--out", path_str(&out)]));
    assert!(report.contains("200 captions"), "{report}");
    assert!(report.contains("skipped 200 blank line(s)"), "{report}");

    let encoder = TextEncoder::load(path_str(&out), 16).unwrap();
    assert!(encoder.vocab_size() <= 400 && encoder.vocab_size() > 261, "vocab {}", encoder.vocab_size());
    assert!(report.contains(&format!("{} tokens", encoder.vocab_size())), "{report}");
    // A word seen 200 times is merged into one token; an unseen one is spelt out.
    assert_eq!(body_ids(&encoder, "zebra").len(), 1);
    assert!(body_ids(&encoder, "quokka").len() > 1);
}

#[test]
fn tokenizer_reads_the_caption_column_of_a_csv() {
    let dir = scratch("tok-csv");
    let captions = dir.join("captions.csv");
    // The path column repeats a word the tokenizer must not learn; a quoted caption holds a comma and a quote.
    let mut csv = String::from("path,caption\n");
    for i in 0..100 {
        csv.push_str(&format!("qqqqqqqq{i}.png,a giraffe on stilts\n"));
    }
    csv.push_str("qqqqqqqq.png,\"a giraffe, \"\"tall\"\" and proud\"\n");
    std::fs::write(&captions, csv).unwrap();
    let out = dir.join("tokenizer.json");
    let report = ok(dalle(&["tokenizer", "--captions", path_str(&captions), "--vocab-size", "400", "--out", path_str(&out)]));
    assert!(report.contains("101 captions"), "{report}");
    let encoder = TextEncoder::load(path_str(&out), 16).unwrap();
    assert_eq!(body_ids(&encoder, "giraffe").len(), 1);
    assert!(body_ids(&encoder, "qqqqqqqq").len() > 1, "learnt the path column");
    // Nothing is left beside the output but the tokenizer.
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // The shapes dataset's own index works as is, and so does its folder, where an image without a caption is skipped and counted.
    let shapes = dir.join("shapes");
    generate_shapes(&shapes, 3, 0);
    let report = ok(dalle(&["tokenizer", "--captions", path_str(&shapes.join("captions.csv")), "--vocab-size", "300", "--out", path_str(&out)]));
    assert!(report.contains("trained on 3 captions"), "{report}");
    std::fs::copy(shapes.join("000000.png"), shapes.join("uncaptioned.png")).unwrap();
    let report = ok(dalle(&["tokenizer", "--captions", path_str(&shapes), "--vocab-size", "300", "--out", path_str(&out)]));
    assert!(report.contains("trained on 3 captions") && report.contains("skipped 1 image(s) without a caption"), "{report}");
}

#[test]
fn tokenizer_errors_name_the_bad_input() {
    let dir = scratch("tok-bad");
    let out = dir.join("tokenizer.json");
    let out = path_str(&out);
    fails_naming(dalle(&["tokenizer", "--captions", "no-such-captions.txt", "--out", out]), &["no-such-captions.txt"]);
    let text = dir.join("captions.txt");
    std::fs::write(&text, "a cat\n").unwrap();
    fails_naming(dalle(&["tokenizer", "--captions", path_str(&text), "--vocab-size", "10", "--out", out]), &["vocab size", "261"]);
    let no_column = dir.join("no-column.csv");
    std::fs::write(&no_column, "path,text\na.png,a cat\n").unwrap();
    fails_naming(dalle(&["tokenizer", "--captions", path_str(&no_column), "--out", out]), &["no-column.csv", "caption"]);
    let unclosed = dir.join("unclosed.csv");
    std::fs::write(&unclosed, "path,caption\na.png,\"a cat\n").unwrap();
    fails_naming(dalle(&["tokenizer", "--captions", path_str(&unclosed), "--out", out]), &["unclosed.csv", "line 2"]);
    let empty_dir = dir.join("no-images");
    std::fs::create_dir_all(&empty_dir).unwrap();
    fails_naming(dalle(&["tokenizer", "--captions", path_str(&empty_dir), "--out", out]), &["no-images", "has no captions"]);
    let header_only = dir.join("header-only.csv");
    std::fs::write(&header_only, "path,caption\n").unwrap();
    fails_naming(dalle(&["tokenizer", "--captions", path_str(&header_only), "--out", out]), &["header-only.csv", "has no captions"]);
    assert!(!Path::new(out).exists(), "a failed run wrote a tokenizer");
}

fn record(caption: &str, encoding: &[i64]) -> Record {
    Record { caption: caption.to_string(), encoding: encoding.to_vec() }
}

#[test]
fn inspect_counts_rows_and_bad_rows_per_file() {
    let dir = scratch("inspect");
    let parquet = dir.join("good.parquet");
    let good = [record("a red circle", &[1, 2, 3, 4]), record("a blue square", &[5, 6, 7, 8]), record("a star", &[9, 9, 9, 9])];
    write_dataset(path_str(&parquet), DataFormat::Auto, &good).unwrap();
    let jsonl = dir.join("mixed.jsonl");
    let lines = [
        r#"{"caption": "first", "encoding": [0, 1, 2, 3]}"#,
        "{not json",
        r#"{"caption": "short", "encoding": [0, 1]}"#,
        r#"{"caption": "big token", "encoding": [0, 1, 2, 10]}"#,
        r#"{"encoding": [0, 1, 2, 3]}"#,
        r#"{"caption": "last", "encoding": [3, 2, 1, 0]}"#,
    ];
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();

    let report = ok(dalle(&[
        "data",
        "inspect",
        path_str(&parquet),
        path_str(&jsonl),
        "--image-length",
        "4",
        "--image-vocab",
        "10",
        "--rows",
        "2",
    ]));
    assert!(report.contains("good.parquet (parquet): 3 rows, 3 valid, 0 bad\n"), "{report}");
    assert!(
        report.contains("mixed.jsonl (jsonl): 6 rows, 2 valid, 4 bad (1 missing caption, 1 wrong encoding length, 1 token out of range, 1 unparsable)"),
        "{report}"
    );
    assert!(report.contains(r#"row 0: "a red circle" [4 tokens: 1 2 3 4]"#), "{report}");
    assert!(report.contains("row 1: bad: unparsable row"), "{report}");
    // Later bad rows are shown too, up to --rows of them.
    assert!(report.contains("row 2: wrong encoding length: encoding has 2 tokens, expected 4"), "{report}");
    assert!(report.contains("row 3: token out of range: encoding[3] = 10"), "{report}");
    assert!(!report.contains("row 4:"), "{report}");
    assert!(report.contains("total: 2 file(s), 9 rows, 5 valid, 4 bad"), "{report}");

    // Without files, a training config's data files are inspected against its model (tiny: 16 tokens, so all rows are short).
    let tiny = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml")).unwrap();
    let data_section = format!(
        "data:\n  kind: files\n  train_files: [{}]\n  eval_files: [{}]\n  tokenizer: tokenizer.json\n",
        path_str(&parquet),
        path_str(&jsonl)
    );
    let config = dir.join("files.yaml");
    std::fs::write(&config, tiny.replace("data:\n  kind: synthetic\n  num_captions: 16\n", &data_section)).unwrap();
    let report = ok(dalle(&["data", "inspect", "--config", path_str(&config), "--rows", "0"]));
    assert!(report.contains("image_length 16 and image_vocab 64"), "{report}");
    assert!(report.contains("total: 2 file(s), 9 rows, 0 valid, 9 bad"), "{report}");
    // With 4 tokens per row and the tiny model's 64 image codes, token 10 is in range.
    let report = ok(dalle(&["data", "inspect", "--config", path_str(&config), "--set", "model.image_length=4", "--rows", "0"]));
    assert!(report.contains("total: 2 file(s), 9 rows, 6 valid, 3 bad"), "{report}");

    // A directory is every data file below it; the defaults are dalle-mini's 256 tokens, so every row is short.
    let report = ok(dalle(&["data", "inspect", path_str(&dir), "--rows", "0"]));
    assert!(report.contains("image_length 256 and image_vocab 16384"), "{report}");
    assert!(report.contains("total: 2 file(s), 9 rows, 0 valid, 9 bad"), "{report}");
}

#[test]
fn inspect_errors_name_the_bad_input() {
    let dir = scratch("inspect-bad");
    let missing = dir.join("no-such.parquet");
    // Errors of other commands keep the usual status 1.
    assert_eq!(fails_naming(dalle(&["data", "inspect", path_str(&missing)]), &["no-such.parquet"]), 1);
    let corrupt = dir.join("corrupt.parquet");
    std::fs::write(&corrupt, "not parquet at all").unwrap();
    let out = dalle(&["data", "inspect", path_str(&corrupt)]);
    assert!(stdout(&out).contains("corrupt.parquet: unreadable"), "{}", stdout(&out));
    fails_naming(out, &["corrupt.parquet", "could not be read"]);
    fails_naming(dalle(&["data", "inspect", path_str(&dir), "--image-length", "0"]), &["--image-length"]);
    fails_naming(dalle(&["data", "inspect", path_str(&corrupt), "--set", "model.image_length=4"]), &["--config"]);
    let config = dir.join("no-such.yaml");
    fails_naming(dalle(&["data", "inspect", path_str(&corrupt), "--config", path_str(&config)]), &["no-such.yaml"]);
}

// scripts/install-plugin

fn install_plugin_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-plugin")
}

/// Runs a copy of the script under `root/scripts/` (so it installs into
/// `root/xla_ext/`) with `bin` first on PATH and the wheel cache in `root/cache`.
fn install_plugin(root: &Path, bin: &Path, args: &[&str]) -> Output {
    let scripts = root.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(install_plugin_script(), scripts.join("install-plugin")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("bash")
        .arg(scripts.join("install-plugin"))
        .args(args)
        .env("PATH", path)
        .env("DALLE_CACHE", root.join("cache"))
        .output()
        .expect("run bash")
}

/// A `python3` that answers `pip download` by writing `wheel_name` holding
/// `content` into `--dest`, or fails when `content` is None.
fn fake_python(bin: &Path, wheel_name: &str, content: Option<&str>) {
    std::fs::create_dir_all(bin).unwrap();
    let body = match content {
        Some(c) => format!(
            "while [[ $# -gt 0 ]]; do if [[ $1 == --dest ]]; then dest=$2; fi; shift; done\nprintf '%s' '{c}' > \"$dest/{wheel_name}\"\n"
        ),
        None => "echo 'ERROR: No matching distribution found' >&2\nexit 1\n".to_string(),
    };
    let script = bin.join("python3");
    std::fs::write(&script, format!("#!/usr/bin/env bash\n{body}")).unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
}

#[test]
fn install_plugin_pins_every_platform() {
    let script = std::fs::read_to_string(install_plugin_script()).unwrap();
    let shas: Vec<&str> = script.lines().filter_map(|l| l.trim().strip_prefix("sha=")).collect();
    assert_eq!(shas.len(), 4, "one pinned SHA-256 per platform");
    for sha in shas {
        assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()), "not a SHA-256: {sha}");
    }
    assert!(!script.contains("@CUDA_SHA@") && !script.contains("@TPU_SHA@"));

    let root = scratch("plugin-help");
    let out = install_plugin(&root, &root.join("bin"), &["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    for line in ["cpu      lammps-jax-pjrt-cpu 0.11.2", "xla-cpu  xla-cpu-pjrt 0.0.1", "cuda     jax-cuda12-pjrt 0.12.0.1", "tpu      libtpu 0.0.52"] {
        assert!(help.contains(line), "--help lacks {line:?}:\n{help}");
    }
}

#[test]
fn install_plugin_refuses_unknown_platforms_and_wrong_wheels() {
    let root = scratch("plugin-refuse");
    let bin = root.join("bin");
    let out = install_plugin(&root, &bin, &["rocm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown platform 'rocm'") && stderr(&out).contains("cpu xla-cpu cuda tpu"), "{}", stderr(&out));

    fake_python(&bin, "jax_cuda12_pjrt-0.12.0.1-py3-none-manylinux_2_27_x86_64.whl", Some("not the pinned wheel"));
    let out = install_plugin(&root, &bin, &["cuda"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("expected 5ec28e06") && stderr(&out).contains("refusing to install"), "{}", stderr(&out));
    assert!(!root.join("xla_ext/cuda/pjrt_plugin.so").exists());

    fake_python(&bin, "unused.whl", None);
    let out = install_plugin(&root, &bin, &["tpu"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not download libtpu==0.0.52"), "{}", stderr(&out));
}
