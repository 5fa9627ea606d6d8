//! The `dalle` command line: one file per subcommand, each parsing its own
//! arguments and calling the library.

pub mod common;
mod demo;
mod info;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dalle", version, about = "DALL·E mini training and generation on XLA (PJRT plugins)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Compile and run a small graph (forward + gradient) on the chosen platform.
    Demo(demo::DemoArgs),
    /// Print a model config's parameter count and the devices of a platform.
    Info(info::InfoArgs),
    /// Train DalleBart from a YAML config (resumes the run if it has a checkpoint).
    Train(train::TrainArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Train(a) => train::run(a),
    }
}
