//! Where the DalleBart to generate with comes from: a training run (its
//! newest committed checkpoint, or a chosen step), with the tokenizer the
//! run was trained with.

use crate::checkpoint::{CheckpointConfig, CheckpointManager};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::dallebart::DalleBartConfig;
use crate::train::TrainConfig;
use std::collections::BTreeMap;

/// A DalleBart ready for the sampler.
pub struct LoadedDalleBart {
    pub config: DalleBartConfig,
    /// Parameters by flax name.
    pub weights: BTreeMap<String, HostTensor>,
    /// The `tokenizer.json` the model was trained with, when known.
    pub tokenizer: Option<String>,
    /// Names the source in messages: the run and step.
    pub origin: String,
}

/// Loads the model of a training run (local path or storage URL): the
/// checkpoint of `step`, or the newest committed one that verifies.
pub fn load_dallebart(run: &str, step: Option<u64>) -> Result<LoadedDalleBart> {
    let location = crate::storage::open(run).map_err(|e| Error::Invalid(format!("--model {run}: {e}")))?;
    let manager = CheckpointManager::open(&location, CheckpointConfig::default().retention()).map_err(|e| Error::Invalid(format!("--model {run}: {e}")))?;
    let checkpoint = match step {
        Some(s) => {
            let committed = manager.committed_steps().map_err(|e| Error::Invalid(format!("--model {run}: {e}")))?;
            if !committed.contains(&s) {
                return Err(Error::Invalid(format!("--model {run} has no committed checkpoint of step {s}; committed steps: {committed:?}")));
            }
            manager.restore(s).map_err(|e| Error::Invalid(format!("--model {run}: step {s}: {e}")))?
        }
        None => manager
            .restore_latest()
            .map_err(|e| Error::Invalid(format!("--model {run}: {e}")))?
            .ok_or_else(|| Error::Invalid(format!("--model {run} has no committed checkpoint: train it first (dalle train --run {run})")))?,
    };
    let config: TrainConfig = serde_yaml::from_str(&checkpoint.meta.config_yaml)
        .map_err(|e| Error::Invalid(format!("--model {run}: the checkpoint's config is not a DalleBart training config: {e}")))?;
    // Optimizer state is saved as `<param>/<slot>`; parameters have no slash.
    let weights = checkpoint.tensors.into_iter().filter(|(name, _)| !name.contains('/')).collect();
    let tokenizer = match config.data.kind {
        crate::data::DataKind::Files => config.data.tokenizer.clone(),
        crate::data::DataKind::Synthetic => None,
    };
    Ok(LoadedDalleBart { config: config.model, weights, tokenizer, origin: format!("{run} (step {})", checkpoint.step) })
}
