//! Weight files shared by every model: safetensors (read, written atomically,
//! sharded over 2 GB), flax msgpack (streaming reader and writer), the
//! mapping of a flax tree to our parameter names with layout and dtype
//! conversion, and the directories `dalle convert` writes.

mod clip;
mod dir;
pub mod msgpack;
mod plan;
mod safetensors;
mod sharded;

pub use self::safetensors::{
    load_safetensors, load_safetensors_with_metadata, read_safetensors, read_safetensors_with_metadata, save_safetensors, save_safetensors_with_metadata, select_params,
    to_safetensors, to_safetensors_with_metadata,
};
pub use clip::{clip_plan, load_clip_dir, ImportedClip};
pub use dir::{
    copy_tokenizer_files, find_weights, read_hf_config, ConvertedManifest, ModelKind, OutputDir, WeightsSource, CONVERTED_MANIFEST, FLAX_WEIGHTS, HF_CONFIG,
    TOKENIZER_FILES, WORD_FREQUENCY_FILE,
};
pub use msgpack::{write_flax_msgpack, FlaxArray, FlaxFile};
pub use plan::{Layout, Plan, Planned, Source};
pub use sharded::{load_sharded_safetensors, write_sharded_safetensors, WrittenFiles, SHARD_BYTES};

use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed into place.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}
