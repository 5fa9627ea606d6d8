//! `dalle convert`: a released flax model directory (DalleBart, the VQGAN,
//! CLIP) to the converted layout — safetensors (sharded over 2 GB), our
//! `model.yaml`, the tokenizer files — built in a temporary directory and
//! renamed into place, so a failure leaves nothing behind. And `dalle export`:
//! DalleBart weights back to `config.json` + `flax_model.msgpack` + tokenizer
//! files, loadable by dalle-mini / transformers.

use super::{dallebart, vqgan};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::weights::{
    clip_plan, copy_tokenizer_files, find_weights, write_flax_msgpack, write_sharded_safetensors, ConvertedManifest, FlaxFile, ModelKind, OutputDir, Plan, WeightsSource,
    CONVERTED_MANIFEST, FLAX_WEIGHTS, HF_CONFIG,
};
use crate::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Convert every tensor to this dtype; `None` keeps the checkpoint's.
    pub dtype: Option<DType>,
    pub overwrite: bool,
    /// Largest safetensors file before splitting into shards.
    pub shard_bytes: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { dtype: None, overwrite: false, shard_bytes: crate::weights::SHARD_BYTES }
    }
}

/// What a conversion wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub kind: ModelKind,
    pub out: PathBuf,
    /// Files written, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    pub tensors: usize,
    pub parameters: u64,
    /// Arrays of the source that no parameter uses.
    pub unused: Vec<String>,
}

/// Converts the flax model directory `src` into `out`.
pub fn convert_dir(src: &Path, out: &Path, options: &ConvertOptions) -> Result<ConvertReport> {
    let (kind, hf_config) = match find_weights(src)? {
        WeightsSource::Flax { kind, config } => (kind, config),
        WeightsSource::Converted(m) => {
            return Err(Error::Invalid(format!("{} is already converted (a {} model with {CONVERTED_MANIFEST})", src.display(), m.kind)))
        }
    };
    let origin = src.join(HF_CONFIG).display().to_string();
    // Everything that can be checked before writing is checked first.
    let (model, normalize_text, tokenizer_required): (Option<serde_yaml::Value>, bool, &[&str]) = match kind {
        ModelKind::Dallebart => {
            let (c, normalize) = dallebart::flax::config_from_hf(&hf_config, &origin)?;
            (Some(to_yaml(&c)?), normalize, &["tokenizer.json"])
        }
        ModelKind::Vqgan => (Some(to_yaml(&vqgan::flax::config_from_hf(&hf_config, &origin)?)?), false, &[]),
        ModelKind::Clip => (None, false, &["tokenizer.json"]),
    };
    if let Some(missing) = tokenizer_required.iter().find(|f| !src.join(f).is_file()) {
        return Err(Error::Invalid(format!("{} is missing the tokenizer file {missing}", src.display())));
    }
    let file = FlaxFile::open(&src.join(FLAX_WEIGHTS))?;
    let plan = match kind {
        ModelKind::Dallebart => dallebart::flax::flax_plan(&dallebart::flax::config_from_hf(&hf_config, &origin)?.0, &file, options.dtype)?,
        ModelKind::Vqgan => vqgan::flax::flax_plan(&vqgan::flax::config_from_hf(&hf_config, &origin)?, &file, options.dtype)?,
        ModelKind::Clip => clip_plan(&file, &hf_config, options.dtype)?,
    };

    let dir = OutputDir::create(out, options.overwrite)?;
    let written = write_plan(&dir.path, &plan, &file, kind, options.shard_bytes)?;
    let mut files = written;
    let manifest = ConvertedManifest { kind, model, normalize_text, source: src.display().to_string() };
    let yaml = serde_yaml::to_string(&manifest).map_err(|e| Error::Invalid(format!("{CONVERTED_MANIFEST}: {e}")))?;
    write_file(&dir.path.join(CONVERTED_MANIFEST), yaml.as_bytes())?;
    files.push((CONVERTED_MANIFEST.to_string(), yaml.len() as u64));
    if kind == ModelKind::Clip {
        // The CLIP model reads transformers' own config.
        let bytes = std::fs::read(src.join(HF_CONFIG)).map_err(|e| Error::io(format!("reading {origin}"), e))?;
        write_file(&dir.path.join(HF_CONFIG), &bytes)?;
        files.push((HF_CONFIG.to_string(), bytes.len() as u64));
    }
    for name in copy_tokenizer_files(src, &dir.path, tokenizer_required)? {
        let size = std::fs::metadata(dir.path.join(&name)).map(|m| m.len()).unwrap_or(0);
        files.push((name, size));
    }
    let out = dir.commit()?;
    let parameters = plan.entries.iter().map(|e| e.shape.iter().product::<i64>() as u64).sum();
    Ok(ConvertReport { kind, out, files, tensors: plan.entries.len(), parameters, unused: plan.unused })
}

