//! The run directory every trainer shares: `config.yaml`, `metrics.jsonl`,
//! `loss.png` and `checkpoints/`, on local disk or any object store.
//!
//! Opening a run takes its writer lease ([`crate::storage::Lease`]) first, so
//! two processes never train into one directory: the second is refused with
//! a message naming the first, and a holder that died (SIGKILL, a preempted
//! VM) is taken over once its lease is stale. Every trainer, sweep trial and
//! pipeline stage that opens a [`RunDir`] gets this; code that writes a
//! directory without a `RunDir` can call [`crate::storage::Lease::acquire`].

use super::metrics::MetricsLog;
use super::Trainable;
use crate::checkpoint::{
    changed_config_keys, check_compatible, check_manifest_compatible, meta_of, Checkpoint, CheckpointConfig, CheckpointError, CheckpointManager, CheckpointMeta,
    SkippedStep,
};
use crate::error::{Error, Result};
use crate::graph::TensorType;
use crate::storage::{self, Lease, Location, StorageOptions};

pub const CONFIG_FILE: &str = "config.yaml";

pub struct RunDir {
    pub location: Location,
    pub checkpoints: CheckpointManager,
    pub metrics: MetricsLog,
    /// The config of this session, as YAML (stored in every checkpoint).
    pub config_yaml: String,
    /// Training wall time of earlier sessions of this run.
    pub earlier_wall_secs: f64,
    /// This process's writer lease on the run (released when the run is
    /// dropped; declared last so that happens after the checkpoint writer ends).
    pub lease: Lease,
}

impl RunDir {
    /// Opens (creating if needed) the run at `url` and restores its newest
    /// committed checkpoint, if any, after checking that its tensors have the
    /// `expected` names and shapes. Returns the run and that checkpoint.
    pub fn open(url: &str, config_yaml: &str, checkpoint: &CheckpointConfig, expected: &[(String, TensorType)]) -> Result<(RunDir, Option<Checkpoint>)> {
        let storage = StorageOptions::default();
        Self::open_leased(url, &storage, config_yaml, checkpoint, expected, Self::lease(url, &storage)?)
    }

    /// Opens the run at `url` for `model` with the writer lease taken by
    /// [`Self::lease`], and restores the run's newest checkpoint into it, if
    /// any. The checkpoint's tensors stream into the model as their files are
    /// read and verified ([`Trainable::restore_sink`]), so a model that
    /// uploads them as they come never holds the whole checkpoint on the host.
    pub fn resume(
        model: &mut dyn Trainable,
        url: &str,
        storage: &StorageOptions,
        config_yaml: &str,
        checkpoint: &CheckpointConfig,
        lease: Lease,
    ) -> Result<RunDir> {
        let (location, checkpoints) = Self::open_checkpoints(url, storage, checkpoint)?;
        let expected = model.tensor_types();
        let restored = checkpoints.restore_latest_with(|step, manifest| {
            check_manifest_compatible(&location.url, manifest, &expected)?;
            let mut sink = model.restore_sink();
            for tensor in checkpoints.stream(manifest) {
                let (name, tensor) = tensor?;
                sink.put(&name, &tensor).map_err(|e| CheckpointError::Invalid(format!("restoring '{name}' of checkpoint step {step}: {e}")))?;
            }
            let meta = meta_of(manifest);
            sink.finish(step, &meta).map_err(|e| CheckpointError::Invalid(format!("restoring checkpoint step {step}: {e}")))?;
            Ok((step, meta))
        });
        let (restored, skipped) = restored.map_err(|e| cannot_resume(&location, e))?;
        Self::finish_open(location, checkpoints, config_yaml, restored, skipped, lease)
    }

    /// Checks that the store of `url` can be used (credentials, endpoint) and
    /// takes the run's writer lease. Commands take it before compiling, so a
    /// second writer is refused at once, and hand it to [`Self::resume`].
    pub fn lease(url: &str, storage: &StorageOptions) -> Result<Lease> {
        tracing::info!("checking access to {url} and taking its writer lease");
        let location = storage::open_with(url, storage)?;
        storage::check_access(url, storage)?;
        Ok(Lease::acquire(&location, &storage.lease, &writer_purpose())?)
    }

