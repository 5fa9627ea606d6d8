//! What every training command shares: the stop signal, opening (and resuming)
//! the run directory, the progress bar, and turning the loop's outcome into a
//! message and an exit status.

use super::ExitStatus;
use dalle_xla::checkpoint::{CheckpointConfig, MetadataWatcher, StopSignal};
use dalle_xla::storage::{Lease, StorageOptions};
use dalle_xla::train::{Outcome, RunDir, Trainable};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::ObjectStoreExt;

/// SIGTERM/SIGINT handlers and, when the config asks, the GCE metadata watcher;
/// both end with the session.
pub struct StopHandling {
    pub signal: StopSignal,
    _watcher: Option<MetadataWatcher>,
}

impl StopHandling {
    pub fn install(checkpoint: &CheckpointConfig) -> anyhow::Result<StopHandling> {
        let signal = StopSignal::new();
        signal.install_os_handlers()?;
        let watcher = if checkpoint.watch_metadata { Some(MetadataWatcher::start(checkpoint.metadata_watcher(), signal.clone())?) } else { None };
        Ok(StopHandling { signal, _watcher: watcher })
    }
}

/// Fails fast, before compiling anything, when the run directory's URL,
/// storage settings or credentials are unusable (waits give way to a stop),
/// or when another process is training into it; returns the run's writer lease.
pub fn lease_run_dir(url: &str, storage: &StorageOptions) -> anyhow::Result<Lease> {
    tracing::info!("checking access to {url} and taking its writer lease");
    Ok(RunDir::lease(url, storage)?)
}

/// Opens the run at `url` (whose `lease` this process holds) and, when it has
/// a committed checkpoint, restores `model` from it.
pub fn open_run(model: &mut dyn Trainable, url: &str, storage: &StorageOptions, config_yaml: &str, checkpoint: &CheckpointConfig, lease: Lease) -> anyhow::Result<RunDir> {
    let (run, restored) = RunDir::open_leased(url, storage, config_yaml, checkpoint, &model.tensor_types(), lease)?;
    if let Some(ckpt) = &restored {
        model.restore(ckpt)?;
    }
    Ok(run)
}

pub fn progress_bar(total: u64, position: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("valid template"));
    bar.set_position(position);
    bar
}

/// Says how training ended: `outputs` names the files a run may hold (only
/// those present are listed); a stop exits with the preemption status so a
/// babysitter knows to restart.
pub fn finish(outcome: Outcome, run: &RunDir, outputs: &[&str], divergence_hint: &str) -> anyhow::Result<()> {
    let url = &run.location.url;
    match outcome {
        Outcome::Finished { step } => {
            let mut present: Vec<String> = outputs.iter().filter(|name| exists(run, name)).map(|n| n.to_string()).collect();
            match run.checkpoints.committed_steps() {
                Ok(steps) if !steps.is_empty() => present.push(format!("{} checkpoint(s)", steps.len())),
                _ => {}
            }
            let what = if present.is_empty() { "nothing written".to_string() } else { present.join(", ") };
            println!("done: {step} steps; {what} in {url}");
            Ok(())
        }
        Outcome::Stopped { step, reason } => {
            eprintln!("stopped at step {step} ({reason}); committed a checkpoint in {url}. Run the same command to resume.");
            Err(ExitStatus(reason.exit_code()).into())
        }
        Outcome::Diverged { step, loss } => {
            anyhow::bail!("the loss became {loss} at step {step}; the last good checkpoint is in {url} ({divergence_hint})")
        }
    }
}

fn exists(run: &RunDir, name: &str) -> bool {
    let path = run.location.child(name);
    dalle_xla::storage::block_on(async { run.location.store.head(&path).await }).is_ok()
}
