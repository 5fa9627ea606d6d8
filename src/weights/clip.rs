//! A FlaxCLIPModel tree under transformers' PyTorch names and layouts
//! (`text_model.*`, `vision_model.*`, `visual_projection.weight`,
//! `text_projection.weight`, `logit_scale`), the layout the CLIP model loads.
//!
//! The rules are transformers' own between its flax and PyTorch CLIP: dense
//! `kernel` `[in, out]` -> `weight` `[out, in]`; conv `kernel` HWIO -> `weight`
//! OIHW; `embedding` -> `weight`; LayerNorm `scale` -> `weight`; the rest
//! (biases, `class_embedding`, `logit_scale`) unchanged.

use super::dir::{find_weights, read_hf_config, ModelKind, WeightsSource, FLAX_WEIGHTS, HF_CONFIG};
use super::msgpack::FlaxFile;
use super::plan::{Layout, Plan, Source};
use super::sharded::load_sharded_safetensors;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Our name and layout change for one flax path.
fn pytorch_name(flax: &str, rank: usize) -> (String, Layout) {
    let (base, leaf) = flax.rsplit_once('.').unwrap_or(("", flax));
    let join = |leaf: &str| if base.is_empty() { leaf.to_string() } else { format!("{base}.{leaf}") };
    match (leaf, rank) {
        ("kernel", 4) => (join("weight"), Layout::HwioToOihw),
        ("kernel", 2) => (join("weight"), Layout::Transpose),
        ("embedding", _) | ("scale", _) => (join("weight"), Layout::Same),
        _ => (flax.to_string(), Layout::Same),
    }
}

/// The plan writing every array of a FlaxCLIPModel checkpoint under its PyTorch name.
/// `config` is the release's `config.json`, checked against the tree.
pub fn clip_plan(file: &FlaxFile, config: &serde_json::Value, dtype: Option<DType>) -> Result<Plan> {
    let origin = file.path.display();
    for top in ["text_model", "vision_model"] {
        if !file.arrays.keys().any(|k| k.starts_with(&format!("{top}."))) {
            return Err(Error::Invalid(format!("{origin} has no '{top}' arrays: it is not a FlaxCLIPModel checkpoint")));
        }
    }
    if !file.arrays.contains_key("logit_scale") {
        return Err(Error::Invalid(format!("{origin} has no array 'logit_scale': it is not a FlaxCLIPModel checkpoint")));
    }
    let dim = |section: &str, key: &str| config.get(section).and_then(|s| s.get(key)).and_then(|v| v.as_i64());
    let checks = [
        ("text_model.embeddings.token_embedding.embedding", 1, dim("text_config", "hidden_size"), "text_config.hidden_size"),
        ("text_model.embeddings.token_embedding.embedding", 0, dim("text_config", "vocab_size"), "text_config.vocab_size"),
        ("vision_model.embeddings.class_embedding", 0, dim("vision_config", "hidden_size"), "vision_config.hidden_size"),
        ("visual_projection.kernel", 1, config.get("projection_dim").and_then(|v| v.as_i64()), "projection_dim"),
    ];
    for (name, axis, want, key) in checks {
        if let (Some(want), Some(a)) = (want, file.arrays.get(name)) {
            if a.shape.get(axis) != Some(&want) {
                return Err(Error::Invalid(format!("{origin}: '{name}' has shape {:?}, config.json's {key} is {want}", a.shape)));
            }
        }
    }
    let wanted = file
        .arrays
        .iter()
        .map(|(name, a)| {
            let (ours, layout) = pytorch_name(name, a.shape.len());
            let shape = match (layout, a.shape.as_slice()) {
                (Layout::Transpose, [i, o]) => vec![*o, *i],
                (Layout::HwioToOihw, [h, w, i, o]) => vec![*o, *i, *h, *w],
                _ => a.shape.clone(),
            };
            (ours, shape, Source { name: name.clone(), row: None, layout })
        })
        .collect();
    Plan::build(file, wanted, dtype)
}

/// A CLIP model directory loaded in memory, under transformers' PyTorch names and layouts.
pub struct ImportedClip {
    /// transformers' `config.json`.
    pub config: serde_json::Value,
    pub weights: BTreeMap<String, HostTensor>,
    /// `tokenizer.json` beside the weights.
    pub tokenizer: PathBuf,
}

/// Loads a CLIP directory: converted by `dalle convert`, a released flax one
/// (`flax_model.msgpack`, converted in memory), or transformers' PyTorch
/// layout (`model.safetensors` + `config.json`).
pub fn load_clip_dir(dir: &Path) -> Result<ImportedClip> {
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(Error::Invalid(format!("{} is missing the tokenizer file tokenizer.json", dir.display())));
    }
    let check_kind = |config: &serde_json::Value| -> Result<()> {
        match config.get("model_type").and_then(|v| v.as_str()) {
            Some("clip") => Ok(()),
            other => Err(Error::Invalid(format!("{}: model_type is {other:?}, not 'clip'", dir.join(HF_CONFIG).display()))),
        }
    };
    let pytorch_only = !dir.join(FLAX_WEIGHTS).is_file() && !dir.join(super::dir::CONVERTED_MANIFEST).is_file();
    if pytorch_only && (dir.join("model.safetensors").is_file() || dir.join("model.safetensors.index.json").is_file()) {
        let config = read_hf_config(dir)?;
        check_kind(&config)?;
        return Ok(ImportedClip { config, weights: load_sharded_safetensors(dir)?, tokenizer });
    }
    match find_weights(dir)? {
        WeightsSource::Converted(m) if m.kind == ModelKind::Clip => {
            let config = read_hf_config(dir)?;
            Ok(ImportedClip { config, weights: load_sharded_safetensors(dir)?, tokenizer })
        }
        WeightsSource::Converted(m) => Err(Error::Invalid(format!("{} holds a {} model, not CLIP", dir.display(), m.kind))),
        WeightsSource::Flax { kind: ModelKind::Clip, config } => {
            let file = FlaxFile::open(&dir.join(FLAX_WEIGHTS))?;
            let plan = clip_plan(&file, &config, None)?;
            Ok(ImportedClip { weights: plan.load_all(&file)?, config, tokenizer })
        }
        WeightsSource::Flax { kind, .. } => Err(Error::Invalid(format!("{} describes a {kind} model, not CLIP", dir.join(HF_CONFIG).display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flax_paths_become_pytorch_names() {
        assert_eq!(pytorch_name("text_model.encoder.layers.0.self_attn.q_proj.kernel", 2), ("text_model.encoder.layers.0.self_attn.q_proj.weight".into(), Layout::Transpose));
        assert_eq!(pytorch_name("vision_model.embeddings.patch_embedding.kernel", 4), ("vision_model.embeddings.patch_embedding.weight".into(), Layout::HwioToOihw));
        assert_eq!(pytorch_name("vision_model.pre_layrnorm.scale", 1), ("vision_model.pre_layrnorm.weight".into(), Layout::Same));
        assert_eq!(pytorch_name("text_model.embeddings.position_embedding.embedding", 2), ("text_model.embeddings.position_embedding.weight".into(), Layout::Same));
        assert_eq!(pytorch_name("logit_scale", 0), ("logit_scale".into(), Layout::Same));
        assert_eq!(pytorch_name("vision_model.embeddings.class_embedding", 1), ("vision_model.embeddings.class_embedding".into(), Layout::Same));
    }
}
