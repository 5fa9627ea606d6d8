//! `dalle tokenizer`: train a BART-style byte-level BPE `tokenizer.json` on
//! captions: a text file with one caption per line, or the captions of an
//! image dataset (a `path,caption` CSV such as the shapes dataset's
//! `captions.csv`, or a folder with a `.txt` caption beside each image).

use anyhow::Context;
use clap::Args;
use dalle_xla::data::images::ImageIndex;
use dalle_xla::data::train_tokenizer;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TokenizerArgs {
    /// Captions: a text file (one caption per line), a `path,caption` .csv file, or an image folder.
    #[arg(long)]
    captions: PathBuf,
    /// Vocabulary size, special tokens included (at least 261: 256 bytes + 5 special tokens).
    #[arg(long, default_value_t = 16384)]
    vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: TokenizerArgs) -> anyhow::Result<()> {
    let is_csv = args.captions.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (info, skipped) = if is_csv || args.captions.is_dir() {
        from_image_dataset(&args)?
    } else if args.captions.is_file() {
        (train_tokenizer(&args.captions, args.vocab_size, &args.out)?, 0)
    } else {
        anyhow::bail!("captions file {} does not exist", args.captions.display());
    };
    let mut skips = Vec::new();
    if info.skipped_blank > 0 {
        skips.push(format!("{} blank line(s)", info.skipped_blank));
    }
    if skipped > 0 {
        skips.push(format!("{skipped} image(s) without a caption"));
    }
    let skips = match skips.is_empty() {
        true => String::new(),
        false => format!(" (skipped {})", skips.join(", ")),
    };
    println!("trained on {} captions from {}{skips}", info.captions, args.captions.display());
    if info.vocab_size < args.vocab_size {
        println!("vocabulary: {} tokens (asked for {}; these captions hold no more merges)", info.vocab_size, args.vocab_size);
    } else {
        println!("vocabulary: {} tokens", info.vocab_size);
    }
    println!("wrote {} (use it as data.tokenizer)", args.out.display());
    Ok(())
}

/// Trains on the captions of an image dataset; also returns how many images had none.
fn from_image_dataset(args: &TokenizerArgs) -> anyhow::Result<(dalle_xla::data::TrainedInfo, usize)> {
    let index = ImageIndex::open(&args.captions)?;
    for skip in index.skipped.iter().take(3) {
        tracing::warn!("skipped: {skip}");
    }
    if index.records.is_empty() {
        anyhow::bail!("{} has no captions (no image with a non-empty caption)", args.captions.display());
    }
    // The trainer reads one caption per line: hand it the captions as such a file, beside the output.
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let lines = scratch_path(&args.out);
    let joined: String = index.records.iter().map(|r| r.caption.replace(['\n', '\r'], " ") + "\n").collect();
    std::fs::write(&lines, joined).with_context(|| format!("cannot write {}", lines.display()))?;
    let trained = train_tokenizer(&lines, args.vocab_size, &args.out);
    // Removed whether or not training worked: a leftover scratch file would only confuse.
    let _ = std::fs::remove_file(&lines);
    Ok((trained?, index.skipped.len()))
}

/// A hidden file next to `out`, so it lands on the same disk and is found if a run is killed.
fn scratch_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokenizer.json".into());
    out.with_file_name(format!(".{name}.captions.tmp"))
}
