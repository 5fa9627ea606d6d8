//! `dalle train`: train DalleBart from a YAML config with `--set` overrides.

use super::common::DeviceArgs;
use anyhow::Context;
use clap::Args;
use dalle_xla::data::Synthetic;
use dalle_xla::train::{BatchSource, MetricsWriter, SyntheticSource, TrainConfig, Trainer};
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
    /// Run directory (overrides `train.run_dir`).
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn synthetic_sources(config: &TrainConfig) -> (Box<dyn BatchSource>, Box<dyn BatchSource>) {
    let task = |seed: u64| Synthetic {
        seed,
        text_vocab: config.model.encoder_vocab_size,
        image_vocab: config.model.image_vocab_size,
        text_length: config.model.max_text_length as usize,
        image_length: config.model.image_length as usize,
        num_captions: config.data.num_captions,
    };
    // The eval stream uses the same captions in another order: it measures how well the task is learnt.
    let train = SyntheticSource { task: task(config.train.seed), next: 0 };
    let eval = SyntheticSource { task: task(config.train.seed), next: config.data.num_captions / 2 };
    (Box::new(train), Box::new(eval))
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(run) = &args.run {
        overrides.push(format!("train.run_dir={run}"));
    }
    let (config, _) = TrainConfig::load(&args.config, &overrides)?;
    let client = args.device.client()?;
    let (train, eval) = synthetic_sources(&config);
    let run_dir = PathBuf::from(&config.train.run_dir);
    let mut metrics = MetricsWriter::new(&run_dir)?;
    std::fs::write(run_dir.join("config.yaml"), serde_yaml::to_string(&config)?)
        .with_context(|| format!("writing the config into {}", run_dir.display()))?;
    let mut trainer = Trainer::new(&client, config.clone(), train, Some(eval))?;
    tracing::info!("training {} parameters on {} device(s) for {} steps", trainer.parameter_count(), trainer.replicas, config.train.steps);

    let bar = ProgressBar::new(config.train.steps);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("valid template"));
    bar.set_position(trainer.step);
    trainer.run(&mut metrics, |m| {
        bar.set_position(m.step);
        let eval = m.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {:.4}{eval} lr {:.2e} {:.1} samples/s", m.loss, m.lr, m.samples_per_sec));
        bar.suspend(|| tracing::info!(step = m.step, loss = m.loss, eval_loss = ?m.eval_loss, lr = m.lr, samples_per_sec = m.samples_per_sec, "progress"));
    })?;
    bar.finish();
    println!("done: {} steps, metrics in {}", trainer.step, metrics.path().display());
    Ok(())
}
