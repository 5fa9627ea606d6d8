//! `dalle tokenizer`: train a BART-style byte-level BPE `tokenizer.json` on
//! captions, from a text file (one caption per line) or the `caption` column
//! of a CSV file such as the shapes dataset's `captions.csv`.

use anyhow::Context;
use clap::Args;
use dalle_xla::data::train_tokenizer;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TokenizerArgs {
    /// Captions: a text file with one caption per line, or a .csv file with a `caption` column.
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
    if !args.captions.is_file() {
        anyhow::bail!("captions file {} does not exist or is not a file", args.captions.display());
    }
    let is_csv = args.captions.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let info = if is_csv {
        let text = std::fs::read_to_string(&args.captions).with_context(|| format!("cannot read captions {}", args.captions.display()))?;
        let captions = caption_column(&text).with_context(|| format!("captions file {}", args.captions.display()))?;
        if captions.iter().all(|c| c.trim().is_empty()) {
            anyhow::bail!("captions file {} has no non-blank captions", args.captions.display());
        }
        // The trainer reads one caption per line: hand it the column as such a file, beside the output.
        if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let lines = scratch_path(&args.out);
        let joined: String = captions.iter().map(|c| c.replace(['\n', '\r'], " ") + "\n").collect();
        std::fs::write(&lines, joined).with_context(|| format!("cannot write {}", lines.display()))?;
        let trained = train_tokenizer(&lines, args.vocab_size, &args.out);
        // Removed whether or not training worked: a leftover scratch file would only confuse.
        let _ = std::fs::remove_file(&lines);
        trained?
    } else {
        train_tokenizer(&args.captions, args.vocab_size, &args.out)?
    };
    let blank = match info.skipped_blank {
        0 => String::new(),
        n => format!(", {n} blank skipped"),
    };
    println!("trained on {} captions from {}{blank}", info.captions, args.captions.display());
    if info.vocab_size < args.vocab_size {
        println!("vocabulary: {} tokens (asked for {}; these captions hold no more merges)", info.vocab_size, args.vocab_size);
    } else {
        println!("vocabulary: {} tokens", info.vocab_size);
    }
    println!("wrote {} (use it as data.tokenizer)", args.out.display());
    Ok(())
}

/// A hidden file next to `out`, so it lands on the same disk and is found if a run is killed.
fn scratch_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokenizer.json".into());
    out.with_file_name(format!(".{name}.captions.tmp"))
}

/// The values of the `caption` column, in order.
fn caption_column(text: &str) -> anyhow::Result<Vec<String>> {
    let mut records = parse_csv(text)?.into_iter();
    let header = records.next().context("it is empty; expected a header line with a `caption` column")?;
    let column = header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case("caption"))
        .with_context(|| format!("its header {header:?} has no `caption` column"))?;
    let mut captions = Vec::new();
    for (i, record) in records.enumerate() {
        let caption = record.get(column).with_context(|| {
            format!("row {} after the header has {} field(s), so no `caption` (field {})", i + 1, record.len(), column + 1)
        })?;
        captions.push(caption.clone());
    }
    Ok(captions)
}

/// RFC 4180 records: fields separated by commas, optionally in double quotes
/// (which may hold commas, line breaks and `""` for a quote). Blank lines are skipped.
fn parse_csv(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut quoted = false;
    let mut quote_start = 0;
    let mut end_record = |record: &mut Vec<String>, field: &mut String| {
        record.push(std::mem::take(field));
        let done = std::mem::take(record);
        if !(done.len() == 1 && done[0].is_empty()) {
            records.push(done);
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                        anyhow::bail!("line {line}: a closing quote must end the field");
                    }
                }
                c => {
                    line += (c == '\n') as usize;
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                quote_start = line;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                end_record(&mut record, &mut field);
                line += 1;
            }
            c => field.push(c),
        }
    }
    if quoted {
        anyhow::bail!("the quoted field opened on line {quote_start} is never closed");
    }
    if !field.is_empty() || !record.is_empty() {
        end_record(&mut record, &mut field);
    }
    Ok(records)
}
