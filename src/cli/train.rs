//! `dalle train`: train DalleBart from a YAML config with `--set` overrides,
//! resuming the run if it already has a committed checkpoint.

use super::training::{finish, train_in_run, Trained, TrainingArgs};
use clap::Args;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{StepMetrics, CONFIG_FILE, LOSS_PLOT_FILE, METRICS_FILE};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Training config (YAML).
    #[arg(long, default_value = "configs/tiny.yaml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Also keep compiled programs in the run directory (`compile-cache/`), so
    /// a fresh machine resuming the run (a new TPU VM after preemption) loads
    /// them instead of compiling; the local cache (DALLE_COMPILE_CACHE) must be on.
    #[arg(long)]
    pub compile_cache_in_run: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (config, tree) = TrainConfig::load(&args.config, &args.training.overrides())?;
    let mut client = args.training.device.client()?;
    if args.compile_cache_in_run {
        let Some(local) = client.compile_cache() else {
            anyhow::bail!("--compile-cache-in-run needs the local compile cache, but DALLE_COMPILE_CACHE turns it off");
        };
        let remote = dalle_xla::storage::open_with(&config.train.run_dir, &config.storage)?.join("compile-cache");
        tracing::info!("compiled programs are also kept in {}", remote.url);
        let cache = std::sync::Arc::new(local.with_remote(remote));
        client = client.with_compile_cache(Some(cache));
    }
    let status = |m: &StepMetrics| {
        let eval = m.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        format!("loss {:.4}{eval} lr {:.2e} {:.1} samples/s", m.loss, m.lr, m.samples_per_sec)
    };
    let Trained { trainer, run, outcome } = train_in_run(&args.config, &config, &tree, &client, || Trainer::new(&client, config.clone()), status)?;
    let skipped = trainer.data_counts().bad_rows();
    if skipped > 0 {
        tracing::warn!("{skipped} bad data rows were skipped ({})", trainer.data_counts());
    }
    finish(outcome, &run, &[CONFIG_FILE, METRICS_FILE, LOSS_PLOT_FILE], "lower optimizer.learning_rate or raise warmup")
}
