//! Turning an image+caption dataset into the seq2seq trainer's input
//! (parquet shards of `caption` + `encoding`), and token files back into images.
//!
//! Encoding is resumable: the records are split into shards in a fixed order
//! (the image index's), each shard is written to its final name in one put
//! only once all of its images are encoded, and shards already present in the
//! output are skipped.

use super::codec::VqganCodec;
use crate::data::images::{ImageIndex, ImageLoader, LoaderOptions, SkipReport};
use crate::data::{resolve, write_dataset, DataFormat, Record};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::storage::Location;

/// What one [`encode_dataset`] call did.
#[derive(Clone, Debug, Default)]
pub struct EncodeReport {
    pub shards_total: usize,
    pub shards_written: usize,
    /// Shards found complete in the output and left alone.
    pub shards_skipped: usize,
    pub images_encoded: usize,
    /// Images left out (unreadable or without a caption), each named.
    pub skipped: SkipReport,
}

/// File name of shard `index` of `count`.
pub fn shard_name(index: usize, count: usize) -> String {
    format!("shard-{index:05}-of-{count:05}.parquet")
}

/// Encodes every image of `index` with `codec` into parquet shards of at most
/// `shard_size` records under `out`; `progress` sees the number of records
/// done (encoded, skipped or already present) after each batch.
pub fn encode_dataset(codec: &VqganCodec, index: ImageIndex, out: &Location, shard_size: usize, workers: usize, mut progress: impl FnMut(usize)) -> Result<EncodeReport> {
    if shard_size == 0 {
        return Err(Error::Invalid("the shard size must be at least 1".into()));
    }
    let count = index.records.len().div_ceil(shard_size);
    let mut report = EncodeReport { shards_total: count, skipped: SkipReport { skipped: index.skipped.clone() }, ..Default::default() };
    if count == 0 {
        return Err(Error::Invalid(format!("the image dataset has no image with a caption ({})", report.skipped)));
    }
    let mut done = 0;
    for (i, records) in index.records.chunks(shard_size).enumerate() {
        let name = shard_name(i, count);
        if out.get(&name).map_err(|e| Error::Invalid(e.to_string()))?.is_some() {
            report.shards_skipped += 1;
            done += records.len();
            progress(done);
            continue;
        }
        let shard = ImageIndex { records: records.to_vec(), skipped: Vec::new() };
        let options = LoaderOptions {
            resolution: codec.config.resolution as u32,
            batch_size: codec.batch_size(),
            shuffle: false,
            epochs: Some(1),
            drop_last: false,
            workers,
            ..Default::default()
        };
        let mut loader = ImageLoader::start(shard, options)?;
        let mut rows = Vec::with_capacity(records.len());
        let result = (&mut loader).try_for_each(|batch| -> Result<()> {
            let batch = batch?;
            let tokens = codec.encode(&batch.pixels)?;
            rows.extend(token_rows(&tokens)?.into_iter().zip(batch.captions).map(|(encoding, caption)| Record { caption, encoding }));
            progress(done + rows.len());
            Ok(())
        });
        let skipped = loader.skipped().skipped;
        match result {
            Ok(()) => {}
            // A shard whose images are all unreadable still counts as done.
            Err(e) if !skipped.is_empty() && rows.is_empty() => tracing::warn!("shard {name}: {e}"),
            Err(e) => return Err(e),
        }
        done += records.len();
        progress(done);
        report.skipped.skipped.extend(skipped);
        report.images_encoded += rows.len();
        // One put of the finished shard: a shard under its final name is always complete.
        write_dataset(&format!("{}/{name}", out.url.trim_end_matches('/')), DataFormat::Parquet, &rows)?;
        report.shards_written += 1;
    }
    Ok(report)
}

/// Rows of an `[N, L]` integer tensor.
fn token_rows(tokens: &HostTensor) -> Result<Vec<Vec<i64>>> {
    let width = tokens.shape.get(1).copied().unwrap_or(0).max(1) as usize;
    Ok(tokens.cast(crate::DType::I64).to_vec::<i64>()?.chunks(width).map(<[i64]>::to_vec).collect())
}

/// Token sequences to decode, with their captions when the file has them:
/// a dataset file (`.parquet` / `.jsonl` with `encoding` and optionally
/// `caption`), or a text file with one whitespace- or comma-separated
/// sequence per line. Bad rows are errors naming the row.
pub fn read_tokens(path_or_url: &str, image_length: usize) -> Result<Vec<(Option<String>, Vec<i64>)>> {
    let lower = path_or_url.to_ascii_lowercase();
    let rows: Vec<(Option<String>, Vec<i64>)> = if [".parquet", ".jsonl", ".json", ".ndjson"].iter().any(|e| lower.ends_with(e)) {
        let files = resolve(&[path_or_url.to_string()], DataFormat::Auto, "--tokens")?;
        let mut rows = Vec::new();
        for file in files {
            for (i, row) in file.load()?.into_iter().enumerate() {
                let row = row.map_err(|bad| Error::Invalid(format!("{} row {i}: {}", file.name, bad.detail)))?;
                let encoding = row.encoding.ok_or_else(|| Error::Invalid(format!("{} row {i} has no encoding", file.name)))?;
                rows.push((row.caption, encoding));
            }
        }
        rows
    } else {
        let text = std::fs::read_to_string(path_or_url).map_err(|e| Error::io(format!("reading {path_or_url}"), e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                let tokens = line
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<i64>().map_err(|_| Error::Invalid(format!("{path_or_url} line {}: '{t}' is not an integer token", i + 1))))
                    .collect::<Result<Vec<_>>>()?;
                Ok((None, tokens))
            })
            .collect::<Result<_>>()?
    };
    for (i, (_, tokens)) in rows.iter().enumerate() {
        if tokens.len() != image_length {
            return Err(Error::Invalid(format!("{path_or_url}: sequence {i} has {} tokens, the VQGAN decodes {image_length}", tokens.len())));
        }
    }
    Ok(rows)
}
