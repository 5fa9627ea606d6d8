//! The CLIP parameter tree of a config (found by building its graph once) and
//! loading a Hugging Face checkpoint directory against it.

use super::{Clip, ClipConfig};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::host::HostTensor;
use crate::models::vqgan::{load_safetensors, select_params};
use crate::nn::{ParamSpec, VarBuilder};
use crate::DType;
use std::collections::BTreeMap;
use std::path::Path;

/// Every parameter, in the order the model asks for them (HF PyTorch names).
pub fn parameter_specs(config: &ClipConfig) -> crate::graph::Result<Vec<ParamSpec>> {
    let g = Graph::new("clip_parameters");
    let s = config.vision.image_size;
    let pixels = g.param("pixels", DType::F32, &[1, s, s, config.vision.num_channels]);
    let ids = g.param("input_ids", DType::I32, &[1, config.text.max_position_embeddings]);
    let vb = VarBuilder::new(&g, DType::F32);
    Clip::new(config.clone()).forward(&vb, &pixels, &ids)?;
    Ok(vb.specs())
}

/// The weights file of a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// `config.json` and `model.safetensors` of a Hugging Face CLIP directory; every
/// parameter of the config must be present with its shape (extra tensors such
/// as old `position_ids` buffers are ignored). Returns the weights by name.
pub fn load_checkpoint(dir: &Path) -> Result<(ClipConfig, BTreeMap<String, HostTensor>)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        return Err(Error::Invalid(format!("{} has no {CONFIG_FILE}: a CLIP checkpoint directory needs {CONFIG_FILE} and {WEIGHTS_FILE}", dir.display())));
    }
    let config = ClipConfig::load_hf(&config_path)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.exists() {
        let hint = if dir.join("pytorch_model.bin").exists() { " (pytorch_model.bin is a pickle; convert it to safetensors)" } else { "" };
        return Err(Error::Invalid(format!("{} has no {WEIGHTS_FILE}{hint}", dir.display())));
    }
    let weights = load_safetensors(&weights_path)?;
    let specs = parameter_specs(&config)?;
    let origin = weights_path.display().to_string();
    let values = select_params(&weights, &specs, &origin)?;
    Ok((config, specs.into_iter().map(|s| s.name).zip(values).collect()))
}
