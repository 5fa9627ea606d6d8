//! Fixtures shared by the data tests: generated captions and records, a tiny
//! trained tokenizer, scratch directories.
#![allow(dead_code)]

use dalle_xla::data::{train_tokenizer, Batch, DataConfig, DataKind, LoaderSpec, Record};
use std::path::{Path, PathBuf};

pub const IMAGE_LENGTH: usize = 8;
pub const IMAGE_VOCAB: i64 = 1000;
pub const TEXT_LENGTH: usize = 16;

/// An empty scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-data-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Caption `i`: distinct for every `i` below 8 * 8 * 8 * 10.
pub fn caption(i: usize) -> String {
    const ADJ: [&str; 8] = ["red", "blue", "green", "tiny", "huge", "old", "shiny", "wooden"];
    const NOUN: [&str; 8] = ["cat", "dog", "house", "boat", "tree", "car", "lamp", "chair"];
    const PLACE: [&str; 8] = ["beach", "forest", "city", "desert", "garden", "lake", "road", "kitchen"];
    format!("A {} {} in the {} number {}", ADJ[i % 8], NOUN[(i / 8) % 8], PLACE[(i / 64) % 8], i / 512)
}

/// Record `i`: its image tokens spell `i` in their first two positions.
pub fn record(i: usize) -> Record {
    let v = IMAGE_VOCAB as usize;
    let mut encoding = vec![(i % v) as i64, (i / v) as i64];
    encoding.extend((2..IMAGE_LENGTH).map(|j| ((i * 7 + j * 13) % v) as i64));
    Record { caption: caption(i), encoding }
}

pub fn records(range: std::ops::Range<usize>) -> Vec<Record> {
    range.map(record).collect()
}

/// The record index each row of a batch came from.
pub fn ids(batch: &Batch) -> Vec<usize> {
    let labels: Vec<i32> = batch.labels.to_vec().expect("i32 labels");
    labels.chunks(IMAGE_LENGTH).map(|row| row[0] as usize + row[1] as usize * IMAGE_VOCAB as usize).collect()
}

/// A small tokenizer trained on the generated captions, once per test binary.
pub fn tokenizer() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = scratch("tokenizer");
        let captions = dir.join("captions.txt");
        let text: Vec<String> = (0..600).map(caption).collect();
        std::fs::write(&captions, text.join("\n")).expect("write captions");
        let out = dir.join("tokenizer.json");
        train_tokenizer(&captions, 500, &out).expect("train tokenizer");
        out
    })
    .clone()
}

pub fn spec(batch_size: usize, seed: u64) -> LoaderSpec {
    LoaderSpec { batch_size, seed, text_length: TEXT_LENGTH, image_length: IMAGE_LENGTH, image_vocab: IMAGE_VOCAB, text_vocab: 1000 }
}

/// A `files` config reading `train` with the fixture tokenizer.
pub fn files_config(train: &[&str], shuffle_buffer: usize) -> DataConfig {
    DataConfig {
        kind: DataKind::Files,
        train_files: train.iter().map(|s| s.to_string()).collect(),
        tokenizer: Some(tokenizer().display().to_string()),
        shuffle_buffer,
        ..DataConfig::default()
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
