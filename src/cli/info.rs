//! `dalle info`: devices of a platform.

use super::common::DeviceArgs;
use clap::Args;

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let client = args.device.client()?;
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    println!("plugin   {} (PJRT C API {major}.{minor})", plugin.path().display());
    println!("platform {} {}", client.platform(), client.platform_version());
    for d in client.devices() {
        println!("device   {d:?}");
    }
    Ok(())
}
