//! `dalle train`: train DalleBart from a YAML config with `--set` overrides,
//! resuming the run if it already has a committed checkpoint.

use super::common::DeviceArgs;
use super::training::{finish, progress_bar, StopHandling};
use clap::Args;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{fit, FitOptions, RunDir, StepMetrics, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE};
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
    /// Also keep compiled programs in the run directory (`compile-cache/`), so
    /// a fresh machine resuming the run (a new TPU VM after preemption) loads
    /// them instead of compiling; the local cache (DALLE_COMPILE_CACHE) must be on.
    #[arg(long)]
    pub compile_cache_in_run: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(run) = &args.run {
        overrides.push(format!("train.run_dir={run}"));
    }
    let (config, tree) = TrainConfig::load(&args.config, &overrides)?;
    let stop = StopHandling::install(&config.checkpoint)?;
    // A bad run URL, storage setting or credential should fail now, not after compiling the model.
    let lease = RunDir::lease(&config.train.run_dir, &config.storage)?;
    let mut client = args.device.client()?;
    if args.compile_cache_in_run {
        let Some(local) = client.compile_cache() else {
            anyhow::bail!("--compile-cache-in-run needs the local compile cache, but DALLE_COMPILE_CACHE turns it off");
        };
        let remote = dalle_xla::storage::open_with(&config.train.run_dir, &config.storage)?.join("compile-cache");
        tracing::info!("compiled programs are also kept in {}", remote.url);
        let cache = std::sync::Arc::new(local.with_remote(remote));
        client = client.with_compile_cache(Some(cache));
    }
    let mut trainer = Trainer::new(&client, config.clone())?;
    let mut run = RunDir::resume(&mut trainer, &config.train.run_dir, &config.storage, &serde_yaml::to_string(&tree)?, &config.checkpoint, lease)?;
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
        bar.suspend(|| match m.eval_loss {
            Some(eval_loss) => tracing::info!(step = m.step, loss = m.loss, eval_loss, lr = m.lr, samples_per_sec = m.samples_per_sec, "progress"),
            None => tracing::info!(step = m.step, loss = m.loss, lr = m.lr, samples_per_sec = m.samples_per_sec, "progress"),
        });
    };
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop.signal, title: format!("{} ({})", args.config.display(), run.location.url) };
    let outcome = fit(&mut trainer, &mut run, &options, on_log)?;
    bar.finish_and_clear();
    let skipped = trainer.data_counts().bad_rows();
    if skipped > 0 {
        tracing::warn!("{skipped} bad data rows were skipped ({})", trainer.data_counts());
    }
    finish(outcome, &run, &[CONFIG_FILE, METRICS_FILE, LOSS_PLOT_FILE], "lower optimizer.learning_rate or raise warmup")
}
