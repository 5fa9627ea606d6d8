//! The `dalle` command line: one file per subcommand, each parsing its own
//! arguments and calling the library.

mod clip;
pub mod common;
mod convert;
mod data;
mod demo;
mod generate;
mod info;
mod model_args;
mod pipeline;
mod serve;
mod sweep;
mod tokenizer;
mod train;
mod training;
mod vqgan;

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
    /// Run a hyperparameter sweep of training runs (resumes the sweep in its directory).
    Sweep(sweep::SweepArgs),
    /// Train the VQGAN image tokenizer from a YAML config (resumes the run if it has a checkpoint).
    TrainVqgan(vqgan::TrainVqganArgs),
    /// Encode an image+caption dataset into parquet shards of caption + VQGAN tokens.
    Encode(vqgan::EncodeArgs),
    /// Decode VQGAN token sequences into PNG files.
    Decode(vqgan::DecodeArgs),
    /// Generate images from prompts with a trained DalleBart and VQGAN.
    Generate(generate::GenerateArgs),
    /// Serve a demo page and an HTTP API (dalle-mini's POST /generate) for a trained model.
    Serve(serve::ServeArgs),
    /// Run the whole text-to-image recipe on the shapes world and write a judged report (resumable).
    Pipeline(pipeline::PipelineArgs),
    /// Dataset tools: generate and check the shapes dataset, inspect parquet/JSONL files.
    Data(data::DataArgs),
    /// Train a BART-style byte-level BPE tokenizer (tokenizer.json) on captions.
    Tokenizer(tokenizer::TokenizerArgs),
    /// Convert a released model directory (DalleBart, VQGAN, CLIP flax checkpoint) to safetensors + config + tokenizer.
    Convert(convert::ConvertArgs),
    /// Export a DalleBart run's newest checkpoint (or a model directory) as a dalle-mini directory (config.json + flax_model.msgpack).
    Export(convert::ExportArgs),
    /// CLIP tools: score images against prompts.
    Clip(clip::ClipArgs),
    /// Train CLIP contrastively on captioned images from a YAML config (resumes the run if it has a checkpoint).
    TrainClip(clip::TrainClipArgs),
}

/// An error that ends the process with a particular exit status (after its message, if any, was printed).
#[derive(Debug)]
pub struct ExitStatus(pub i32);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

/// Whether an error is a wait that gave way to a stop request (SIGTERM, SIGINT, a preemption notice).
pub fn was_stopped(error: &anyhow::Error) -> bool {
    use dalle_xla::storage::StorageError;
    error.chain().any(|e| {
        matches!(e.downcast_ref::<StorageError>(), Some(StorageError::Interrupted { .. }))
            || matches!(e.downcast_ref::<dalle_xla::Error>(), Some(dalle_xla::Error::Stopped(_)) | Some(dalle_xla::Error::Storage(StorageError::Interrupted { .. })))
    })
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Info(a) => info::run(a),
        Command::Train(a) => train::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::TrainVqgan(a) => vqgan::train(a),
        Command::Encode(a) => vqgan::encode(a),
        Command::Decode(a) => vqgan::decode(a),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Pipeline(a) => pipeline::run(a),
        Command::Data(a) => data::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Convert(a) => convert::convert(a),
        Command::Export(a) => convert::export(a),
        Command::Clip(a) => clip::run(a),
        Command::TrainClip(a) => clip::train(a),
    }
}

