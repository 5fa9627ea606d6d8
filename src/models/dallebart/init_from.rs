//! `model.init_from`: fine-tuning from imported weights. The training config
//! names a model directory (converted or released flax, local or a storage
//! URL); its model config fills the `model` keys the config leaves out (those
//! given must agree), its `tokenizer.json` becomes `data.tokenizer`, and its
//! weights replace the random initialisation of a new run. A resumed run
//! restores its checkpoint as any run does.

use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::dallebart::{flax::config_from_hf, load_weights_dir, DalleBartConfig};
use crate::weights::{find_weights, ModelKind, OutputDir, WeightsSource, CONVERTED_MANIFEST, HF_CONFIG, TOKENIZER_FILES};
use serde_yaml::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys that may differ from the imported config: they only affect a random
/// initialisation or how the layers are computed, not the weights.
const FREE_KEYS: [&str; 3] = ["init_std", "scan_layers", "remat_layers"];

/// The local directory of `init_from`: itself, or for a storage URL a
/// download cached under the system's temporary directory (reused while the
/// remote `model.yaml` / `config.json` is unchanged).
pub fn local_model_dir(init_from: &str) -> Result<PathBuf> {
    if !init_from.contains("://") {
        return Ok(PathBuf::from(init_from));
    }
    let hash = Sha256::digest(init_from.as_bytes());
    let key: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let cache = std::env::temp_dir().join("dalle-xla-models").join(key);
    let location = crate::storage::open(init_from).map_err(|e| Error::Invalid(e.to_string()))?;
    let get = |name: &str| location.get(name).map_err(|e| Error::Invalid(e.to_string()));
    let (manifest_name, manifest) = match get(CONVERTED_MANIFEST)? {
        Some(bytes) => (CONVERTED_MANIFEST, bytes),
        None => match get(HF_CONFIG)? {
            Some(bytes) => (HF_CONFIG, bytes),
            None => return Err(Error::Invalid(format!("{init_from} holds no model ({CONVERTED_MANIFEST} or {HF_CONFIG})"))),
        },
    };
    if std::fs::read(cache.join(manifest_name)).ok().as_deref() == Some(manifest.as_slice()) {
        return Ok(cache);
    }
    let out = OutputDir::create(&cache, true)?;
    let mut names: Vec<String> = [crate::weights::FLAX_WEIGHTS, "model.safetensors", "model.safetensors.index.json", crate::weights::WORD_FREQUENCY_FILE]
        .iter()
        .chain(TOKENIZER_FILES.iter())
        .map(|s| s.to_string())
        .collect();
    if manifest_name == CONVERTED_MANIFEST {
        names.push(HF_CONFIG.to_string());
    }
    let mut i = 0;
    while i < names.len() {
        let name = names[i].clone();
        i += 1;
        let Some(bytes) = get(&name)? else { continue };
        if name == "model.safetensors.index.json" {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{init_from}/{name} is not JSON: {e}")))?;
            let mut shards: Vec<String> = v.get("weight_map").and_then(|m| m.as_object()).into_iter().flat_map(|m| m.values()).filter_map(|s| s.as_str().map(str::to_string)).collect();
            shards.sort();
            shards.dedup();
            names.extend(shards.into_iter().filter(|s| !s.contains('/') && !s.contains("..")));
        }
        std::fs::write(out.path.join(&name), &bytes).map_err(|e| Error::io(format!("writing {}", out.path.join(&name).display()), e))?;
    }
    // The manifest last: a cache with it is complete.
    std::fs::write(out.path.join(manifest_name), &manifest).map_err(|e| Error::io(format!("writing {}", out.path.join(manifest_name).display()), e))?;
    out.commit()
}

