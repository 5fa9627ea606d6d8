//! `dalle data inspect`: what the training loader would make of dataset files,
//! file by file: rows, valid rows, bad rows by kind, and the first rows.

use clap::{Args, ValueEnum};
use dalle_xla::data::{resolve, BadRow, DataCounts, DataFile, DataFormat, ParsedRow, RowSpec};
use dalle_xla::models::dallebart::DalleBartConfig;
use dalle_xla::models::dallebart::TrainConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// Files, directories, `*`/`?` patterns or storage URLs (gs://, s3://).
    /// Without any, the config's data.train_files and data.eval_files.
    #[arg(required_unless_present = "config")]
    files: Vec<String>,
    /// Training config: check rows against its model's image_length and image_vocab_size
    /// (and, without FILES, inspect its data files).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Config overrides, `key.path=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Image tokens every row must have (default: the config's, else dalle-mini's 256).
    #[arg(long)]
    image_length: Option<usize>,
    /// Image tokens must lie in [0, image-vocab) (default: the config's, else dalle-mini's 16384).
    #[arg(long)]
    image_vocab: Option<i64>,
    /// How to decode the files (default: the config's data.format, else by extension).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Rows to show from the start of each file, and bad rows to show in each.
    #[arg(long, default_value_t = 3)]
    rows: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Parquet,
    Jsonl,
}

impl From<FormatArg> for DataFormat {
    fn from(f: FormatArg) -> DataFormat {
        match f {
            FormatArg::Auto => DataFormat::Auto,
            FormatArg::Parquet => DataFormat::Parquet,
            FormatArg::Jsonl => DataFormat::Jsonl,
        }
    }
}

/// Image tokens shown for each row before eliding the rest.
const TOKENS_SHOWN: usize = 8;
/// Characters of a caption shown before eliding the rest.
const CAPTION_SHOWN: usize = 100;

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Some(TrainConfig::load(path, &args.overrides)?.0),
        None if !args.overrides.is_empty() => anyhow::bail!("--set needs --config"),
        None => None,
    };
    let model = config.as_ref().map_or_else(DalleBartConfig::mini, |c| c.model.clone());
    let spec = row_spec(&args, &model)?;
    let format = match (args.format, &config) {
        (Some(f), _) => f.into(),
        (None, Some(c)) => c.data.format,
        (None, None) => DataFormat::Auto,
    };
    let files = match &config {
        Some(c) if args.files.is_empty() => {
            if c.data.train_files.is_empty() && c.data.eval_files.is_empty() {
                anyhow::bail!("the config lists no data.train_files or data.eval_files; name the files to inspect");
            }
            let mut files = resolve(&c.data.train_files, format, "data.train_files")?;
            files.extend(resolve(&c.data.eval_files, format, "data.eval_files")?);
            files
        }
        _ => resolve(&args.files, format, "FILES")?,
    };

    println!("checking rows against image_length {} and image_vocab {}", spec.image_length, spec.image_vocab);
    let mut total = DataCounts::default();
    let mut unreadable = Vec::new();
    for file in &files {
        match file.load() {
            Ok(rows) => total_into(&mut total, &inspect_file(file, rows, &spec, args.rows)),
            Err(e) => {
                println!("{}: unreadable: {e}", file.name);
                unreadable.push(file.name.clone());
            }
        }
    }
    println!(
        "total: {} file(s), {} rows, {} valid, {} bad{}",
        files.len(),
        total.examples + total.bad_rows(),
        total.examples,
        total.bad_rows(),
        bad_summary(&total)
    );
    if !unreadable.is_empty() {
        anyhow::bail!("{} of {} file(s) could not be read: {}", unreadable.len(), files.len(), unreadable.join(", "));
    }
    Ok(())
}

fn row_spec(args: &InspectArgs, model: &DalleBartConfig) -> anyhow::Result<RowSpec> {
    let image_length = match args.image_length {
        Some(n) => n,
        None => usize::try_from(model.image_length).map_err(|_| anyhow::anyhow!("model.image_length is negative: {}", model.image_length))?,
    };
    let image_vocab = args.image_vocab.unwrap_or(model.image_vocab_size);
    if image_length == 0 {
        anyhow::bail!("--image-length must be at least 1");
    }
    if image_vocab <= 0 {
        anyhow::bail!("--image-vocab must be at least 1, got {image_vocab}");
    }
    Ok(RowSpec { image_length, image_vocab })
}

/// Prints one file's report and returns its counts (`examples` = valid rows).
fn inspect_file(file: &DataFile, rows: Vec<ParsedRow>, spec: &RowSpec, shown: usize) -> DataCounts {
    let mut counts = DataCounts::default();
    let mut first_rows = Vec::new();
    let mut bad_rows = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        let checked = row.and_then(|raw| spec.validate(raw));
        match &checked {
            Ok(_) => counts.examples += 1,
            Err(bad) => {
                counts.add_bad(bad.kind);
                // Rows in the first `shown` are printed below anyway.
                if index >= shown && bad_rows.len() < shown {
                    bad_rows.push(format!("  row {index}: {}", describe_bad(bad)));
                }
            }
        }
        if first_rows.len() < shown {
            first_rows.push(match &checked {
                Ok(record) => format!("  row {index}: {} {}", quote_caption(&record.caption), show_tokens(&record.encoding)),
                Err(bad) => format!("  row {index}: bad: {}", describe_bad(bad)),
            });
        }
    }
    println!(
        "{} ({}): {} rows, {} valid, {} bad{}",
        file.name,
        format_name(file.format),
        counts.examples + counts.bad_rows(),
        counts.examples,
        counts.bad_rows(),
        bad_summary(&counts)
    );
    for line in &first_rows {
        println!("{line}");
    }
    if !bad_rows.is_empty() {
        println!("  first bad rows after those:");
        for line in &bad_rows {
            println!("{line}");
        }
    }
    counts
}

fn total_into(total: &mut DataCounts, file: &DataCounts) {
    total.examples += file.examples;
    total.missing_caption += file.missing_caption;
    total.missing_encoding += file.missing_encoding;
    total.wrong_encoding_length += file.wrong_encoding_length;
    total.token_out_of_range += file.token_out_of_range;
    total.unparsable += file.unparsable;
}

/// ` (1 unparsable row, 2 wrong encoding length)`, or nothing without bad rows.
fn bad_summary(c: &DataCounts) -> String {
    let kinds = [
        (c.missing_caption, "missing caption"),
        (c.missing_encoding, "missing encoding"),
        (c.wrong_encoding_length, "wrong encoding length"),
        (c.token_out_of_range, "token out of range"),
        (c.unparsable, "unparsable"),
    ];
    let parts: Vec<String> = kinds.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join(", ")),
    }
}

fn describe_bad(bad: &BadRow) -> String {
    format!("{}: {}", bad.kind, bad.detail)
}

fn format_name(format: DataFormat) -> &'static str {
    match format {
        DataFormat::Parquet => "parquet",
        DataFormat::Jsonl => "jsonl",
        DataFormat::Auto => "auto",
    }
}

fn quote_caption(caption: &str) -> String {
    let mut shown: String = caption.chars().take(CAPTION_SHOWN).collect();
    if shown.len() < caption.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn show_tokens(tokens: &[i64]) -> String {
    let head: Vec<String> = tokens.iter().take(TOKENS_SHOWN).map(i64::to_string).collect();
    let more = if tokens.len() > TOKENS_SHOWN { " …" } else { "" };
    format!("[{} tokens: {}{more}]", tokens.len(), head.join(" "))
}
