//! Turning an image+caption dataset into the seq2seq trainer's input
//! (parquet shards of `caption` + `encoding`), and token files back into images.
//!
//! Encoding is resumable and checked: the records are split into shards in a
//! fixed order (the image index's); each shard is written to its final name in
//! one put once all of its images are encoded, then recorded with its row
//! count and SHA-256 in `encode-manifest.yaml`, which also names the inputs
//! (their count and a hash of their listing) and the VQGAN (a hash of its
//! weights). A rerun skips only shards whose bytes match the manifest,
//! encodes damaged or missing ones again, and refuses to mix outputs of other
//! inputs or another VQGAN unless asked to restart. A shard whose images are
//! all unreadable is not written, and encoding nothing at all is an error.

use super::codec::VqganCodec;
use crate::data::images::{ImageIndex, ImageLoader, ImageRecord, LoaderOptions, SkipReport};
use crate::data::{dataset_bytes, resolve, DataFormat, Record};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::storage::{block_on, Location};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The manifest of an encoded dataset, beside its shards.
pub const ENCODE_MANIFEST: &str = "encode-manifest.yaml";

/// What one [`encode_dataset`] call did.
#[derive(Clone, Debug, Default)]
pub struct EncodeReport {
    pub shards_total: usize,
    pub shards_written: usize,
    /// Shards found complete in the output (matching the manifest) and left alone.
    pub shards_skipped: usize,
    /// Shards that were in the manifest but missing or damaged, encoded again.
    pub shards_repaired: usize,
    /// Shards with no readable image: not written.
    pub shards_empty: usize,
    pub images_encoded: usize,
    /// Images left out (unreadable or without a caption), each named.
    pub skipped: SkipReport,
}

/// How [`encode_dataset`] runs.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Records per shard.
    pub shard_size: usize,
    /// Threads decoding images.
    pub workers: usize,
    /// Delete the shards of an earlier encoding of other inputs (or with
    /// another VQGAN) and start over, instead of refusing.
    pub restart: bool,
    /// Where the VQGAN came from and the hash of its weights ([`weights_sha256`]).
    pub vqgan: String,
    pub vqgan_sha256: String,
}

/// One written shard in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub rows: usize,
    /// SHA-256 of the file; empty for a shard not written (no readable image).
    pub sha256: String,
    pub bytes: u64,
}

/// `encode-manifest.yaml`: what an output folder was made from and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodeManifest {
    pub inputs: String,
    pub input_count: usize,
    /// SHA-256 of the inputs' listing: each image's path, size and caption.
    pub inputs_sha256: String,
    pub vqgan: String,
    pub vqgan_sha256: String,
    pub shard_size: usize,
    pub shard_count: usize,
    pub shards: BTreeMap<String, ShardEntry>,
}

impl EncodeManifest {
    /// Why an output made as `self` cannot be continued as `now`, if it cannot.
    fn mismatch(&self, now: &EncodeManifest) -> Option<String> {
        if self.inputs_sha256 != now.inputs_sha256 || self.input_count != now.input_count {
            return Some(format!(
                "the input images changed since it was encoded ({} image(s) from {} then, {} from {} now, or their files or captions differ)",
                self.input_count, self.inputs, now.input_count, now.inputs
            ));
        }
        if self.vqgan_sha256 != now.vqgan_sha256 {
            return Some(format!("it was encoded with another VQGAN ({} then, {} now)", self.vqgan, now.vqgan));
        }
        if self.shard_size != now.shard_size {
            return Some(format!("it was encoded with --shard-size {} (now {})", self.shard_size, now.shard_size));
        }
        None
    }
}

/// File name of shard `index` of `count`.
pub fn shard_name(index: usize, count: usize) -> String {
    format!("shard-{index:05}-of-{count:05}.parquet")
}

fn is_shard_name(name: &str) -> bool {
    name.starts_with("shard-") && name.contains("-of-") && name.ends_with(".parquet")
}

