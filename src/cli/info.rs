//! `dalle info`: the plugin and its devices, and with `--config` the model's parameters.

use super::common::DeviceArgs;
use anyhow::Context;
use clap::Args;
use dalle_xla::models::dallebart::TrainConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A training config: print its model's parameter count instead of the devices.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Config overrides, `key.path=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        let (config, _) = TrainConfig::load(path, &args.overrides)?;
        let groups = dalle_xla::models::dallebart::parameter_groups(&config.model).context("building the model graph")?;
        let total: i64 = groups.iter().map(|(_, n)| n).sum();
        println!("model {} (d_model {}, {}+{} layers)", path.display(), config.model.d_model, config.model.encoder_layers, config.model.decoder_layers);
        for (name, n) in &groups {
            println!("  {name:<10} {:>15} parameters ({:.1}M)", group_digits(*n), *n as f64 / 1e6);
        }
        println!("  {:<10} {:>15} parameters ({:.1}M)", "total", group_digits(total), total as f64 / 1e6);
        return Ok(());
    }
    let client = args.device.client()?;
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    println!("plugin   {} (PJRT C API {major}.{minor})", plugin.path().display());
    println!("platform {} {}", client.platform(), client.platform_version());
    for d in client.devices() {
        println!("device   {} ({})", d.id, d.kind);
    }
    Ok(())
}

/// `437806080` -> `437,806,080`.
fn group_digits(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
