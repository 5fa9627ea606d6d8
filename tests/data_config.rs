//! The `data:` config section: defaults, unknown keys, and checks that name the key.

use dalle_xla::data::{DataConfig, DataFormat, DataKind};

fn parse(yaml: &str) -> Result<DataConfig, String> {
    serde_yaml::from_str::<DataConfig>(yaml).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_synthetic_with_dalle_mini_buffer() {
    let c = parse("{}").expect("empty section");
    assert_eq!(c, DataConfig::default());
    assert_eq!((c.kind, c.shuffle_buffer, c.prefetch, c.host_index, c.host_count), (DataKind::Synthetic, 5000, 2, 0, 1));
    assert!(c.validate().is_ok());
}

#[test]
fn files_section_parses() {
    let c = parse(
        "kind: files\ntrain_files: [gs://bucket/train/*.parquet, data/extra.jsonl]\neval_files: [data/valid]\n\
         format: parquet\ntokenizer: tokenizer.json\nshuffle_buffer: 100\nstrict: true\nprefetch: 4\nhost_index: 1\nhost_count: 2\n",
    )
    .expect("parse");
    assert_eq!(c.kind, DataKind::Files);
    assert_eq!(c.train_files, ["gs://bucket/train/*.parquet", "data/extra.jsonl"]);
    assert_eq!(c.format, DataFormat::Parquet);
    assert!(c.strict && c.validate().is_ok());
}

#[test]
fn unknown_keys_and_values_are_errors() {
    let e = parse("shuffle_bufer: 10").expect_err("typo");
    assert!(e.contains("shuffle_bufer"), "{e}");
    let e = parse("kind: webdataset").expect_err("kind");
    assert!(e.contains("webdataset") && e.contains("synthetic") && e.contains("files"), "{e}");
    let e = parse("format: csv").expect_err("format");
    assert!(e.contains("csv"), "{e}");
}

#[test]
fn validate_names_the_key() {
    let files = || DataConfig {
        kind: DataKind::Files,
        train_files: vec!["data/train.parquet".into()],
        tokenizer: Some("tokenizer.json".into()),
        ..DataConfig::default()
    };
    let check = |c: DataConfig, key: &str| {
        let e = c.validate().expect_err("invalid");
        assert!(e.contains(key), "expected '{key}' in: {e}");
    };
    check(DataConfig { shuffle_buffer: 0, ..files() }, "data.shuffle_buffer");
    check(DataConfig { prefetch: 0, ..files() }, "data.prefetch");
    check(DataConfig { host_count: 0, ..files() }, "data.host_count");
    check(DataConfig { host_index: 2, host_count: 2, ..files() }, "data.host_index");
    check(DataConfig { eval_fraction: 1.0, ..files() }, "data.eval_fraction");
    check(DataConfig { train_files: vec![], ..files() }, "data.train_files");
    check(DataConfig { train_files: vec![" ".into()], ..files() }, "data.train_files[0]");
    check(DataConfig { eval_files: vec!["v".into()], eval_fraction: 0.1, ..files() }, "data.eval_fraction");
    check(DataConfig { tokenizer: None, ..files() }, "dalle tokenizer");
    check(DataConfig { num_captions: 0, ..DataConfig::default() }, "data.num_captions");
    check(DataConfig { train_files: vec!["x".into()], ..DataConfig::default() }, "data.train_files");
    assert!(files().validate().is_ok());
}
