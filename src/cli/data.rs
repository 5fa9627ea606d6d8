//! `dalle data ...`: make and check the shapes dataset, inspect dataset files.

mod inspect;

use super::ExitStatus;
use anyhow::Context;
use clap::{Args, Subcommand};
use dalle_xla::data::shapes;
use std::path::PathBuf;

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Generate the shapes dataset (images, captions and captions.csv).
    ///
    /// Writes NNNNNN.png with NNNNNN.txt (its caption) beside it and captions.csv (path,caption).
    /// Resumable: images already present and correct are kept.
    Shapes(ShapesArgs),
    /// Check a caption against an image of the shapes dataset (exit 0 holds, 1 does not, 2 error).
    ///
    /// Exit status: 0 the caption holds, 1 it does not, 2 an error (unreadable image, unparsable caption).
    ShapesCheck(ShapesCheckArgs),
    /// Count rows and bad rows of parquet/JSONL dataset files and show the first rows.
    Inspect(inspect::InspectArgs),
}

#[derive(Args)]
struct ShapesArgs {
    /// Number of images.
    #[arg(long)]
    n: usize,
    /// Image width and height in pixels (16 to 4096).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Dataset seed: image i is a function of (seed, i) alone.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct ShapesCheckArgs {
    /// Image file (PNG or JPEG).
    image: PathBuf,
    /// Caption to check, e.g. "a small red circle at the top left".
    caption: String,
}

/// Above this an image no longer fits comfortably in memory (and the
/// detector's rules were only measured up to 256 px).
const MAX_SHAPES_SIZE: u32 = 4096;

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Shapes(a) => shapes_generate(a),
        // Errors exit 2 so that scripts can tell them from "does not hold" (1).
        DataCommand::ShapesCheck(a) => shapes_check(a).map_err(|e| {
            if e.is::<ExitStatus>() {
                return e;
            }
            eprintln!("error: {e:#}");
            ExitStatus(2).into()
        }),
        DataCommand::Inspect(a) => inspect::run(a),
    }
}

fn shapes_generate(args: ShapesArgs) -> anyhow::Result<()> {
    if args.n == 0 {
        anyhow::bail!("--n must be at least 1 image");
    }
    if args.size > MAX_SHAPES_SIZE {
        anyhow::bail!("--size must be at most {MAX_SHAPES_SIZE} pixels, got {}", args.size);
    }
    tracing::info!("generating {} shapes images of {}x{} (seed {}) in {}", args.n, args.size, args.size, args.seed, args.out.display());
    let report = shapes::generate(args.n, args.size, args.seed, &args.out)
        .with_context(|| format!("generating the shapes dataset in {}", args.out.display()))?;
    println!(
        "{} images of {}x{} (seed {}) in {}: {} written, {} already present and kept",
        args.n,
        args.size,
        args.size,
        args.seed,
        args.out.display(),
        report.written,
        report.kept
    );
    println!("captions: {}", report.captions_csv.display());
    Ok(())
}

fn shapes_check(args: ShapesCheckArgs) -> anyhow::Result<()> {
    let image = image::open(&args.image).with_context(|| format!("cannot read image {}", args.image.display()))?.to_rgb8();
    let report = shapes::check(&image, &args.caption)?;
    println!("{}", report.details);
    match report.holds {
        true => Ok(()),
        // The report above is the explanation; no error message follows.
        false => Err(ExitStatus(1).into()),
    }
}