    /// Like [`Self::open`], with the store's retry policy and endpoints from
    /// `storage` (a config's `storage:` section; checkpoint writes retry with
    /// the same policy) and the writer lease already taken by [`Self::lease`].
    pub fn open_leased(
        url: &str,
        storage: &StorageOptions,
        config_yaml: &str,
        checkpoint: &CheckpointConfig,
        expected: &[(String, TensorType)],
        lease: Lease,
    ) -> Result<(RunDir, Option<Checkpoint>)> {
        let (location, checkpoints) = Self::open_checkpoints(url, storage, checkpoint)?;
        let report = checkpoints.restore_latest_report()?;
        if let Some(ckpt) = &report.checkpoint {
            check_compatible(ckpt, expected).map_err(|e| cannot_resume(&location, e))?;
        }
        let restored = report.checkpoint.as_ref().map(|c| (c.step, c.meta.clone()));
        let run = Self::finish_open(location, checkpoints, config_yaml, restored, report.skipped, lease)?;
        Ok((run, report.checkpoint))
    }

    fn open_checkpoints(url: &str, storage: &StorageOptions, checkpoint: &CheckpointConfig) -> Result<(Location, CheckpointManager)> {
        let location = storage::open_with(url, storage)?;
        let checkpoints = CheckpointManager::open_with(&location, checkpoint.retention(), checkpoint.write_options(storage.retry.clone()))?;
        Ok((location, checkpoints))
    }

    /// The run after its newest usable checkpoint (`restored`: its step and
    /// run state) was restored, or none was found.
    fn finish_open(
        location: Location,
        checkpoints: CheckpointManager,
        config_yaml: &str,
        restored: Option<(u64, CheckpointMeta)>,
        skipped: Vec<SkippedStep>,
        lease: Lease,
    ) -> Result<RunDir> {
        for skipped in &skipped {
            tracing::warn!("checkpoint of step {} in {} is damaged and was skipped: {}", skipped.step, location.url, skipped.reason);
        }
        if let Some((step, meta)) = &restored {
            match changed_config_keys(&meta.config_yaml, config_yaml) {
                Ok(keys) if !keys.is_empty() => tracing::info!("resuming with config changes (allowed, shapes unchanged): {}", keys.join(", ")),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot compare the saved config with this one: {e}"),
            }
            tracing::info!("resuming {} from step {step}", location.url);
        } else {
            tracing::info!("starting a new run in {}", location.url);
        }
        location.put(CONFIG_FILE, config_yaml.as_bytes().to_vec())?;
        let resume_step = restored.as_ref().map_or(0, |(step, _)| *step);
        let metrics = MetricsLog::open(&location, resume_step)?;
        let earlier_wall_secs = restored.as_ref().map_or(0.0, |(_, meta)| meta.wall_secs);
        Ok(RunDir { location, checkpoints, metrics, config_yaml: config_yaml.to_string(), earlier_wall_secs, lease })
    }
}

/// A checkpoint that does not fit the model says which run to leave alone.
fn cannot_resume(location: &Location, error: CheckpointError) -> Error {
    match error {
        CheckpointError::Incompatible(_) => {
            Error::Invalid(format!("the run {} cannot resume with this config: {error}. Use a new run directory for a different model", location.url))
        }
        other => other.into(),
    }
}

/// What the lease says holds it: the command line's program and subcommand (e.g. `dalle train`).
fn writer_purpose() -> String {
    let mut args = std::env::args();
    let program = args.next().map(|p| std::path::Path::new(&p).file_name().map_or(p.clone(), |n| n.to_string_lossy().into_owned())).unwrap_or_default();
    match args.next() {
        Some(sub) if !sub.starts_with('-') => format!("{program} {sub}"),
        _ => program,
    }
}
