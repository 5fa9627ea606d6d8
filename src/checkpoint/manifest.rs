//! `metadata.json`: the run state of one step and the list of its files.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the layout changes in a way older readers would misread.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub step: u64,
    pub samples_seen: u64,
    pub data_position: serde_json::Value,
    pub rng: serde_json::Value,
    pub config_yaml: String,
    /// SHA-256 of `config_yaml`, hex.
    pub config_sha256: String,
    /// `<crate version>` or `<crate version>+<git hash>`.
    pub code_version: String,
    pub wall_secs: f64,
    /// When the save started, in seconds since the Unix epoch.
    pub saved_at_unix: f64,
    pub files: Vec<FileEntry>,
    /// Every tensor in the trainer's order, and the file that holds it.
    pub tensors: Vec<TensorEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub file: String,
}

/// The version of the code that writes a checkpoint: the crate version plus the
/// git commit when the build set `DALLE_GIT_HASH` (the TPU VM script does).
pub fn code_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("DALLE_GIT_HASH") {
        Some(hash) if !hash.trim().is_empty() => format!("{version}+{}", hash.trim()),
        _ => version.to_string(),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes))
}

/// A finished SHA-256 as lower-case hex.
pub(crate) fn hex_digest(digest: impl IntoIterator<Item = u8>) -> String {
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
