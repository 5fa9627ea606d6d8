//! Where the DalleBart to generate with comes from: a training run (its
//! newest committed checkpoint, or a chosen step), with the tokenizer the
//! run was trained with; or a model directory (converted by `dalle convert`,
//! or a released flax one) with the tokenizer that came with it.

use crate::checkpoint::{CheckpointConfig, CheckpointManager};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::dallebart::DalleBartConfig;
use crate::models::dallebart::TrainConfig;
use std::collections::BTreeMap;

/// A DalleBart ready for the sampler.
pub struct LoadedDalleBart {
    pub config: DalleBartConfig,
    /// Parameters by flax name.
    pub weights: BTreeMap<String, HostTensor>,
    /// The `tokenizer.json` the model was trained with, when known.
    pub tokenizer: Option<String>,
    /// dalle-mini's word-frequency table for splitting hashtags, when the model has one.
    pub word_frequency: Option<String>,
    /// Names the source in messages: the run and step.
    pub origin: String,
}

/// Loads the model of a training run (local path or storage URL): the
/// checkpoint of `step`, or the newest committed one that verifies.
pub fn load_dallebart(run: &str, step: Option<u64>) -> Result<LoadedDalleBart> {
    let local = std::path::Path::new(run);
    if local.is_dir() && crate::models::vqgan::flax::is_model_dir(local) {
        if let Some(s) = step {
            return Err(Error::Invalid(format!("--model {run} is a model directory, not a training run: it has no step {s}")));
        }
        let m = crate::models::dallebart::load_weights_dir(local).map_err(|e| Error::Invalid(format!("--model {run}: {e}")))?;
        return Ok(LoadedDalleBart {
            config: m.config,
            weights: m.weights,
            tokenizer: Some(m.tokenizer.display().to_string()),
            word_frequency: m.word_frequency.map(|p| p.display().to_string()),
            origin: run.to_string(),
        });
    }
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
    let word_frequency = config.data.word_frequency.clone();
    Ok(LoadedDalleBart { config: config.model, weights, tokenizer, word_frequency, origin: format!("{run} (step {})", checkpoint.step) })
}

impl LoadedDalleBart {
    /// The caption encoder the model was trained with (or `tokenizer`, when
    /// given), normalising as training did, hashtags split with the model's
    /// word table when it has one.
    pub fn text_encoder(&self, tokenizer: Option<&str>) -> Result<crate::data::TextEncoder> {
        let path = tokenizer.map(String::from).or(self.tokenizer.clone()).ok_or_else(|| {
            Error::Invalid(format!("{} was trained on synthetic data, which has no caption tokenizer; pass --tokenizer tokenizer.json", self.origin))
        })?;
        let mut text = crate::data::TextEncoder::load(&path, self.config.max_text_length as usize)
            .map_err(|e| Error::Invalid(format!("loading the tokenizer {path}: {e}")))?;
        if let Some(words) = &self.word_frequency {
            let normalizer = crate::data::TextNormalizer::with_word_frequency(std::path::Path::new(words))
                .map_err(|e| Error::Invalid(format!("the word-frequency table {words}: {e}")))?;
            text = text.with_normalizer(std::sync::Arc::new(normalizer));
        }
        Ok(text)
    }
}
