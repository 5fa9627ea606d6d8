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
    /// Reads a YAML config, applies `--set` overrides and validates (see
    /// [`crate::config::load_validated`]). With `model.init_from`, the model
    /// keys left out and `data.tokenizer` come from the imported weights
    /// ([`super::init_from::resolve`]).
    pub fn load(path: &std::path::Path, overrides: &[String]) -> crate::error::Result<(TrainConfig, serde_yaml::Value)> {
        use crate::error::Error;
        let (init, rest): (Vec<&String>, Vec<&String>) = overrides.iter().partition(|o| o.trim_start().starts_with("model.init_from="));
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut tree: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        if let Some(o) = init.last() {
            let value = o.trim_start().trim_start_matches("model.init_from=").to_string();
            let model = tree.get_mut("model").and_then(|m| m.as_mapping_mut());
            match model {
                Some(m) => {
                    m.insert("init_from".into(), value.into());
                }
                None => {
                    let root = tree.as_mapping_mut().ok_or_else(|| Error::Invalid(format!("{} is not a YAML mapping", path.display())))?;
                    root.insert("model".into(), serde_yaml::Value::Mapping([("init_from".into(), value.into())].into_iter().collect()));
                }
            }
        }
        super::init_from::resolve(&mut tree).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let text = serde_yaml::to_string(&tree).map_err(|e| Error::Invalid(e.to_string()))?;
        let rest: Vec<String> = rest.into_iter().cloned().collect();
        let (config, tree): (TrainConfig, _) =
            crate::config::load_str(&text, &path.display().to_string(), &rest).map_err(|e| Error::Invalid(e.to_string()))?;
        config.validate().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok((config, tree))
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

impl crate::train::TrainSections for TrainConfig {
    fn sections(&self) -> (&LoopConfig, &CheckpointConfig, &crate::storage::StorageOptions) {
        (&self.train, &self.checkpoint, &self.storage)
    }
}
