//! Arguments shared by every subcommand that opens a PJRT client.

use anyhow::Context;
use clap::Args;
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use dalle_xla::runtime::CompileCache;
use std::path::PathBuf;

/// The most virtual CPU devices a client is opened with.
pub const MAX_CPU_DEVICES: usize = 256;

#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Platform whose plugin to load: cpu, xla-cpu, cuda or tpu.
    #[arg(long, default_value = "cpu", env = "DALLE_PLATFORM")]
    pub platform: String,
    /// Path of a PJRT plugin file (overrides DALLE_PJRT_PLUGIN and xla_ext/).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Number of virtual devices on CPU platforms (data-parallel replicas);
    /// default 8 (`dalle pipeline`: as many as its stages train on).
    #[arg(long)]
    pub cpu_devices: Option<usize>,
}

/// Virtual CPU devices when `--cpu-devices` is not given.
pub const DEFAULT_CPU_DEVICES: usize = 8;

impl DeviceArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_or(DEFAULT_CPU_DEVICES)
    }

    /// The client, with `default_cpu_devices` virtual devices on CPU unless
    /// `--cpu-devices` says otherwise.
    pub fn client_or(&self, default_cpu_devices: usize) -> anyhow::Result<Client> {
        let cpu_devices = self.cpu_devices.unwrap_or(default_cpu_devices);
        // Each virtual device costs start-up time and threads; thousands take minutes.
        if self.platform.contains("cpu") && !(1..=MAX_CPU_DEVICES).contains(&cpu_devices) {
            anyhow::bail!("--cpu-devices must be between 1 and {MAX_CPU_DEVICES}, got {cpu_devices}");
        }
        let options = if self.platform.contains("cpu") { ClientOptions::cpu_devices(cpu_devices) } else { ClientOptions::default() };
        let client = open_client(&self.platform, self.plugin.as_deref(), &options)
            .with_context(|| format!("opening the PJRT client for platform '{}'", self.platform))?;
        // DALLE_COMPILE_CACHE: a directory or `off`; default ~/.cache/dalle-xla/compile.
        let cache = CompileCache::from_env();
        match &cache {
            Some(c) => tracing::debug!("compile cache: {} (limit {} bytes)", c.dir().display(), c.max_bytes()),
            None => tracing::debug!("compile cache: off"),
        }
        Ok(client.with_compile_cache(cache))
    }
}
