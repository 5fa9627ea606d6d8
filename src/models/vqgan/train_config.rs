//! The `dalle train-vqgan` config: model, discriminator, loss, two optimizers,
//! the shared loop section and the image data.

use super::{DiscriminatorConfig, LossConfig, VqganConfig};
use crate::checkpoint::CheckpointConfig;
use crate::optim::OptimizerConfig;
use crate::train::LoopConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqganTrainConfig {
    pub model: VqganConfig,
    #[serde(default)]
    pub discriminator: DiscriminatorConfig,
    #[serde(default)]
    pub loss: LossConfig,
    /// The autoencoder's optimizer.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The discriminator's optimizer.
    #[serde(default)]
    pub disc_optimizer: OptimizerConfig,
    pub train: LoopConfig,
    pub data: ImageDataConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Retries and endpoints of the run directory's store.
    #[serde(default)]
    pub storage: crate::storage::StorageOptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataConfig {
    /// Training images: a folder (caption `.txt` beside each image) or a CSV of `path,caption`.
    pub images: String,
    /// Held-out images for the PSNR evaluation; the first `train.eval_batches` batches are used.
    #[serde(default)]
    pub eval_images: Option<String>,
    /// Threads decoding images.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

fn default_workers() -> usize {
    2
}

impl VqganTrainConfig {
    /// Reads a YAML config, applies `--set` overrides and validates (see [`crate::config::load_validated`]).
    pub fn load(path: &std::path::Path, overrides: &[String]) -> crate::error::Result<(VqganTrainConfig, serde_yaml::Value)> {
        crate::config::load_validated(path, overrides)
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.discriminator.validate()?;
        self.loss.validate()?;
        self.optimizer.validate()?;
        self.disc_optimizer.validate().map_err(|e| e.replacen("optimizer.", "disc_optimizer.", 1))?;
        let t = &self.train;
        if t.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if t.gradient_accumulation != 1 {
            return Err(format!("train.gradient_accumulation must be 1 for the VQGAN (got {})", t.gradient_accumulation));
        }
        if t.dtype != "f32" {
            return Err(format!("train.dtype must be f32 for the VQGAN (got '{}')", t.dtype));
        }
        if t.log_every == 0 {
            return Err("train.log_every must be at least 1".into());
        }
        if self.data.images.is_empty() {
            return Err("data.images must name a folder or a CSV of path,caption".into());
        }
        self.checkpoint.validate()?;
        self.storage.validate()?;
        if self.data.workers == 0 {
            return Err("data.workers must be at least 1".into());
        }
        Ok(())
    }
}

impl crate::config::Validate for VqganTrainConfig {
    fn validate(&self) -> Result<(), String> {
        VqganTrainConfig::validate(self)
    }
}

impl crate::train::TrainSections for VqganTrainConfig {
    fn sections(&self) -> (&LoopConfig, &CheckpointConfig, &crate::storage::StorageOptions) {
        (&self.train, &self.checkpoint, &self.storage)
    }
}
