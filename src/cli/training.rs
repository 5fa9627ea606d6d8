//! What every training command shares: `--set`, `--run` and the device
//! arguments, the stop signal, the run directory, the loop with its progress
//! bar and log lines, and turning the loop's outcome into a message and an
//! exit status.

use super::common::DeviceArgs;
use super::ExitStatus;
use clap::Args;
use dalle_xla::checkpoint::{CheckpointConfig, MetadataWatcher, StopSignal};
use dalle_xla::pjrt::Client;
use dalle_xla::train::{fit, FitOptions, Outcome, RunDir, StepMetrics, TrainSections, Trainable};
use indicatif::{ProgressBar, ProgressStyle};
use object_store::ObjectStoreExt;
use std::path::Path;

/// The arguments of `dalle train`, `train-vqgan` and `train-clip` besides the config file.
#[derive(Args)]
pub struct TrainingArgs {
    /// Config overrides, `key.path=value` (repeatable), e.g. `--set train.steps=500`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory: local path, gs://bucket/prefix, s3://bucket/prefix (overrides `train.run_dir`).
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl TrainingArgs {
    /// The `--set` overrides, and `--run` (when given) as `train.run_dir` after them.
    pub fn overrides(&self) -> Vec<String> {
        let mut all = self.overrides.clone();
        all.extend(self.run.iter().map(|run| format!("train.run_dir={run}")));
        all
    }
}

/// A training command's model and run once its loop has ended.
pub struct Trained<T> {
    pub trainer: T,
    pub run: RunDir,
    pub outcome: Outcome,
}

/// What a training command does between loading its config and writing its
/// outputs: takes the run directory's writer lease (a bad run URL, storage
/// setting or credential fails before anything compiles), builds the trainer,
/// resumes the run's newest checkpoint, and trains until `train.steps` or a
/// stop with a progress bar whose message `status` writes. `tree` is the
/// config as the run directory keeps it.
pub fn train_in_run<T: Trainable>(
    config_file: &Path,
    config: &impl TrainSections,
    tree: &serde_yaml::Value,
    client: &Client,
    build: impl FnOnce() -> dalle_xla::Result<T>,
    status: impl Fn(&StepMetrics) -> String,
) -> anyhow::Result<Trained<T>> {
    let (train, checkpoint, storage) = config.sections();
    let stop = StopHandling::install(checkpoint)?;
    let lease = RunDir::lease(&train.run_dir, storage)?;
    let mut trainer = build()?;
    let mut run = RunDir::resume(&mut trainer, &train.run_dir, storage, &serde_yaml::to_string(tree)?, checkpoint, lease)?;
    let options = FitOptions { train, checkpoint, stop: &stop.signal, title: format!("{} ({})", config_file.display(), run.location.url) };
    let outcome = fit_with_progress(&mut trainer, &mut run, &options, &client.platform(), status)?;
    Ok(Trained { trainer, run, outcome })
}

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

/// Trains `model` in `run` until `options.train.steps` or a stop, with a
/// progress bar whose message `status` writes for each logged step, and a
/// `progress` log line per logged step with its extra statistics.
fn fit_with_progress(model: &mut dyn Trainable, run: &mut RunDir, options: &FitOptions, platform: &str, status: impl Fn(&StepMetrics) -> String) -> anyhow::Result<Outcome> {
    let (steps, batch_size) = (options.train.steps, options.train.batch_size);
    tracing::info!("training {} on {} {platform} device(s), global batch {batch_size}, steps {}..{steps}", model.describe(), model.replicas(), model.step());
    let bar = progress_bar(steps, model.step());
    let on_log = |m: &StepMetrics| {
        bar.set_position(m.step);
        bar.set_message(status(m));
        let extra = m.extra.iter().map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(" ");
        bar.suspend(|| match m.eval_loss {
            Some(eval_loss) => tracing::info!(step = m.step, loss = m.loss, eval_loss, lr = m.lr, samples_per_sec = m.samples_per_sec, extra = %extra, "progress"),
            None => tracing::info!(step = m.step, loss = m.loss, lr = m.lr, samples_per_sec = m.samples_per_sec, extra = %extra, "progress"),
        });
    };
    let outcome = fit(model, run, options, on_log);
    bar.finish_and_clear();
    Ok(outcome?)
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
