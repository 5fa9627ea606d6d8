//! The `dalle train-clip` config: the CLIP sizes (`model`, as in a Hugging
//! Face `config.json`), optimizer, the shared loop section, captioned image
//! data (the VQGAN's image loaders) and checkpoints.

use super::ClipConfig;
use crate::checkpoint::CheckpointConfig;
use crate::optim::OptimizerConfig;
use crate::train::LoopConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTrainConfig {
    pub model: ClipConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    pub train: LoopConfig,
    pub data: ClipDataConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Retries and endpoints of the run directory's store.
    #[serde(default)]
    pub storage: crate::storage::StorageOptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipDataConfig {
    /// Training images: a folder (caption `.txt` beside each image) or a CSV of `path,caption`.
    pub images: String,
    /// Held-out images for the evaluation loss; the first `train.eval_batches` batches are used.
    #[serde(default)]
    pub eval_images: Option<String>,
    /// A CLIP tokenizer (`tokenizer.json`, or a directory with it or `vocab.json` + `merges.txt`);
    /// without one, a byte-level BPE of `model.text.vocab_size` tokens is trained on the training captions.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Per-channel normalisation of the [0, 1] pixels (OpenAI CLIP's by default).
    #[serde(default = "default_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "default_std")]
    pub image_std: [f32; 3],
    /// Threads decoding images.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

fn default_mean() -> [f32; 3] {
    super::Preprocessor::clip_default(224).mean
}
fn default_std() -> [f32; 3] {
    super::Preprocessor::clip_default(224).std
}
fn default_workers() -> usize {
    2
}

impl ClipTrainConfig {
    /// Reads a YAML config, applies `--set` overrides and validates (see [`crate::config::load_validated`]).
    pub fn load(path: &std::path::Path, overrides: &[String]) -> crate::error::Result<(ClipTrainConfig, serde_yaml::Value)> {
        crate::config::load_validated(path, overrides)
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate().map_err(|e| format!("model.{}", e.replacen("text_config.", "text.", 1).replacen("vision_config.", "vision.", 1)))?;
        self.optimizer.validate()?;
        let t = &self.train;
        if t.batch_size < 2 {
            return Err(format!("train.batch_size must be at least 2 for a contrastive loss, got {}", t.batch_size));
        }
        if t.gradient_accumulation != 1 {
            return Err(format!(
                "train.gradient_accumulation must be 1 for CLIP (got {}): the contrastive loss needs the whole batch at once",
                t.gradient_accumulation
            ));
        }
        if t.dtype != "f32" {
            return Err(format!("train.dtype must be f32 for CLIP (got '{}')", t.dtype));
        }
        if t.log_every == 0 {
            return Err("train.log_every must be at least 1".into());
        }
        if self.data.images.is_empty() {
            return Err("data.images must name a folder or a CSV of path,caption".into());
        }
        if let Some(s) = self.data.image_std.iter().find(|s| **s <= 0.0) {
            return Err(format!("data.image_std must be positive, got {s}"));
        }
        if self.data.workers == 0 {
            return Err("data.workers must be at least 1".into());
        }
        self.checkpoint.validate()?;
        self.storage.validate()?;
        Ok(())
    }
}

impl crate::config::Validate for ClipTrainConfig {
    fn validate(&self) -> Result<(), String> {
        ClipTrainConfig::validate(self)
    }
}

impl crate::train::TrainSections for ClipTrainConfig {
    fn sections(&self) -> (&LoopConfig, &CheckpointConfig, &crate::storage::StorageOptions) {
        (&self.train, &self.checkpoint, &self.storage)
    }
}
