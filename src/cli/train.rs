//! `dalle train`: train DalleBart from a YAML config with `--set` overrides,
//! resuming the run if it already has a committed checkpoint.

use super::common::DeviceArgs;
use super::training::{finish, fit_with_progress, overrides_with_run, Launch, StopHandling};
use clap::Args;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{FitOptions, RunDir, StepMetrics, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE};
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
    let (config, tree) = TrainConfig::load(&args.config, &overrides_with_run(&args.overrides, &args.run))?;
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
    let launch = Launch {
        what: format!("a {:.2}M-parameter DalleBart", trainer.parameter_count() as f64 / 1e6),
        replicas: trainer.replicas,
        platform: &client.platform(),
        batch_size: config.train.batch_size,
    };
    let status = |m: &StepMetrics| {
        let eval = m.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        format!("loss {:.4}{eval} lr {:.2e} {:.1} samples/s", m.loss, m.lr, m.samples_per_sec)
    };
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop.signal, title: format!("{} ({})", args.config.display(), run.location.url) };
    let outcome = fit_with_progress(&mut trainer, &mut run, &options, launch, status)?;
    let skipped = trainer.data_counts().bad_rows();
    if skipped > 0 {
        tracing::warn!("{skipped} bad data rows were skipped ({})", trainer.data_counts());
    }
    finish(outcome, &run, &[CONFIG_FILE, METRICS_FILE, LOSS_PLOT_FILE], "lower optimizer.learning_rate or raise warmup")
}
