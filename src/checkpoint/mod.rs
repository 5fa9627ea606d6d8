//! Checkpoints in a run directory on any object store, and stopping cleanly on preemption.
//!
//! A run directory (a [`crate::storage::Location`]) holds `config.yaml`,
//! `metrics.jsonl` and `checkpoints/step_<N>/`. Each step directory holds the
//! tensors (parameters under their flax names, optimizer state as
//! `<param>/<suffix>`) in safetensors files of bounded size, a `metadata.json`
//! (see [`Manifest`]) and, written last with a create-only put, a `COMMIT`
//! marker holding the SHA-256 of `metadata.json`. Nothing is ever renamed
//! (rename is a copy plus a delete on GCS), so a step is complete exactly when
//! its `COMMIT` exists; readers ignore every step without one, and a committed
//! step whose files fail their size or hash check is skipped in favour of the
//! previous one.
//!
//! [`CheckpointManager`] writes on a background thread so training goes on
//! while a checkpoint uploads; [`SaveSchedule`] says when a save is due;
//! [`RetentionPolicy`] says which steps to keep; [`StopSignal`] turns SIGTERM,
//! SIGINT and a GCE preemption notice into one flag the training loop polls.

mod compat;
mod config;
mod error;
mod layout;
mod manager;
mod manifest;
mod metadata_watcher;
mod preemption;
mod read;
mod retention;
mod schedule;
mod shards;
mod stream;
mod write;

pub use compat::{changed_config_keys, check_compatible, check_manifest_compatible};
pub use config::CheckpointConfig;
pub use error::CheckpointError;
pub use layout::{step_dir_name, CHECKPOINTS_DIR, COMMIT_FILE, METADATA_FILE};
pub use manager::{CheckpointManager, RestoreReport, SaveReport, SkippedStep};
pub use manifest::{code_version, FileEntry, Manifest, TensorEntry, FORMAT_VERSION};
pub(crate) use read::meta_of;
pub use metadata_watcher::{MetadataWatcher, MetadataWatcherConfig};
pub use preemption::{StopReason, StopSignal, EXIT_PREEMPTED};
pub use retention::RetentionPolicy;
pub use schedule::SaveSchedule;
pub use stream::TensorStream;
pub use write::WriteOptions;

use crate::host::{BlockedTensor, HostTensor};

/// Everything needed to continue a run exactly where it stopped: as read
/// back, each tensor whole.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<T = HostTensor> {
    /// Number of updates applied so far.
    pub step: u64,
    /// Parameters and optimizer state, in the order the trainer lists them.
    pub tensors: Vec<(String, T)>,
    pub meta: CheckpointMeta,
}

/// A checkpoint as a trainer hands it to the writer: each tensor as the
/// distinct shards its devices hold, written into the files' byte order from
/// them (the files are the same whatever the mesh).
pub type Snapshot = Checkpoint<BlockedTensor>;

impl From<Checkpoint> for Snapshot {
    fn from(c: Checkpoint) -> Snapshot {
        let tensors = c.tensors.into_iter().map(|(n, t)| (n, BlockedTensor::whole(t))).collect();
        Snapshot { step: c.step, tensors, meta: c.meta }
    }
}

impl Snapshot {
    /// Every tensor put together whole, as a restore reads them back.
    pub fn to_checkpoint(&self) -> Checkpoint {
        let tensors = self.tensors.iter().map(|(n, t)| (n.clone(), t.to_whole())).collect();
        Checkpoint { step: self.step, tensors, meta: self.meta.clone() }
    }
}

/// The run state that is not a tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMeta {
    /// Training examples consumed so far.
    pub samples_seen: u64,
    /// The data loader's position, opaque to this module.
    pub data_position: serde_json::Value,
    /// The random number generator state, opaque to this module.
    pub rng: serde_json::Value,
    /// The run's config as YAML text.
    pub config_yaml: String,
    /// Training wall time accumulated over all sessions of the run, in seconds.
    pub wall_secs: f64,
}
