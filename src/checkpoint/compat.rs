//! Whether a saved checkpoint fits the model a new config builds, and what changed.

use super::{Checkpoint, CheckpointError, Manifest};
use crate::DType;
use crate::graph::TensorType;
use std::collections::{BTreeMap, HashMap};

/// Refuses a checkpoint whose tensors differ from what the model expects:
/// the message names the first tensor that differs (in the model's order) and
/// both its saved and expected dtype and shape.
pub fn check_compatible(saved: &Checkpoint, expected: &[(String, TensorType)]) -> Result<(), CheckpointError> {
    let saved_types: Vec<(&str, DType, &[i64])> = saved.tensors.iter().map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice())).collect();
    check_types(saved.step, &saved_types, expected)
}

/// [`check_compatible`] from a step's manifest, before its tensors are read
/// (`run` names the run directory in the error for an unreadable manifest).
pub fn check_manifest_compatible(run: &str, manifest: &Manifest, expected: &[(String, TensorType)]) -> Result<(), CheckpointError> {
    let mut saved_types = Vec::with_capacity(manifest.tensors.len());
    for entry in &manifest.tensors {
        let dtype = DType::parse(&entry.dtype).ok_or_else(|| {
            CheckpointError::corrupt(run, manifest.step, format!("tensor '{}' has unknown dtype '{}'", entry.name, entry.dtype))
        })?;
        saved_types.push((entry.name.as_str(), dtype, entry.shape.as_slice()));
    }
    check_types(manifest.step, &saved_types, expected)
}

fn check_types(step: u64, saved: &[(&str, DType, &[i64])], expected: &[(String, TensorType)]) -> Result<(), CheckpointError> {
    let saved_by_name: HashMap<&str, (DType, &[i64])> = saved.iter().map(|&(n, d, s)| (n, (d, s))).collect();
    for (name, want) in expected {
        match saved_by_name.get(name.as_str()) {
            None => {
                return Err(CheckpointError::Incompatible(format!(
                    "the model has tensor '{name}' ({} {:?}) but checkpoint step {step} does not",
                    want.dtype, want.shape
                )))
            }
            Some(&(dtype, shape)) if dtype != want.dtype || shape != want.shape.as_slice() => {
                return Err(CheckpointError::Incompatible(format!(
                    "tensor '{name}' is {dtype} {shape:?} in checkpoint step {step} but the model expects {} {:?} \
                     (a config change that alters shapes cannot resume this run)",
                    want.dtype, want.shape
                )))
            }
            Some(_) => {}
        }
    }
    if expected.len() != saved.len() {
        let wanted: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        if let Some((extra, dtype, shape)) = saved.iter().find(|(n, _, _)| !wanted.contains(n)) {
            return Err(CheckpointError::Incompatible(format!(
                "checkpoint step {step} has tensor '{extra}' ({dtype} {shape:?}) that the model does not (a different model or optimizer?)"
            )));
        }
    }
    Ok(())
}

/// The dotted keys whose values differ between two config YAML texts (present
/// in one only, or with different values), sorted; for logging on resume.
pub fn changed_config_keys(saved_yaml: &str, new_yaml: &str) -> Result<Vec<String>, CheckpointError> {
    let parse = |which: &str, text: &str| {
        serde_yaml::from_str::<serde_yaml::Value>(text).map_err(|e| CheckpointError::Invalid(format!("the {which} config is not valid YAML: {e}")))
    };
    let mut saved = BTreeMap::new();
    flatten("", &parse("saved", saved_yaml)?, &mut saved);
    let mut new = BTreeMap::new();
    flatten("", &parse("new", new_yaml)?, &mut new);
    let mut keys: Vec<String> = saved.keys().chain(new.keys()).filter(|k| saved.get(*k) != new.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeMap<String, serde_yaml::Value>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let k = match k {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                flatten(&key(&k), v, out);
            }
        }
        serde_yaml::Value::Tagged(tagged) => flatten(prefix, &tagged.value, out),
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_and_sorted() {
        let a = "model: {d_model: 64, layers: 2}\noptimizer: {lr: 0.001}\ntrain: {steps: 10}\n";
        let b = "model: {d_model: 64, layers: 2}\noptimizer: {lr: 0.0005, warmup: 5}\ntrain: {steps: 10}\n";
        assert_eq!(changed_config_keys(a, b).unwrap(), vec!["optimizer.lr", "optimizer.warmup"]);
        assert!(changed_config_keys(a, a).unwrap().is_empty());
        assert!(changed_config_keys(a, "model: [").is_err());
    }
}
