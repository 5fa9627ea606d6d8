//! The loop section every training config shares (`train:` in the YAML),
//! and the sections code that runs any trainer reads of its config.

use crate::checkpoint::CheckpointConfig;
use crate::storage::StorageOptions;
use serde::{Deserialize, Serialize};

/// The sections every training config has (`train:`, `checkpoint:`,
/// `storage:`), for code that launches any of the trainers.
pub trait TrainSections: Serialize {
    fn sections(&self) -> (&LoopConfig, &CheckpointConfig, &StorageOptions);
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Examples per update, over all devices.
    pub batch_size: usize,
    /// Number of updates.
    pub steps: u64,
    /// Micro-batches whose gradients are summed into one update (`batch_size` is split among them).
    #[serde(default = "one")]
    pub gradient_accumulation: usize,
    #[serde(default)]
    pub seed: u64,
    /// Compute dtype: f32 or bf16 (weights are always kept in f32).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Devices to train on; 0 means all of the client's.
    #[serde(default)]
    pub devices: usize,
    /// Train on exactly these client device indices (one replica each) instead of the
    /// first `devices`, so runs can share a host on disjoint devices.
    #[serde(default)]
    pub device_ids: Vec<usize>,
    /// Shard parameters, gradients and optimizer state over a (data, model)
    /// device mesh whose axes multiply to the device count (see `mesh.rs`);
    /// unset: every device holds a full copy (plain data parallelism).
    #[serde(default)]
    pub mesh: Option<super::Mesh>,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Evaluate every this many updates; 0 disables evaluation.
    #[serde(default)]
    pub eval_every: u64,
    #[serde(default = "default_eval_batches")]
    pub eval_batches: u64,
    /// Run directory (config, metrics, checkpoints): a local path, `gs://`, `s3://` or `memory://` URL.
    #[serde(default = "default_run_dir")]
    pub run_dir: String,
}

fn one() -> usize {
    1
}
fn default_dtype() -> String {
    "f32".into()
}
fn default_log_every() -> u64 {
    10
}
fn default_eval_batches() -> u64 {
    2
}
fn default_run_dir() -> String {
    "checkpoints/run".into()
}

impl LoopConfig {
    /// Replicas for a trainer that runs on the client's first devices
    /// (`train.devices`, 0 = all of `available`): checks that `train.device_ids`
    /// is not asked of it (`trainer` names it) and that the batch splits evenly.
    pub fn first_devices(&self, available: usize, trainer: &str) -> Result<usize, String> {
        if !self.device_ids.is_empty() {
            return Err(format!("train.device_ids is not supported by the {trainer} trainer: use train.devices (the first devices)"));
        }
        if self.mesh.is_some() {
            return Err(format!("train.mesh is not supported by the {trainer} trainer (only DalleBart shards over a mesh): remove it"));
        }
        let replicas = if self.devices == 0 { available } else { self.devices };
        if replicas > available {
            return Err(format!("train.devices is {replicas} but the client has {available} devices"));
        }
        if self.batch_size % replicas != 0 {
            return Err(format!("train.batch_size ({}) must be divisible by the {replicas} devices", self.batch_size));
        }
        Ok(replicas)
    }
}
