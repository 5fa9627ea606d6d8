//! The checkpoint manager: saves on a background thread, restores with fallback.
//!
//! At most one save is in flight. A save requested while another is in flight
//! waits as the pending one; a further request replaces the pending one (the
//! older pending checkpoint is dropped and counted as superseded), so the
//! caller never blocks and never holds more than two checkpoints in memory
//! besides its own state. [`CheckpointManager::wait`] and dropping the manager
//! both wait until everything requested has been written.

use super::read::{self, StepListing};
use super::retention::{self, RetentionPolicy};
use super::shards::validate_tensors;
use super::write::{self, WriteOptions, WriteOutcome};
use super::{Checkpoint, CheckpointError, Manifest, Snapshot, TensorStream};
use crate::storage::{self, Location};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// What one finished save did.
#[derive(Clone, Debug, PartialEq)]
pub struct SaveReport {
    pub step: u64,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    /// The step was already committed (and verified); nothing was written.
    pub already_committed: bool,
    /// Steps deleted by the retention policy after this commit.
    pub deleted_steps: Vec<u64>,
    /// Retention failed after a successful commit; the save itself counts as done.
    pub retention_error: Option<String>,
}

/// A committed step that could not be used.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedStep {
    pub step: u64,
    pub reason: String,
}

/// The outcome of looking for the newest usable checkpoint.
#[derive(Debug)]
pub struct RestoreReport {
    /// `None`: the run has no committed checkpoint (a fresh start).
    pub checkpoint: Option<Checkpoint>,
    /// Newer committed steps that failed verification, newest first.
    pub skipped: Vec<SkippedStep>,
}

#[derive(Default)]
struct State {
    pending: Option<Snapshot>,
    in_flight: Option<u64>,
    last: Option<Result<SaveReport, (u64, String)>>,
    failed_saves: u64,
    superseded_saves: u64,
    shutdown: bool,
}

struct Shared {
    run: Location,
    policy: RetentionPolicy,
    options: WriteOptions,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state consistent
        // (every update is a single assignment), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct CheckpointManager {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl CheckpointManager {
    /// A manager for the checkpoints of the run directory `run`, with default write options.
    pub fn open(run: &Location, policy: RetentionPolicy) -> Result<Self, CheckpointError> {
        Self::open_with(run, policy, WriteOptions::default())
    }

