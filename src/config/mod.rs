//! The one config system: YAML files in `configs/` plus `--set key=value` overrides.

mod overrides;

pub use overrides::{from_value, load, load_str, parse_overrides, set_path, ConfigError};

use serde::{de::DeserializeOwned, Serialize};

/// A config with checks that serde cannot express; messages name the key.
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

/// Reads a YAML config, applies `--set` overrides and validates; returns the
/// config and the complete YAML tree it came from (stored with every run).
pub fn load_validated<T: DeserializeOwned + Serialize + Validate>(
    path: &std::path::Path,
    overrides: &[String],
) -> crate::error::Result<(T, serde_yaml::Value)> {
    let (config, tree): (T, _) = load(path, overrides).map_err(|e| crate::error::Error::Invalid(e.to_string()))?;
    config.validate().map_err(|e| crate::error::Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok((config, tree))
}
