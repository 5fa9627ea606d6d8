//! Arguments shared by every subcommand that opens a PJRT client.

use anyhow::Context;
use clap::Args;
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Platform whose plugin to load: cpu, xla-cpu, cuda or tpu.
    #[arg(long, default_value = "cpu", env = "DALLE_PLATFORM")]
    pub platform: String,
    /// Path of a PJRT plugin file (overrides DALLE_PJRT_PLUGIN and xla_ext/).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Number of virtual devices on CPU platforms (data-parallel replicas).
    #[arg(long, default_value_t = 8)]
    pub cpu_devices: usize,
}

impl DeviceArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let options = if self.platform.contains("cpu") { ClientOptions::cpu_devices(self.cpu_devices) } else { ClientOptions::default() };
        open_client(&self.platform, self.plugin.as_deref(), &options)
            .with_context(|| format!("opening the PJRT client for platform '{}'", self.platform))
    }
}
