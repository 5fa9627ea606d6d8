//! `dalle data ...`: make and check the shapes dataset, inspect dataset files.

mod inspect;

use super::common::DeviceArgs;
use super::ExitStatus;
use anyhow::Context;
use clap::{Args, Subcommand};
use dalle_xla::data::images::ImageIndex;
use dalle_xla::data::shapes;
use dalle_xla::models::vqgan::{open_vqgan, VqganCodec};
use dalle_xla::pipeline::{judge, reconstruct, row_scores, write_atomically, Judgement};
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
    /// Judge every captioned image of a shapes folder, or its VQGAN reconstructions, with the checker.
    ///
    /// Prints the share of images whose caption holds, overall and per attribute (count,
    /// shape, colour, size, position): for the images themselves (the checker's ceiling) and,
    /// with --vqgan, for their round trip through the tokenizer (its ceiling).
    ShapesJudge(ShapesJudgeArgs),
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

#[derive(Args)]
struct ShapesJudgeArgs {
    /// Shapes folder (from `dalle data shapes`): NNNNNN.png with NNNNNN.txt captions.
    #[arg(long)]
    images: PathBuf,
    /// Judge the first N images (default: all).
    #[arg(long)]
    n: Option<usize>,
    /// A VQGAN (train-vqgan run directory or model directory) whose reconstructions are judged too.
    #[arg(long)]
    vqgan: Option<String>,
    /// Write the reconstructions here as NNNNNN.png with NNNNNN.txt captions (a new or empty folder).
    #[arg(long, requires = "vqgan")]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
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
        DataCommand::ShapesJudge(a) => shapes_judge(a),
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

fn shapes_judge(args: ShapesJudgeArgs) -> anyhow::Result<()> {
    let index = ImageIndex::open(&args.images).with_context(|| format!("reading the shapes folder {}", args.images.display()))?;
    let available = index.records.len();
    let n = args.n.unwrap_or(available);
    if n == 0 || n > available {
        anyhow::bail!("--n must be between 1 and the {available} captioned images of {}, got {n}", args.images.display());
    }
    let records = &index.records[..n];
    let images = records
        .iter()
        .map(|r| Ok(image::open(&r.path).with_context(|| format!("cannot read image {}", r.path.display()))?.to_rgb8()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let judge_all = |images: &[image::RgbImage]| -> anyhow::Result<Vec<Judgement>> {
        records.iter().zip(images).map(|(r, im)| judge(im, &r.caption).with_context(|| format!("judging {}", r.path.display()))).collect()
    };
    let mut rows = vec![row_scores("real", "", &judge_all(&images)?)];
    if let Some(vqgan) = &args.vqgan {
        if let Some(out) = &args.out {
            let taken = std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(false);
            if taken {
                anyhow::bail!("--out {} is not empty: give a new or empty folder", out.display());
            }
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        }
        let client = args.device.client()?;
        let (config, weights, origin) = open_vqgan(vqgan).with_context(|| format!("opening the VQGAN {vqgan}"))?;
        let codec = VqganCodec::new(&client, config, &weights, &origin, 8, client.device_count())?;
        let reconstructed = reconstruct(&codec, &images)?;
        if let Some(out) = &args.out {
            // Numbered in judging order with their captions beside them, so
            // the folder is itself a captioned image folder.
            for (i, (im, r)) in reconstructed.iter().zip(records).enumerate() {
                let stem = out.join(shapes::file_stem(i));
                let mut png = Vec::new();
                im.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).context("encoding a reconstruction as PNG")?;
                write_atomically(&stem.with_extension("png"), &png)?;
                write_atomically(&stem.with_extension("txt"), r.caption.as_bytes())?;
            }
        }
        rows.push(row_scores("vqgan", "", &judge_all(&reconstructed)?));
    }
    let skipped = match index.skipped.len() {
        0 => String::new(),
        k => format!(" ({k} without a caption left out)"),
    };
    println!("{n} images of {}{skipped}", args.images.display());
    println!("{:<6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9}", "row", "holds", "count", "shape", "colour", "size", "position");
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    for r in &rows {
        let a = &r.attributes;
        println!("{:<6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9}", r.row, pct(r.fidelity), pct(a.count), pct(a.shape), pct(a.colour), pct(a.size), pct(a.position));
    }
    Ok(())
}