/// The DalleBart config of a model directory, without reading its weights.
fn imported_config(dir: &Path, init_from: &str) -> Result<DalleBartConfig> {
    match find_weights(dir).map_err(|e| Error::Invalid(format!("model.init_from: {e}")))? {
        WeightsSource::Converted(m) => {
            if m.kind != ModelKind::Dallebart {
                return Err(Error::Invalid(format!("model.init_from: {init_from} holds a {} model, not DalleBart", m.kind)));
            }
            let model = m.model.ok_or_else(|| Error::Invalid(format!("model.init_from: {init_from}/{CONVERTED_MANIFEST} has no 'model' section")))?;
            serde_yaml::from_value(model).map_err(|e| Error::Invalid(format!("model.init_from: {init_from}/{CONVERTED_MANIFEST}: {e}")))
        }
        WeightsSource::Flax { config, .. } => Ok(config_from_hf(&config, &dir.join(HF_CONFIG).display().to_string())?.0),
    }
}

/// Fills a training config tree from its `model.init_from` (see the module
/// comment); does nothing when the key is absent.
pub fn resolve(tree: &mut Value) -> Result<()> {
    let Some(model) = tree.get_mut("model").and_then(|m| m.as_mapping_mut()) else { return Ok(()) };
    let Some(init_from) = model.get("init_from").and_then(|v| v.as_str()).map(str::to_string) else { return Ok(()) };
    let dir = local_model_dir(&init_from)?;
    let imported = imported_config(&dir, &init_from)?;
    let imported = serde_yaml::to_value(&imported).map_err(|e| Error::Invalid(e.to_string()))?;
    for (k, v) in imported.as_mapping().into_iter().flatten() {
        let key = k.as_str().unwrap_or_default();
        match model.get(k) {
            None => {
                model.insert(k.clone(), v.clone());
            }
            Some(given) if given == v || FREE_KEYS.contains(&key) || numbers_equal(given, v) => {}
            Some(given) => {
                return Err(Error::Invalid(format!(
                    "model.{key} is {} but the weights of model.init_from ({init_from}) have {}; remove model.{key} from the config",
                    yaml_inline(given),
                    yaml_inline(v)
                )))
            }
        }
    }
    let tokenizer = if init_from.contains("://") { format!("{}/tokenizer.json", init_from.trim_end_matches('/')) } else { dir.join("tokenizer.json").display().to_string() };
    let root = tree.as_mapping_mut().ok_or_else(|| Error::Invalid("the config is not a mapping".into()))?;
    let data = root.entry(Value::from("data")).or_insert_with(|| Value::Mapping(Default::default()));
    if let Some(data) = data.as_mapping_mut() {
        let uses_files = data.get("kind").and_then(|k| k.as_str()) == Some("files");
        match data.get("tokenizer").and_then(|t| t.as_str()) {
            Some(t) if uses_files && t != tokenizer => {
                return Err(Error::Invalid(format!(
                    "data.tokenizer is {t} but the weights of model.init_from come with {tokenizer}; remove data.tokenizer to use theirs"
                )))
            }
            None if uses_files => {
                data.insert(Value::from("tokenizer"), Value::from(tokenizer));
            }
            _ => {}
        }
        // dalle-mini's word table for hashtags, when it came along with the weights.
        let words = dir.join(crate::weights::WORD_FREQUENCY_FILE);
        if uses_files && !data.contains_key("word_frequency") && words.is_file() {
            data.insert(Value::from("word_frequency"), Value::from(words.display().to_string()));
        }
    }
    Ok(())
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

fn yaml_inline(v: &Value) -> String {
    serde_yaml::to_string(v).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The imported weights for `config.init_from`, checked against `config`.
pub fn initial_weights(config: &DalleBartConfig) -> Result<Option<BTreeMap<String, HostTensor>>> {
    let Some(init_from) = &config.init_from else { return Ok(None) };
    let dir = local_model_dir(init_from)?;
    let imported = load_weights_dir(&dir).map_err(|e| Error::Invalid(format!("model.init_from: {e}")))?;
    let mut ours = config.clone();
    ours.init_from = None;
    let mut theirs = imported.config.clone();
    theirs.init_std = ours.init_std;
    theirs.scan_layers = ours.scan_layers;
    theirs.remat_layers = ours.remat_layers;
    if theirs != ours {
        return Err(Error::Invalid(format!("model.init_from: the model config differs from the one of {init_from}; remove the model keys that differ")));
    }
    Ok(Some(imported.weights))
}
