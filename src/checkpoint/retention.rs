//! Which steps to keep, and deleting the others without ever exposing a half-deleted one.

use super::layout::{step_location, COMMIT_FILE};
use super::CheckpointError;
use crate::storage::retry::retrying;
use crate::storage::{Location, RetryPolicy};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

/// Keep the newest `keep_last` committed steps, plus every step that is a
/// multiple of `keep_every` (kept permanently).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub keep_last: usize,
    pub keep_every: Option<u64>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy { keep_last: 3, keep_every: None }
    }
}

impl RetentionPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_last == 0 {
            return Err("checkpoint.keep_last must be at least 1 (the newest checkpoint is what a resume needs)".into());
        }
        if self.keep_every == Some(0) {
            return Err("checkpoint.keep_every must be at least 1 when set".into());
        }
        Ok(())
    }

    /// The committed steps (any order) this policy drops, ascending.
    pub fn to_delete(&self, committed: &[u64]) -> Vec<u64> {
        let mut steps = committed.to_vec();
        steps.sort_unstable();
        steps.dedup();
        let recent_from = steps.len().saturating_sub(self.keep_last.max(1));
        steps
            .iter()
            .enumerate()
            .filter(|(i, step)| *i < recent_from && !self.keep_every.is_some_and(|m| m > 0 && step.is_multiple_of(m)))
            .map(|(_, step)| *step)
            .collect()
    }
}

/// Deletes a step: `COMMIT` first, so that a deletion cut short leaves an
/// uncommitted directory (ignored by readers) rather than a broken committed one.
pub(crate) async fn delete_step(run: &Location, step: u64, retry: &RetryPolicy) -> Result<(), CheckpointError> {
    let dir = step_location(run, step);
    let commit = dir.child(COMMIT_FILE);
    match retrying(retry, &format!("deleting {commit}"), || dir.store.delete(&commit)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(CheckpointError::store(&dir.url, format!("deleting {COMMIT_FILE}"), e)),
    }
    let objects = retrying(retry, &format!("listing {}", dir.url), || dir.store.list(Some(&dir.prefix)).try_collect::<Vec<_>>())
        .await
        .map_err(|e| CheckpointError::store(&dir.url, "listing files to delete", e))?;
    for object in objects {
        let path = object.location;
        match retrying(retry, &format!("deleting {path}"), || dir.store.delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(CheckpointError::store(&dir.url, format!("deleting {path}"), e)),
        }
    }
    // Object stores have no directories, but local disk does: remove the now
    // empty `step_N/` (only if empty, so nothing else is ever deleted).
    if let Some(path) = dir.local_path() {
        match std::fs::remove_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove the emptied checkpoint directory {}: {e}", path.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_k_and_every_mth() {
        let p = RetentionPolicy { keep_last: 2, keep_every: Some(300) };
        let steps = [100, 200, 300, 400, 500, 600, 700];
        // Newest two (600, 700) stay; 300 and 600 are multiples of 300.
        assert_eq!(p.to_delete(&steps), vec![100, 200, 400, 500]);
        let p = RetentionPolicy { keep_last: 10, keep_every: None };
        assert!(p.to_delete(&steps).is_empty());
        let p = RetentionPolicy { keep_last: 1, keep_every: None };
        assert_eq!(p.to_delete(&[5, 1, 3]), vec![1, 3]);
    }

    #[test]
    fn zero_values_are_refused_with_the_key() {
        assert!(RetentionPolicy { keep_last: 0, keep_every: None }.validate().unwrap_err().contains("checkpoint.keep_last"));
        assert!(RetentionPolicy { keep_last: 1, keep_every: Some(0) }.validate().unwrap_err().contains("checkpoint.keep_every"));
    }
}
