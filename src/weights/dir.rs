//! Model directories: the released (flax) layout — `config.json`,
//! `flax_model.msgpack`, tokenizer files — and the converted layout that
//! `dalle convert` writes — `model.yaml` (what the model is, our config),
//! `model.safetensors` (or shards), tokenizer files.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const HF_CONFIG: &str = "config.json";
pub const FLAX_WEIGHTS: &str = "flax_model.msgpack";
pub const CONVERTED_MANIFEST: &str = "model.yaml";
/// Tokenizer files of a released model; `tokenizer.json` is the one we read, the others are kept for other tools.
pub const TOKENIZER_FILES: [&str; 5] = ["tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"];
/// dalle-mini's word-frequency table for hashtag splitting; copied along when present.
pub const WORD_FREQUENCY_FILE: &str = "enwiki-words-frequency.txt";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Dallebart,
    Vqgan,
    Clip,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Dallebart => "DalleBart",
            ModelKind::Vqgan => "VQGAN",
            ModelKind::Clip => "CLIP",
        })
    }
}

/// `model.yaml` of a converted directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertedManifest {
    pub kind: ModelKind,
    /// Our model config (DalleBart, VQGAN); CLIP keeps transformers' `config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_yaml::Value>,
    /// Whether captions are normalised as dalle-mini does before tokenising (`normalize_text` of the release).
    #[serde(default)]
    pub normalize_text: bool,
    /// Where the weights were converted from.
    #[serde(default)]
    pub source: String,
}

/// What a model directory holds.
#[derive(Clone, Debug)]
pub enum WeightsSource {
    Converted(ConvertedManifest),
    Flax { kind: ModelKind, config: serde_json::Value },
}

/// transformers' `config.json` of `dir`.
pub fn read_hf_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join(HF_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{} is not valid JSON: {e}", path.display())))?;
    if !v.is_object() {
        return Err(Error::Invalid(format!("{} is not a JSON object", path.display())));
    }
    Ok(v)
}

fn kind_of(config: &serde_json::Value, path: &Path) -> Result<ModelKind> {
    let model_type = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let architectures: Vec<&str> = config.get("architectures").and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
    match model_type {
        "dallebart" => return Ok(ModelKind::Dallebart),
        "clip" => return Ok(ModelKind::Clip),
        _ => {}
    }
    // vqgan-jax's config has no model_type of its own.
    let has = |k: &str| config.get(k).is_some();
    if architectures.iter().any(|a| a.contains("VQModel")) || (model_type.is_empty() && has("n_embed") && has("ch_mult") && has("z_channels")) {
        return Ok(ModelKind::Vqgan);
    }
    let what = if model_type.is_empty() { format!("architectures {architectures:?}") } else { format!("model_type '{model_type}'") };
    Err(Error::Invalid(format!(
        "{}: {what} is not a model this project reads (DalleBart 'dallebart', the vqgan-jax VQGAN, CLIP 'clip')",
        path.join(HF_CONFIG).display()
    )))
}

/// Recognises a model directory, refusing ambiguous ones (two candidate weight files).
pub fn find_weights(dir: &Path) -> Result<WeightsSource> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", dir.display())));
    }
    let manifest = dir.join(CONVERTED_MANIFEST);
    let flax = dir.join(FLAX_WEIGHTS);
    if dir.join("flax_model.msgpack.index.json").is_file() {
        return Err(Error::Invalid(format!("{}: sharded flax checkpoints (flax_model.msgpack.index.json) are not supported", dir.display())));
    }
    if manifest.is_file() {
        if flax.is_file() {
            return Err(Error::Invalid(format!(
                "{} holds two candidate weight files, {FLAX_WEIGHTS} and converted weights ({CONVERTED_MANIFEST}); keep one of them",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(format!("reading {}", manifest.display()), e))?;
        let m: ConvertedManifest = serde_yaml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", manifest.display())))?;
        return Ok(WeightsSource::Converted(m));
    }
    if flax.is_file() {
        let config = read_hf_config(dir)?;
        let kind = kind_of(&config, dir)?;
        let safetensors = dir.join("model.safetensors");
        // CLIP releases ship PyTorch safetensors beside the flax weights: the same model.
        if kind != ModelKind::Clip && safetensors.is_file() {
            return Err(Error::Invalid(format!(
                "{} holds two candidate weight files, {FLAX_WEIGHTS} and model.safetensors; keep one of them",
                dir.display()
            )));
        }
        return Ok(WeightsSource::Flax { kind, config });
    }
    Err(Error::Invalid(format!(
        "{} is not a model directory: it has neither {CONVERTED_MANIFEST} (converted by dalle convert) nor {FLAX_WEIGHTS} with {HF_CONFIG} (a released flax model)",
        dir.display()
    )))
}

/// Copies the tokenizer files of `src` into `dst`: every file of `required`
/// must exist; the other known ones are copied when present. Returns the names copied.
pub fn copy_tokenizer_files(src: &Path, dst: &Path, required: &[&str]) -> Result<Vec<String>> {
    if let Some(missing) = required.iter().find(|f| !src.join(f).is_file()) {
        return Err(Error::Invalid(format!("{} is missing the tokenizer file {missing}", src.display())));
    }
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES.iter().chain([&WORD_FREQUENCY_FILE]) {
        let from = src.join(name);
        if from.is_file() {
            std::fs::copy(&from, dst.join(name)).map_err(|e| Error::io(format!("copying {}", from.display()), e))?;
            copied.push(name.to_string());
        }
    }
    Ok(copied)
}

/// An output directory built under a temporary name next to its final one
/// and renamed into place by [`OutputDir::commit`]; dropped uncommitted, it
/// is removed, so a failed conversion leaves nothing behind.
pub struct OutputDir {
    pub final_path: PathBuf,
    pub path: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl OutputDir {
    /// Refuses an existing `path` unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<OutputDir> {
        if path.exists() && !overwrite {
            return Err(Error::Invalid(format!("{} already exists (pass --overwrite to replace it)", path.display())));
        }
        let name = path.file_name().ok_or_else(|| Error::Invalid(format!("{} has no directory name", path.display())))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".partial-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        if let Some(parent) = tmp.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(format!("removing the leftover {}", tmp.display()), e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(OutputDir { final_path: path.to_path_buf(), path: tmp, overwrite, committed: false })
    }

    /// Moves the finished directory to its final name.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.final_path.exists() {
            if !self.overwrite {
                return Err(Error::Invalid(format!("{} appeared while writing; not replacing it", self.final_path.display())));
            }
            let remove = if self.final_path.is_dir() { std::fs::remove_dir_all(&self.final_path) } else { std::fs::remove_file(&self.final_path) };
            remove.map_err(|e| Error::io(format!("removing {}", self.final_path.display()), e))?;
        }
        std::fs::rename(&self.path, &self.final_path).map_err(|e| Error::io(format!("renaming {} to {}", self.path.display(), self.final_path.display()), e))?;
        self.committed = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
