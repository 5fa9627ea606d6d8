//! The `data:` section of a training config.

use serde::{Deserialize, Serialize};

/// Where examples come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Captions and image tokens generated from the seed (no files needed).
    #[default]
    Synthetic,
    /// `caption` + `encoding` rows read from parquet or JSONL files.
    Files,
}

/// How dataset files are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// By extension: `.parquet`, or `.jsonl` / `.json` / `.ndjson`.
    #[default]
    Auto,
    Parquet,
    Jsonl,
}

/// The command that makes a tokenizer, named in errors for users without one.
pub const TOKENIZER_HINT: &str =
    "train one from a file with one caption per line: dalle tokenizer --captions captions.txt --vocab-size 16384 --out tokenizer.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default)]
    pub kind: DataKind,
    /// Synthetic: number of distinct training captions.
    #[serde(default = "default_captions")]
    pub num_captions: u64,
    /// Files: training shards, each a local path, directory, `gs://` / `s3://` / `memory://`
    /// URL, or a pattern with `*` / `?` in its last component.
    #[serde(default)]
    pub train_files: Vec<String>,
    /// Files: the validation split as its own file set.
    #[serde(default)]
    pub eval_files: Vec<String>,
    /// Files: without `eval_files`, hold out this fraction of the training rows for
    /// validation, chosen by a hash of the normalised caption (stable across runs and hosts).
    #[serde(default)]
    pub eval_fraction: f64,
    #[serde(default)]
    pub format: DataFormat,
    /// Files: `tokenizer.json` (a path or storage URL).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Files: dalle-mini's word-frequency table (`enwiki-words-frequency.txt`, a local path)
    /// for splitting hashtags into words as the released models saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_frequency: Option<String>,
    /// Examples held in the shuffle buffer; 1 keeps file order.
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// Bad rows and unreadable files stop the run instead of being skipped.
    #[serde(default)]
    pub strict: bool,
    /// Batches prepared ahead by the background thread.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// This host's index among `host_count` hosts; each reads a disjoint share.
    #[serde(default)]
    pub host_index: usize,
    #[serde(default = "default_host_count")]
    pub host_count: usize,
}

fn default_captions() -> u64 {
    64
}
fn default_shuffle_buffer() -> usize {
    5000
}
fn default_prefetch() -> usize {
    2
}
fn default_host_count() -> usize {
    1
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::Synthetic,
            num_captions: default_captions(),
            train_files: Vec::new(),
            eval_files: Vec::new(),
            eval_fraction: 0.0,
            format: DataFormat::Auto,
            tokenizer: None,
            word_frequency: None,
            shuffle_buffer: default_shuffle_buffer(),
            strict: false,
            prefetch: default_prefetch(),
            host_index: 0,
            host_count: default_host_count(),
        }
    }
}

impl DataConfig {
    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.shuffle_buffer == 0 {
            return Err("data.shuffle_buffer must be at least 1 (1 disables shuffling)".into());
        }
        if self.prefetch == 0 {
            return Err("data.prefetch must be at least 1".into());
        }
        if self.host_count == 0 {
            return Err("data.host_count must be at least 1".into());
        }
        if self.host_index >= self.host_count {
            return Err(format!("data.host_index ({}) must be below data.host_count ({})", self.host_index, self.host_count));
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(format!("data.eval_fraction must be in [0, 1), got {}", self.eval_fraction));
        }
        match self.kind {
            DataKind::Synthetic => {
                if self.num_captions == 0 {
                    return Err("data.num_captions must be at least 1".into());
                }
                let file_keys = [
                    ("data.train_files", !self.train_files.is_empty()),
                    ("data.eval_files", !self.eval_files.is_empty()),
                    ("data.tokenizer", self.tokenizer.is_some()),
                    ("data.word_frequency", self.word_frequency.is_some()),
                    ("data.eval_fraction", self.eval_fraction != 0.0),
                ];
                if let Some((key, _)) = file_keys.iter().find(|(_, set)| *set) {
                    return Err(format!("{key} is set but data.kind is synthetic; set data.kind: files to read files"));
                }
            }
            DataKind::Files => {
                if self.train_files.is_empty() {
                    return Err("data.train_files must list at least one file, directory or pattern when data.kind is files".into());
                }
                if let Some(i) = self.train_files.iter().position(|f| f.trim().is_empty()) {
                    return Err(format!("data.train_files[{i}] is empty"));
                }
                if let Some(i) = self.eval_files.iter().position(|f| f.trim().is_empty()) {
                    return Err(format!("data.eval_files[{i}] is empty"));
                }
                if self.eval_fraction > 0.0 && !self.eval_files.is_empty() {
                    return Err("data.eval_fraction and data.eval_files both choose the validation split; set only one".into());
                }
                match &self.tokenizer {
                    None => return Err(format!("data.tokenizer is required when data.kind is files ({TOKENIZER_HINT})")),
                    Some(t) if t.trim().is_empty() => return Err(format!("data.tokenizer is empty ({TOKENIZER_HINT})")),
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}
