//! Loading YAML configs with dotted `--set key.path=value` overrides.
//!
//! One mechanism for every program: the file is parsed to a YAML tree, each
//! override replaces an existing leaf (unknown keys are errors that name the
//! key and the keys that exist), and the tree is deserialised into the typed
//! config, where a wrong type is an error naming its key path.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::{Mapping, Value};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config {path} is not valid YAML: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("override '{0}' must look like key.path=value")]
    BadOverride(String),
    #[error("unknown config key '{key}'{hint}")]
    UnknownKey { key: String, hint: String },
    #[error("config key '{key}': {message}")]
    Invalid { key: String, message: String },
    #[error("config {path} is empty: {message}")]
    Empty { path: String, message: String },
}

/// Parses `key.path=value` pairs; values are YAML scalars (`0.005`, `true`, `adamw`, `[1, 2]`).
pub fn parse_overrides(items: &[String]) -> Result<Vec<(String, Value)>, ConfigError> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(ConfigError::BadOverride(item.clone()));
            }
            let value: Value = serde_yaml::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
            Ok((k.to_string(), value))
        })
        .collect()
}

fn key_hint(map: &Mapping, missing: &str) -> String {
    let keys: Vec<String> = map.keys().filter_map(|k| k.as_str().map(String::from)).collect();
    let close = keys.iter().find(|k| edit_distance(k, missing) <= 2);
    match close {
        Some(k) => format!(" (did you mean '{k}'?)"),
        None if keys.is_empty() => String::new(),
        None => format!(" (known keys here: {})", keys.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Replaces the existing leaf at `key` (dotted path) with `value`.
pub fn set_path(root: &mut Value, key: &str, value: Value) -> Result<(), ConfigError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let so_far = parts[..=i].join(".");
        let map = node.as_mapping_mut().ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_string(),
            hint: format!(" ('{}' is a value, not a section)", parts[..i].join(".")),
        })?;
        let k = Value::String(part.to_string());
        if !map.contains_key(&k) {
            return Err(ConfigError::UnknownKey { key: so_far, hint: key_hint(map, part) });
        }
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.get_mut(&k).expect("checked above");
    }
    Ok(())
}

/// Deserialises a YAML tree into `T`; errors name the key path.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        // serde names unknown fields in the message; surface them as such.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default();
            // The path may already end at the unknown field.
            let full = if key == "." || key.is_empty() {
                field.to_string()
            } else if key == field || key.ends_with(&format!(".{field}")) {
                key.clone()
            } else {
                format!("{key}.{field}")
            };
            let hint = message.split_once(", expected").map(|(_, e)| format!(" (expected{e})")).unwrap_or_default();
            return ConfigError::UnknownKey { key: full, hint };
        }
        ConfigError::Invalid { key, message }
    })
}

/// Reads `path`, applies `overrides` and deserialises into `T`.
pub fn load<T: DeserializeOwned + Serialize>(path: &Path, overrides: &[String]) -> Result<(T, Value), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    load_str(&text, &path.display().to_string(), overrides)
}

/// Like [`load`] on text; `name` is used in messages. The returned tree is the
/// complete config, defaults included, as the run will store it.
pub fn load_str<T: DeserializeOwned + Serialize>(text: &str, name: &str, overrides: &[String]) -> Result<(T, Value), ConfigError> {
    let mut value: Value =
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path: name.to_string(), source })?;
    let empty = value.is_null();
    if empty {
        value = Value::Mapping(Mapping::new());
    }
    // Round-trip through the typed config first so that keys left to their
    // defaults exist in the tree and can be overridden too.
    let typed: T = from_value(value).map_err(|e| match e {
        // "missing field at '.'" says nothing useful about a file with no settings at all.
        ConfigError::Invalid { key, message } if empty && (key == "." || key.is_empty()) => {
            let message = match message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                Some(field) => format!("it needs at least a `{field}:` section"),
                None => message,
            };
            ConfigError::Empty { path: name.to_string(), message }
        }
        other => other,
    })?;
    let mut value = serde_yaml::to_value(&typed).map_err(|e| ConfigError::Invalid { key: ".".into(), message: e.to_string() })?;
    for (k, v) in parse_overrides(overrides)? {
        set_path(&mut value, &k, v)?;
    }
    let typed = from_value(value.clone())?;
    Ok((typed, value))
}