/// SHA-256 over a set of weights (names, dtypes, shapes and bytes, in name order).
pub fn weights_sha256<'a>(weights: impl IntoIterator<Item = (&'a String, &'a HostTensor)>) -> String {
    let mut sorted: Vec<_> = weights.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, t) in sorted {
        hash.update(name.as_bytes());
        hash.update(format!("{:?}{:?}", t.dtype, t.shape).as_bytes());
        hash.update(&t.data);
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the dataset's listing: what decides the encoded rows.
fn inputs_sha256(records: &[ImageRecord]) -> String {
    let mut hash = Sha256::new();
    for r in records {
        let size = std::fs::metadata(&r.path).map_or(u64::MAX, |m| m.len());
        hash.update(r.path.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(size.to_le_bytes());
        hash.update(r.caption.as_bytes());
        hash.update([0]);
    }
    hex(&hash.finalize())
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

/// Names of the shard files directly under `out`.
fn listed_shards(out: &Location) -> Result<Vec<String>> {
    let prefix = out.prefix.clone();
    let keys: Vec<String> = block_on(async { out.store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await })
        .map_err(|e| Error::Invalid(format!("listing {}: {e}", out.url)))?;
    let strip = if prefix.as_ref().is_empty() { String::new() } else { format!("{prefix}/") };
    Ok(keys.iter().filter_map(|k| k.strip_prefix(&strip)).filter(|n| !n.contains('/') && is_shard_name(n)).map(str::to_string).collect())
}

fn delete(out: &Location, name: &str) -> Result<()> {
    let path = out.child(name);
    match block_on(async { out.store.delete(&path).await }) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::Invalid(format!("deleting {}/{name}: {e}", out.url.trim_end_matches('/')))),
    }
}

fn write_manifest(out: &Location, manifest: &EncodeManifest) -> Result<()> {
    let yaml = serde_yaml::to_string(manifest).map_err(invalid)?;
    out.put(ENCODE_MANIFEST, yaml.into_bytes()).map_err(invalid)
}

/// Whether the shard `name` in `out` is the one `entry` describes; the reason when not.
fn verify_shard(out: &Location, name: &str, entry: &ShardEntry) -> Result<std::result::Result<(), String>> {
    if entry.sha256.is_empty() {
        return Ok(Ok(()));
    }
    Ok(match out.get(name).map_err(invalid)? {
        None => Err("it is missing".into()),
        Some(bytes) if bytes.len() as u64 != entry.bytes => Err(format!("it has {} bytes, the manifest says {}", bytes.len(), entry.bytes)),
        Some(bytes) if hex(&Sha256::digest(&bytes)) != entry.sha256 => Err("its SHA-256 differs from the manifest's".into()),
        Some(_) => Ok(()),
    })
}

/// Encodes every image of `index` with `codec` into parquet shards of at most
/// `options.shard_size` records under `out`; `progress` sees the number of
/// records done (encoded, skipped or already present) after each batch.
pub fn encode_dataset(codec: &VqganCodec, index: ImageIndex, out: &Location, options: &EncodeOptions, mut progress: impl FnMut(usize)) -> Result<EncodeReport> {
    let shard_size = options.shard_size;
    if shard_size == 0 {
        return Err(Error::Invalid("the shard size must be at least 1".into()));
    }
    let count = index.records.len().div_ceil(shard_size);
    let mut report = EncodeReport { shards_total: count, skipped: SkipReport { skipped: index.skipped.clone() }, ..Default::default() };
    if count == 0 {
        return Err(Error::Invalid(format!("the image dataset has no image with a caption ({})", report.skipped)));
    }
    let inputs = index.records.first().and_then(|r| r.path.parent()).map(|p| p.display().to_string()).unwrap_or_default();
    let mut manifest = EncodeManifest {
        inputs,
        input_count: index.records.len(),
        inputs_sha256: inputs_sha256(&index.records),
        vqgan: options.vqgan.clone(),
        vqgan_sha256: options.vqgan_sha256.clone(),
        shard_size,
        shard_count: count,
        shards: BTreeMap::new(),
    };
    let here = |name: &str| format!("{}/{name}", out.url.trim_end_matches('/'));
    let restart_hint = "Run with --restart to delete its shards and encode again, or choose another --out";
    let earlier: Option<EncodeManifest> = match out.get(ENCODE_MANIFEST).map_err(invalid)? {
        Some(bytes) => Some(serde_yaml::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!("{} is not an encoding manifest ({e}). {restart_hint}", here(ENCODE_MANIFEST)))
        })?),
        None => None,
    };
    let found = listed_shards(out)?;
    let conflict = match &earlier {
        Some(m) => m.mismatch(&manifest).map(|why| format!("{} holds an encoding that does not match this one: {why}", out.url)),
        None if !found.is_empty() => Some(format!(
            "{} holds {} shard file(s) (e.g. {}) but no {ENCODE_MANIFEST}, so they cannot be checked",
            out.url,
            found.len(),
            found[0]
        )),
        None => None,
    };
    if let Some(conflict) = conflict {
        if !options.restart {
            return Err(Error::Invalid(format!("{conflict}. {restart_hint}")));
        }
        tracing::warn!("{conflict}: deleting {} shard file(s) and starting over (--restart)", found.len());
        for name in &found {
            delete(out, name)?;
        }
        delete(out, ENCODE_MANIFEST)?;
    } else if let Some(m) = earlier {
        manifest.shards = m.shards;
    }

    let mut done = 0;
    for (i, records) in index.records.chunks(shard_size).enumerate() {
        let name = shard_name(i, count);
        if let Some(entry) = manifest.shards.get(&name).cloned() {
            match verify_shard(out, &name, &entry)? {
                Ok(()) => {
                    report.shards_skipped += 1;
                    done += records.len();
                    progress(done);
                    continue;
                }
                Err(why) => {
                    tracing::warn!("shard {} is damaged ({why}): encoding it again", here(&name));
                    manifest.shards.remove(&name);
                    report.shards_repaired += 1;
                }
            }
        }
        let shard = ImageIndex { records: records.to_vec(), skipped: Vec::new() };
        let loader_options = LoaderOptions {
            resolution: codec.config.resolution as u32,
            batch_size: codec.batch_size(),
            shuffle: false,
            epochs: Some(1),
            drop_last: false,
            workers: options.workers,
            ..Default::default()
        };
        let mut loader = ImageLoader::start(shard, loader_options)?;
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
            // A shard whose images are all unreadable is done, with nothing to write.
            Err(e) if !skipped.is_empty() && rows.is_empty() => tracing::warn!("shard {name}: {e}"),
            Err(e) => return Err(e),
        }
        done += records.len();
        progress(done);
        report.skipped.skipped.extend(skipped);
        report.images_encoded += rows.len();
        let entry = if rows.is_empty() {
            report.shards_empty += 1;
            ShardEntry { rows: 0, sha256: String::new(), bytes: 0 }
        } else {
            // One put of the finished shard: a shard under its final name is always complete.
            let bytes = dataset_bytes(DataFormat::Parquet, &rows)?;
            let entry = ShardEntry { rows: rows.len(), sha256: hex(&Sha256::digest(&bytes)), bytes: bytes.len() as u64 };
            out.put(&name, bytes).map_err(invalid)?;
            report.shards_written += 1;
            entry
        };
        manifest.shards.insert(name, entry);
        write_manifest(out, &manifest)?;
    }
    if manifest.shards.values().all(|s| s.rows == 0) {
        return Err(Error::Invalid(format!(
            "nothing was encoded: none of the {} image(s) could be read ({})",
            manifest.input_count, report.skipped
        )));
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
