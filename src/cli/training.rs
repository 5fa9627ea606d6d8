//! What every training command shares: the stop signal, the progress bar, and
//! turning the loop's outcome into a message and an exit status.

use super::ExitStatus;
use dalle_xla::checkpoint::{CheckpointConfig, MetadataWatcher, StopSignal};
use dalle_xla::train::{Outcome, RunDir};
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
