//! What every training command shares: the stop signal, opening (and resuming)
//! the run directory, the progress bar, and turning the loop's outcome into a
//! message and an exit status.

use super::ExitStatus;
use dalle_xla::checkpoint::{CheckpointConfig, MetadataWatcher, StopSignal};
use dalle_xla::storage::StorageOptions;
use dalle_xla::train::{Outcome, RunDir, Trainable};
use indicatif::{ProgressBar, ProgressStyle};

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

/// Opens the run at `url` and, when it has a committed checkpoint, restores `model` from it.
pub fn open_run(model: &mut dyn Trainable, url: &str, storage: &StorageOptions, config_yaml: &str, checkpoint: &CheckpointConfig) -> anyhow::Result<RunDir> {
    let (run, restored) = RunDir::open_with(url, storage, config_yaml, checkpoint, &model.tensor_types())?;
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

/// Says how training ended: `outputs` lists what the run directory holds; a
/// stop exits with the preemption status so a babysitter knows to restart.
pub fn finish(outcome: Outcome, run: &RunDir, outputs: &str, divergence_hint: &str) -> anyhow::Result<()> {
    let url = &run.location.url;
    match outcome {
        Outcome::Finished { step } => {
            println!("done: {step} steps; {outputs} in {url}");
            Ok(())
        }
        Outcome::Stopped { step, reason } => {
            eprintln!("stopped at step {step} ({reason:?}); committed a checkpoint in {url}. Run the same command to resume.");
            Err(ExitStatus(reason.exit_code()).into())
        }
        Outcome::Diverged { step, loss } => {
            anyhow::bail!("the loss became {loss} at step {step}; the last good checkpoint is in {url} ({divergence_hint})")
        }
    }
}
