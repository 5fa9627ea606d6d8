//! `dalle train`: train DalleBart from a YAML config with `--set` overrides,
//! resuming the run if it already has a committed checkpoint.

use super::common::DeviceArgs;
use super::training::{finish, open_run, progress_bar, StopHandling};
use clap::Args;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{fit, FitOptions, StepMetrics};
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
    let stop = StopHandling::install(&config.checkpoint)?;
    let client = args.device.client()?;
    let mut trainer = Trainer::new(&client, config.clone())?;
    let mut run = open_run(&mut trainer, &config.train.run_dir, &config.storage, &serde_yaml::to_string(&tree)?, &config.checkpoint)?;
    tracing::info!(
        "training {:.2}M parameters on {} {} device(s), global batch {}, steps {}..{}",
        trainer.parameter_count() as f64 / 1e6,
        trainer.replicas,
        client.platform(),
        config.train.batch_size,
        trainer.step,
        config.train.steps
    );

    let bar = progress_bar(config.train.steps, trainer.step);
    let on_log = |m: &StepMetrics| {
        bar.set_position(m.step);
        let eval = m.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {:.4}{eval} lr {:.2e} {:.1} samples/s", m.loss, m.lr, m.samples_per_sec));
        bar.suspend(|| tracing::info!(step = m.step, loss = m.loss, eval_loss = ?m.eval_loss, lr = m.lr, samples_per_sec = m.samples_per_sec, "progress"));
    };
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop.signal, title: format!("{} ({})", args.config.display(), run.location.url) };
    let outcome = fit(&mut trainer, &mut run, &options, on_log)?;
    bar.finish_and_clear();
    let skipped = trainer.data_counts().bad_rows();
    if skipped > 0 {
        tracing::warn!("{skipped} bad data rows were skipped: {:?}", trainer.data_counts());
    }
    finish(outcome, &run, "config, metrics.jsonl, loss.png and checkpoints", "lower optimizer.learning_rate or raise warmup")
}
