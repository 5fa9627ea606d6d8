//! Our binding of the PJRT C API. All `unsafe` FFI of the project lives here.
//!
//! A plugin (`.so`) is loaded once per process ([`Plugin`]); a [`Client`] opens
//! its devices; programs are compiled from StableHLO text into a
//! [`LoadedExecutable`] and run on device [`Buffer`]s.

mod buffer;
mod client;
mod compile_options;
mod error;
mod executable;
pub mod ffi;
mod plugin;

pub use buffer::Buffer;
pub use client::{is_cpu_platform, Client, ClientOptions, DeviceInfo, OptionValue};
pub use compile_options::CompileOptions;
pub use error::{PjrtError, Result};
pub use executable::{CompiledMemoryStats, LoadedExecutable};
pub use plugin::{Plugin, KNOWN_API_MINOR, MIN_API_MINOR};

use std::path::{Path, PathBuf};

/// Environment variable naming a plugin file; overrides `xla_ext/`.
pub const PLUGIN_ENV: &str = "DALLE_PJRT_PLUGIN";
/// File name of an installed plugin under `xla_ext/<platform>/`.
pub const PLUGIN_FILE: &str = "pjrt_plugin.so";

/// Platforms that `scripts/install-plugin` knows how to install.
pub const PLATFORMS: [&str; 4] = ["cpu", "xla-cpu", "cuda", "tpu"];

/// Directories searched for `xla_ext/`: the working directory and its parents,
/// the executable's directory and its parents, and the source checkout.
fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mut push_ancestors = |start: Option<PathBuf>| {
        if let Some(start) = start {
            for dir in start.ancestors() {
                if !roots.iter().any(|r: &PathBuf| r == dir) {
                    roots.push(dir.to_path_buf());
                }
            }
        }
    };
    push_ancestors(std::env::current_dir().ok());
    push_ancestors(std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)));
    push_ancestors(Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))));
    roots
}

/// Finds the plugin for `platform`: `explicit` (a `--plugin` flag), then
/// `$DALLE_PJRT_PLUGIN`, then `xla_ext/<platform>/pjrt_plugin.so`.
pub fn find_plugin(platform: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(p.to_path_buf()),
            Ok(m) if m.is_dir() => Err(PjrtError::PluginNotFound(format!("the PJRT plugin {} given by --plugin is a directory, not a plugin file", p.display()))),
            Ok(_) => Err(PjrtError::PluginNotFound(format!(
                "the PJRT plugin {} given by --plugin is not a regular file (a device or pipe), so it is not a plugin",
                p.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PjrtError::PluginNotFound(format!("the PJRT plugin file {} given by --plugin does not exist", p.display())))
            }
            Err(e) => Err(PjrtError::PluginNotFound(format!("cannot read the PJRT plugin file {} given by --plugin: {e}", p.display()))),
        };
    }
    if let Some(p) = std::env::var_os(PLUGIN_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PjrtError::PluginNotFound(format!("{PLUGIN_ENV}={} does not name a file", p.display())))
        };
    }
    if !PLATFORMS.contains(&platform) {
        return Err(PjrtError::PluginNotFound(format!(
            "unknown platform '{platform}': expected one of {}",
            PLATFORMS.join(", ")
        )));
    }
    let roots = search_roots();
    for root in &roots {
        let candidate = root.join("xla_ext").join(platform).join(PLUGIN_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(PjrtError::PluginNotFound(format!(
        "no PJRT plugin for '{platform}' found (looked for xla_ext/{platform}/{PLUGIN_FILE} under {} and their parents, \
         and {PLUGIN_ENV} is unset). Install it with: scripts/install-plugin {platform}",
        roots.first().map(|r| r.display().to_string()).unwrap_or_default()
    )))
}

/// Finds, loads and opens a client for `platform` in one step.
pub fn open_client(platform: &str, explicit: Option<&Path>, options: &ClientOptions) -> Result<Client> {
    let path = find_plugin(platform, explicit)?;
    let plugin = Plugin::load(&path)?;
    Client::new(plugin, options)
}
