//! `dalle pipeline`: the whole text-to-image recipe on the shapes world, in
//! one resumable run directory, ending with a judged report.

use super::common::{DeviceArgs, DEFAULT_CPU_DEVICES};
use super::training::StopHandling;
use super::ExitStatus;
use anyhow::Context;
use clap::Args;
use dalle_xla::pipeline::{paths, Pipeline, PipelineConfig, PipelineOutcome, PipelineRun, Stage};
use std::path::PathBuf;

#[derive(Args)]
pub struct PipelineArgs {
    /// Pipeline config (YAML).
    #[arg(long, default_value = "configs/pipeline/shapes.yaml")]
    pub config: PathBuf,
    /// Config overrides, `key.path=value` (repeatable), e.g. `--set preset=full` or `--set dallebart.train.steps=500`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory (a local folder) holding every stage's outputs and the report.
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// Redo this stage and every later one: removes their outputs first. Needed
    /// when the config differs from the run's in keys of that stage or later.
    #[arg(long, value_name = "STAGE")]
    pub restart: Option<String>,
    /// Run only this stage (skipped when complete; its inputs must exist).
    #[arg(long, value_name = "STAGE")]
    pub only: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let (config, tree) = PipelineConfig::load(&args.config, &args.overrides)?;
    let restart = args.restart.as_deref().map(Stage::parse).transpose()?;
    let only = args.only.as_deref().map(Stage::parse).transpose()?;
    let yaml = serde_yaml::to_string(&tree).context("serialising the pipeline config")?;
    let run = PipelineRun::open(&args.run, &yaml, restart)?;
    let stop = StopHandling::install(&config.vqgan.checkpoint)?;
    let client = args.device.client_or(config.cpu_devices_used().unwrap_or(DEFAULT_CPU_DEVICES))?;
    tracing::info!("pipeline (preset {}) in {} on {} {} device(s)", config.preset, args.run.display(), client.device_count(), client.platform());
    let pipeline = Pipeline { config: &config, run: &run, client: &client, stop: &stop.signal };
    match pipeline.run(only)? {
        PipelineOutcome::Finished => {
            if only.is_none() {
                println!("done: report in {}", run.path(paths::REPORT_MD).display());
            } else {
                println!("done: stage {} in {}", only.map_or("", Stage::name), run.dir.display());
            }
            Ok(())
        }
        PipelineOutcome::Stopped { stage, reason } => {
            eprintln!("stopped in stage {stage} ({reason:?}); its progress is saved. Run the same command to continue.");
            Err(ExitStatus(reason.exit_code()).into())
        }
    }
}