fn to_yaml<T: serde::Serialize>(v: &T) -> Result<serde_yaml::Value> {
    serde_yaml::to_value(v).map_err(|e| Error::Invalid(format!("model config: {e}")))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Writes the planned tensors as safetensors in `dir`, one tensor in memory at a time.
fn write_plan(dir: &Path, plan: &Plan, file: &FlaxFile, kind: ModelKind, shard_bytes: u64) -> Result<Vec<(String, u64)>> {
    let tensors: Vec<(String, DType, Vec<i64>)> = plan.entries.iter().map(|e| (e.name.clone(), e.dtype, e.shape.clone())).collect();
    let metadata = BTreeMap::from([("format".to_string(), if kind == ModelKind::Clip { "pt" } else { "dalle-xla" }.to_string())]);
    let written = write_sharded_safetensors(dir, &tensors, &metadata, shard_bytes, |i| plan.fetch(file, &plan.entries[i]))?;
    Ok(written.files)
}

/// Options of [`export_dallebart`].
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Convert the weights to this dtype; `None` keeps theirs.
    pub dtype: Option<DType>,
    pub overwrite: bool,
}

/// Writes DalleBart weights as a dalle-mini model directory (`config.json`,
/// `flax_model.msgpack` with `use_scan` off, and the tokenizer files found in
/// `tokenizer_dir`). Returns the files written.
pub fn export_dallebart(
    config: &dallebart::DalleBartConfig,
    weights: &BTreeMap<String, HostTensor>,
    normalize_text: bool,
    tokenizer_dir: Option<&Path>,
    out: &Path,
    options: &ExportOptions,
) -> Result<Vec<(String, u64)>> {
    let specs = dallebart::parameter_specs(config)?;
    for s in &specs {
        let t = weights.get(&s.name).ok_or_else(|| Error::Invalid(format!("the weights to export have no parameter '{}'", s.name)))?;
        if t.shape != s.ty.shape {
            return Err(Error::Invalid(format!("parameter '{}' has shape {:?}, the config needs {:?}", s.name, t.shape, s.ty.shape)));
        }
    }
    let dir = OutputDir::create(out, options.overwrite)?;
    let mut files = Vec::new();
    let json = serde_json::to_string_pretty(&dallebart::flax::config_to_hf(config, normalize_text)).map_err(|e| Error::Invalid(e.to_string()))?;
    write_file(&dir.path.join(HF_CONFIG), json.as_bytes())?;
    files.push((HF_CONFIG.to_string(), json.len() as u64));
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let path = dir.path.join(FLAX_WEIGHTS);
    write_flax_msgpack(&path, &names, |name| {
        let t = &weights[name];
        Ok(match options.dtype {
            Some(d) if d != t.dtype => t.cast(d),
            _ => t.clone(),
        })
    })?;
    files.push((FLAX_WEIGHTS.to_string(), std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)));
    if let Some(src) = tokenizer_dir {
        for name in copy_tokenizer_files(src, &dir.path, &["tokenizer.json"])? {
            let size = std::fs::metadata(dir.path.join(&name)).map(|m| m.len()).unwrap_or(0);
            files.push((name, size));
        }
    }
    dir.commit()?;
    Ok(files)
}
