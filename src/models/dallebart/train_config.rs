//! The `dalle train` config: DalleBart sizes, optimizer, the shared loop
//! section, caption data and checkpoints; one YAML file per model size in `configs/`.

use super::DalleBartConfig;
use crate::checkpoint::CheckpointConfig;
use crate::data::DataConfig;
use crate::optim::OptimizerConfig;
use crate::train::LoopConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: DalleBartConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    pub train: LoopConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Retries and endpoint overrides for the run directory's store.
    #[serde(default)]
    pub storage: crate::storage::StorageOptions,
}

impl TrainConfig {
    /// Reads a YAML config, applies `--set` overrides and validates (see [`crate::config::load_validated`]).
    pub fn load(path: &std::path::Path, overrides: &[String]) -> crate::error::Result<(TrainConfig, serde_yaml::Value)> {
        crate::config::load_validated(path, overrides)
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.optimizer.validate()?;
        let t = &self.train;
        if t.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if t.gradient_accumulation == 0 {
            return Err("train.gradient_accumulation must be at least 1".into());
        }
        if !matches!(t.dtype.as_str(), "f32" | "bf16") {
            return Err(format!("train.dtype must be f32 or bf16, got '{}'", t.dtype));
        }
        if !t.device_ids.is_empty() {
            if t.devices != 0 && t.devices != t.device_ids.len() {
                return Err(format!(
                    "train.devices ({}) disagrees with train.device_ids ({} devices); set only one of them",
                    t.devices,
                    t.device_ids.len()
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(d) = t.device_ids.iter().find(|d| !seen.insert(**d)) {
                return Err(format!("train.device_ids lists device {d} twice"));
            }
        }
        if t.log_every == 0 {
            return Err("train.log_every must be at least 1".into());
        }
        self.data.validate()?;
        self.checkpoint.validate()?;
        self.storage.validate()?;
        Ok(())
    }
}

impl crate::config::Validate for TrainConfig {
    fn validate(&self) -> Result<(), String> {
        TrainConfig::validate(self)
    }
}
