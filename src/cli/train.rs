//! `dalle train`: train DalleBart from a YAML config with `--set` overrides,
//! resuming the run if it already has a committed checkpoint.

use super::common::DeviceArgs;
use super::ExitStatus;
use clap::Args;
use dalle_xla::checkpoint::{MetadataWatcher, StopSignal};
use dalle_xla::train::{fit, FitOptions, Outcome, RunDir, StepMetrics, TrainConfig, Trainable, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Training config (YAML).
    #[arg(long, default_value = "configs/tiny.yaml")]
    pub config: PathBuf,
    /// Config overrides, `key.path=value` (repeatable), e.g. `--set optimizer.learning_rate=0.005`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory: local path, gs://bucket/prefix, s3://bucket/prefix (overrides `train.run_dir`).
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(run) = &args.run {
        overrides.push(format!("train.run_dir={run}"));
    }
    let (config, tree) = TrainConfig::load(&args.config, &overrides)?;
    // A bad run URL or storage setting should fail now, not after compiling the model.
    dalle_xla::storage::open_with(&config.train.run_dir, &config.storage)?;
    let stop = StopSignal::new();
    stop.install_os_handlers()?;
    let _watcher = if config.checkpoint.watch_metadata { Some(MetadataWatcher::start(config.checkpoint.metadata_watcher(), stop.clone())?) } else { None };

    let client = args.device.client()?;
    let mut trainer = Trainer::new(&client, config.clone())?;
    let (mut run, restored) = RunDir::open_with(&config.train.run_dir, &config.storage, &serde_yaml::to_string(&tree)?, &config.checkpoint, &trainer.tensor_types())?;
    if let Some(ckpt) = &restored {
        trainer.restore(ckpt)?;
    }
    tracing::info!(
        "training {:.2}M parameters on {} {} device(s), global batch {}, steps {}..{}",
        trainer.parameter_count() as f64 / 1e6,
        trainer.replicas,
        client.platform(),
        config.train.batch_size,
        trainer.step,
        config.train.steps
    );

    let bar = ProgressBar::new(config.train.steps);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("valid template"));
    bar.set_position(trainer.step);
    let on_log = |m: &StepMetrics| {
        bar.set_position(m.step);
        let eval = m.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {:.4}{eval} lr {:.2e} {:.1} samples/s", m.loss, m.lr, m.samples_per_sec));
        bar.suspend(|| tracing::info!(step = m.step, loss = m.loss, eval_loss = ?m.eval_loss, lr = m.lr, samples_per_sec = m.samples_per_sec, "progress"));
    };
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: format!("{} ({})", args.config.display(), run.location.url) };
    let outcome = fit(&mut trainer, &mut run, &options, on_log)?;
    bar.finish_and_clear();
    let skipped = trainer.data_counts().bad_rows();
    if skipped > 0 {
        tracing::warn!("{skipped} bad data rows were skipped: {:?}", trainer.data_counts());
    }
    match outcome {
        Outcome::Finished { step } => {
            println!("done: {step} steps; config, metrics.jsonl, loss.png and checkpoints in {}", run.location.url);
            Ok(())
        }
        Outcome::Stopped { step, reason } => {
            eprintln!("stopped at step {step} ({reason:?}); committed a checkpoint in {}. Run the same command to resume.", run.location.url);
            Err(ExitStatus(reason.exit_code()).into())
        }
        Outcome::Diverged { step, loss } => anyhow::bail!(
            "the loss became {loss} at step {step}; the last good checkpoint is in {} (lower optimizer.learning_rate or raise warmup)",
            run.location.url
        ),
    }
}
