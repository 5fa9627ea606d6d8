//! The one config system: YAML files in `configs/` plus `--set key=value` overrides.

mod overrides;

pub use overrides::{from_value, load, load_str, parse_overrides, set_path, ConfigError};
