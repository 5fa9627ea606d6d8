//! `dalle sweep`: a hyperparameter sweep of real training runs, resumable by
//! running the same command again.

use super::common::DeviceArgs;
use super::ExitStatus;
use clap::Args;
use dalle_xla::checkpoint::{StopSignal, EXIT_PREEMPTED};
use dalle_xla::sweep::{report, run_sweep, run_sweep_parallel, SweepConfig, TrainerRunner, TrialRunner};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SweepArgs {
    /// Sweep file (YAML): base training config, search space, strategy, objective.
    #[arg(long, default_value = "configs/sweeps/lr.yaml")]
    pub config: PathBuf,
    /// Sweep directory (local path, gs://, s3://): state, trial runs and results.
    /// Default: checkpoints/sweeps/<sweep file name>.
    #[arg(long)]
    pub dir: Option<String>,
    /// Sweep file overrides, `key.path=value` (repeatable), e.g. `--set num_trials=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn default_dir(config: &Path) -> String {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
    format!("checkpoints/sweeps/{stem}")
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    let sweep = SweepConfig::load(&args.config, &args.overrides)?;
    let url = args.dir.clone().unwrap_or_else(|| default_dir(&args.config));
    let dir = dalle_xla::storage::open(&url)?;
    // One `dalle sweep` per sweep directory; each trial's run directory has its own lease too.
    let _lease = dalle_xla::storage::Lease::acquire(&dir, &dalle_xla::storage::LeaseOptions::default(), "dalle sweep")?;
    let client = args.device.client()?;
    sweep.parallelism.check_devices(client.device_count())?;
    let stop = StopSignal::new();
    stop.install_os_handlers()?;

    let parallel = sweep.parallelism.trials_in_parallel;
    tracing::info!(
        "sweep {} ({} strategy) in {url}: {} at a time on {} {} device(s)",
        args.config.display(),
        sweep.strategy.name(),
        parallel,
        client.device_count(),
        client.platform()
    );
    let runner = || TrainerRunner::new(client.clone()).with_stop_signal(stop.clone());
    let result = if parallel > 1 {
        let factory = |_slot: usize| -> dalle_xla::Result<Box<dyn TrialRunner + Send>> { Ok(Box::new(runner())) };
        run_sweep_parallel(&sweep, &dir, &factory)
    } else {
        run_sweep(&sweep, &dir, &mut runner())
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) if stop.is_set() => {
            eprintln!("{e}");
            return Err(ExitStatus(EXIT_PREEMPTED).into());
        }
        Err(e) => return Err(e.into()),
    };

    println!("{}", report::markdown_table(&sweep, &summary.trials));
    for skipped in &summary.report.skipped {
        eprintln!("not written: {skipped}");
    }
    println!("results in {url}: {}", summary.report.written.join(", "));
    if let Some(best) = &summary.best {
        let best_yaml = format!("{}/{}", url.trim_end_matches('/'), report::BEST_YAML);
        println!("best trial {best}; its config, ready to train: dalle train --config {best_yaml}");
    }
    Ok(())
}