    pub fn open_with(run: &Location, policy: RetentionPolicy, options: WriteOptions) -> Result<Self, CheckpointError> {
        policy.validate().map_err(CheckpointError::Invalid)?;
        options.validate()?;
        let shared = Arc::new(Shared { run: run.clone(), policy, options, state: Mutex::default(), changed: Condvar::new() });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || worker_loop(&worker_shared))
            .map_err(|e| CheckpointError::Invalid(format!("cannot start the checkpoint writer thread: {e}")))?;
        Ok(CheckpointManager { shared, worker: Some(worker) })
    }

    pub fn run(&self) -> &Location {
        &self.shared.run
    }

    /// Queues a checkpoint for writing and returns at once. Fails only on a
    /// malformed checkpoint (duplicate names, byte counts not matching shapes);
    /// storage failures are reported by [`Self::wait`] and [`Self::failed_saves`].
    pub fn save(&self, checkpoint: impl Into<Snapshot>) -> Result<(), CheckpointError> {
        let checkpoint = checkpoint.into();
        validate_tensors(&checkpoint.tensors)?;
        let mut state = self.shared.lock();
        if state.shutdown {
            return Err(CheckpointError::Invalid("the checkpoint manager is shut down".into()));
        }
        if let Some(older) = state.pending.replace(checkpoint) {
            state.superseded_saves += 1;
            tracing::warn!("checkpoint of step {} was superseded before it started (a slow save is still in flight)", older.step);
        }
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Blocks until every requested save is finished; returns the last save's
    /// outcome (`Ok(None)` when nothing was saved yet).
    pub fn wait(&self) -> Result<Option<SaveReport>, CheckpointError> {
        let mut state = self.shared.lock();
        while state.pending.is_some() || state.in_flight.is_some() {
            state = self.shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match &state.last {
            None => Ok(None),
            Some(Ok(report)) => Ok(Some(report.clone())),
            Some(Err((step, message))) => Err(CheckpointError::SaveFailed { step: *step, message: message.clone() }),
        }
    }

    /// Whether a save is queued or being written.
    pub fn is_busy(&self) -> bool {
        let state = self.shared.lock();
        state.pending.is_some() || state.in_flight.is_some()
    }

    /// Saves that failed so far in this process.
    pub fn failed_saves(&self) -> u64 {
        self.shared.lock().failed_saves
    }

    /// Saves replaced by a newer request before they started.
    pub fn superseded_saves(&self) -> u64 {
        self.shared.lock().superseded_saves
    }

    /// Committed steps, ascending.
    pub fn committed_steps(&self) -> Result<Vec<u64>, CheckpointError> {
        Ok(self.listing()?.committed)
    }

    /// The newest committed step (not yet verified; see [`Self::restore_latest`]).
    pub fn latest_committed(&self) -> Result<Option<u64>, CheckpointError> {
        Ok(self.committed_steps()?.last().copied())
    }

    /// The manifest of a committed step, without loading its tensors.
    pub fn manifest(&self, step: u64) -> Result<Manifest, CheckpointError> {
        storage::block_on(read::read_manifest(&self.shared.run, step, &self.shared.options.retry))
    }

    /// Loads and verifies one committed step.
    pub fn restore(&self, step: u64) -> Result<Checkpoint, CheckpointError> {
        storage::block_on(read::load_step(&self.shared.run, step, &self.shared.options))
    }

    /// The tensors of the committed step `manifest` describes, one at a time
    /// as their files are read and verified (see [`TensorStream`]).
    pub fn stream(&self, manifest: &Manifest) -> TensorStream {
        TensorStream::start(&self.shared.run, manifest, &self.shared.options)
    }

    /// The newest committed step that verifies; corrupt ones are logged and skipped.
    pub fn restore_latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.restore_latest_report()?.checkpoint)
    }

    /// Like [`Self::restore_latest`], also listing the steps that were skipped.
    /// A storage failure is an error (not a reason to fall back to an older
    /// step), and so is a run whose committed steps are all unusable: starting
    /// over would silently throw the run away.
    pub fn restore_latest_report(&self) -> Result<RestoreReport, CheckpointError> {
        let run = &self.shared.run;
        let (checkpoint, skipped) = self.restore_latest_with(|_, manifest| storage::block_on(read::load_step_with(run, manifest, &self.shared.options)))?;
        Ok(RestoreReport { checkpoint, skipped })
    }

    /// Tries `load(step, manifest)` on the committed steps from the newest
    /// until one succeeds, with the fallback rules of
    /// [`Self::restore_latest_report`]: a step whose manifest or `load` is
    /// [`CheckpointError::Corrupt`] is logged and skipped, any other error
    /// ends the search. `load` reads the step itself (a whole
    /// [`Checkpoint`], or a [`TensorStream`] into a model), so a step found
    /// corrupt halfway is followed by the previous one loaded whole again.
    pub fn restore_latest_with<T>(&self, mut load: impl FnMut(u64, &Manifest) -> Result<T, CheckpointError>) -> Result<(Option<T>, Vec<SkippedStep>), CheckpointError> {
        let run = &self.shared.run;
        let committed = self.listing()?.committed;
        let mut skipped = Vec::new();
        for &step in committed.iter().rev() {
            let loaded = self.manifest(step).and_then(|manifest| load(step, &manifest));
            match loaded {
                Ok(value) => return Ok((Some(value), skipped)),
                Err(CheckpointError::Corrupt { reason, .. }) => {
                    tracing::error!("checkpoint step {step} in '{}' is unusable, trying the previous one: {reason}", run.url);
                    skipped.push(SkippedStep { step, reason });
                }
                Err(e) => return Err(e),
            }
        }
        if skipped.is_empty() {
            return Ok((None, skipped));
        }
        let reasons: Vec<String> = skipped.iter().map(|s| format!("step {}: {}", s.step, s.reason)).collect();
        Err(CheckpointError::Invalid(format!(
            "run '{}' has {} committed checkpoint(s) and none is usable ({})",
            run.url,
            skipped.len(),
            reasons.join("; ")
        )))
    }

    fn listing(&self) -> Result<StepListing, CheckpointError> {
        let listing = storage::block_on(read::list_steps(&self.shared.run, &self.shared.options.retry))?;
        if !listing.foreign.is_empty() {
            tracing::warn!(
                "ignoring {} entr(ies) in '{}/checkpoints' that are not step_<N> directories: {}",
                listing.foreign.len(),
                self.shared.run.url,
                listing.foreign.join(", ")
            );
        }
        Ok(listing)
    }
}

