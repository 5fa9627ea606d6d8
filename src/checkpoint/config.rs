//! The `checkpoint:` section of a training config.

use super::{RetentionPolicy, SaveSchedule, WriteOptions};
use crate::storage::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every this many seconds of wall time; `null` disables.
    pub every_secs: Option<f64>,
    /// Save at every multiple of this step; `null` disables.
    pub every_steps: Option<u64>,
    /// Keep the newest this many checkpoints.
    pub keep_last: usize,
    /// Also keep every checkpoint whose step is a multiple of this, for good.
    pub keep_every: Option<u64>,
    /// Upper bound of one tensor file, in MiB.
    pub max_file_mib: u64,
    /// On GCE/TPU VMs, poll the metadata server for preemption and maintenance notices.
    pub watch_metadata: bool,
    /// Metadata server base URL (for tests).
    pub metadata_url: String,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_secs: Some(3600.0),
            every_steps: None,
            keep_last: 3,
            keep_every: None,
            max_file_mib: 2048,
            watch_metadata: false,
            metadata_url: super::MetadataWatcherConfig::default().base_url,
        }
    }
}

impl CheckpointConfig {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.retention().validate()?;
        SaveSchedule::new(self.every_secs, self.every_steps, 0, Instant::now())?;
        if self.max_file_mib == 0 {
            return Err("checkpoint.max_file_mib must be at least 1".into());
        }
        if !self.metadata_url.starts_with("http://") {
            return Err(format!("checkpoint.metadata_url must be an http:// URL, got '{}'", self.metadata_url));
        }
        Ok(())
    }

    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy { keep_last: self.keep_last, keep_every: self.keep_every }
    }

    /// The save schedule of a run resumed at `start_step` (0 for a fresh run).
    pub fn schedule(&self, start_step: u64, now: Instant) -> Result<SaveSchedule, String> {
        SaveSchedule::new(self.every_secs, self.every_steps, start_step, now)
    }

    pub fn write_options(&self, retry: RetryPolicy) -> WriteOptions {
        WriteOptions { max_file_bytes: self.max_file_mib << 20, retry, ..WriteOptions::default() }
    }

    pub fn metadata_watcher(&self) -> super::MetadataWatcherConfig {
        super::MetadataWatcherConfig { base_url: self.metadata_url.clone(), ..Default::default() }
    }
}
