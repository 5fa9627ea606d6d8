//! The released VQGAN (`dalle-mini/vqgan_imagenet_f16_16384`, vqgan-jax
//! layout): its `config.json` to our config, its flax tree to our parameters
//! (the same names: our VQGAN follows vqgan-jax), and model directories
//! (converted or flax) loaded in memory.

use super::{parameter_specs, VqganConfig};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::weights::{find_weights, load_sharded_safetensors, FlaxFile, Layout, ModelKind, Plan, Source, WeightsSource, CONVERTED_MANIFEST, FLAX_WEIGHTS, HF_CONFIG};
use crate::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Our config from a vqgan-jax `config.json`; settings our VQGAN does not implement are refused by key.
pub fn config_from_hf(c: &Value, origin: &str) -> Result<VqganConfig> {
    for (key, want) in [("double_z", json!(false)), ("resamp_with_conv", json!(true)), ("give_pre_end", json!(false))] {
        if let Some(v) = c.get(key) {
            if v != &want {
                return Err(Error::Invalid(format!("{origin}: {key} = {v} is not supported (our VQGAN implements {key} = {want})")));
            }
        }
    }
    if let Some(t) = c.get("model_type").and_then(|v| v.as_str()).filter(|t| !t.is_empty() && !t.contains("vq")) {
        return Err(Error::Invalid(format!("{origin}: model_type is '{t}': this is not a VQGAN checkpoint")));
    }
    let int = |key: &str, default: Option<i64>| -> Result<i64> {
        match c.get(key) {
            None => default.ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' is missing"))),
            Some(v) => v.as_i64().ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' must be an integer, got {v}"))),
        }
    };
    let list = |key: &str| -> Result<Vec<i64>> {
        let v = c.get(key).ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' is missing")))?;
        // vqgan-jax writes a single attention resolution as a bare integer in some configs.
        if let Some(n) = v.as_i64() {
            return Ok(vec![n]);
        }
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| Error::Invalid(format!("{origin}: '{key}' must be a list of integers, got {v}")))
    };
    let config = VqganConfig {
        ch: int("ch", None)?,
        ch_mult: list("ch_mult")?,
        num_res_blocks: usize::try_from(int("num_res_blocks", None)?).map_err(|_| Error::Invalid(format!("{origin}: 'num_res_blocks' must not be negative")))?,
        attn_resolutions: list("attn_resolutions")?,
        z_channels: int("z_channels", None)?,
        embed_dim: int("embed_dim", None)?,
        n_embed: int("n_embed", None)?,
        resolution: int("resolution", None)?,
        in_channels: int("in_channels", Some(3))?,
        out_ch: int("out_ch", Some(3))?,
        beta: 0.25,
        l2_codes: false,
        norm_groups: super::config::GROUPS,
        fsq_levels: vec![],
        fsq_commitment: 0.0,
    };
    config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
    Ok(config)
}

/// A vqgan-jax `config.json` for our config.
pub fn config_to_hf(c: &VqganConfig) -> Value {
    json!({
        "architectures": ["VQModel"],
        "ch": c.ch, "out_ch": c.out_ch, "in_channels": c.in_channels, "num_res_blocks": c.num_res_blocks,
        "resolution": c.resolution, "z_channels": c.z_channels, "ch_mult": c.ch_mult, "attn_resolutions": c.attn_resolutions,
        "n_embed": c.n_embed, "embed_dim": c.embed_dim, "dropout": 0.0, "double_z": false, "resamp_with_conv": true, "give_pre_end": false,
    })
}

/// The plan mapping a vqgan-jax tree to our parameters; `dtype` converts, `None` keeps the file's.
pub fn flax_plan(config: &VqganConfig, file: &FlaxFile, dtype: Option<DType>) -> Result<Plan> {
    let specs = parameter_specs(config)?;
    let wanted = specs.into_iter().map(|s| (s.name.clone(), s.ty.shape.clone(), Source { name: s.name, row: None, layout: Layout::Same })).collect();
    Plan::build(file, wanted, dtype)
}

/// Loads a VQGAN directory: converted by `dalle convert`, or a vqgan-jax flax directory (converted in memory).
pub fn load_weights_dir(dir: &Path) -> Result<(VqganConfig, BTreeMap<String, HostTensor>)> {
    match find_weights(dir)? {
        WeightsSource::Converted(m) => {
            let origin = dir.join(CONVERTED_MANIFEST).display().to_string();
            if m.kind != ModelKind::Vqgan {
                return Err(Error::Invalid(format!("{origin}: {} holds a {} model, not a VQGAN", dir.display(), m.kind)));
            }
            let model = m.model.ok_or_else(|| Error::Invalid(format!("{origin} has no 'model' section")))?;
            let config: VqganConfig = serde_yaml::from_value(model).map_err(|e| Error::Invalid(format!("{origin}: model: {e}")))?;
            config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
            Ok((config, load_sharded_safetensors(dir)?))
        }
        WeightsSource::Flax { kind, config } => {
            let origin = dir.join(HF_CONFIG).display().to_string();
            if kind != ModelKind::Vqgan {
                return Err(Error::Invalid(format!("{origin} describes a {kind} model, not a VQGAN")));
            }
            let config = config_from_hf(&config, &origin)?;
            let file = FlaxFile::open(&dir.join(FLAX_WEIGHTS))?;
            let plan = flax_plan(&config, &file, None)?;
            if !plan.unused.is_empty() {
                tracing::info!("{}: {} arrays not used by the VQGAN (e.g. {})", file.path.display(), plan.unused.len(), plan.unused[0]);
            }
            Ok((config, plan.load_all(&file)?))
        }
    }
}

/// Whether `dir` looks like a model directory (converted or flax) rather than a run directory.
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join(CONVERTED_MANIFEST).is_file() || dir.join(FLAX_WEIGHTS).is_file()
}