impl Drop for CheckpointManager {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the checkpoint writer thread panicked; the last save may be incomplete (it was not committed)");
            }
        }
    }
}

fn worker_loop(shared: &Shared) {
    loop {
        let checkpoint = {
            let mut state = shared.lock();
            loop {
                if let Some(checkpoint) = state.pending.take() {
                    state.in_flight = Some(checkpoint.step);
                    break checkpoint;
                }
                if state.shutdown {
                    return;
                }
                state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        let step = checkpoint.step;
        let result = storage::block_on(save_and_prune(shared, &checkpoint));
        drop(checkpoint);
        let mut state = shared.lock();
        state.in_flight = None;
        match result {
            Ok(report) => {
                tracing::info!(
                    "checkpoint step {step} committed to '{}': {} file(s), {:.1} MB in {:.2}s",
                    shared.run.url,
                    report.files,
                    report.bytes as f64 / 1e6,
                    report.seconds
                );
                state.last = Some(Ok(report));
            }
            Err(e) => {
                state.failed_saves += 1;
                tracing::error!("checkpoint step {step} was not saved (training goes on; the next trigger saves again): {e}");
                state.last = Some(Err((step, e.to_string())));
            }
        }
        shared.changed.notify_all();
    }
}

async fn save_and_prune(shared: &Shared, checkpoint: &Snapshot) -> Result<SaveReport, CheckpointError> {
    let start = Instant::now();
    let outcome = write::write_step(&shared.run, checkpoint, &shared.options).await?;
    let (files, bytes, already_committed) = match outcome {
        WriteOutcome::Written { files, bytes } => (files, bytes, false),
        WriteOutcome::AlreadyCommitted => (0, 0, true),
    };
    let seconds = start.elapsed().as_secs_f64();
    let (deleted_steps, retention_error) = match prune(shared).await {
        Ok(deleted) => (deleted, None),
        Err(e) => {
            tracing::warn!("checkpoint retention in '{}' failed (it is retried after the next save): {e}", shared.run.url);
            (Vec::new(), Some(e.to_string()))
        }
    };
    Ok(SaveReport { step: checkpoint.step, files, bytes, seconds, already_committed, deleted_steps, retention_error })
}

/// Deletes committed steps the policy drops, and step directories left
/// uncommitted by an interrupted save that are older than the newest commit.
async fn prune(shared: &Shared) -> Result<Vec<u64>, CheckpointError> {
    let retry = &shared.options.retry;
    let listing = read::list_steps(&shared.run, retry).await?;
    let Some(&newest) = listing.committed.last() else { return Ok(Vec::new()) };
    let mut doomed = shared.policy.to_delete(&listing.committed);
    doomed.extend(listing.uncommitted.iter().filter(|s| **s < newest));
    doomed.sort_unstable();
    for &step in &doomed {
        retention::delete_step(&shared.run, step, retry).await?;
    }
    Ok(doomed)
}
