//! Stage `encode`: a byte-level BPE tokenizer trained on the training
//! captions, and both splits turned into parquet shards of caption + VQGAN
//! tokens (resumable shard by shard).

use super::vqgan::path_string;
use super::{Context, StageEnd};
use crate::data::images::ImageIndex;
use crate::data::train_tokenizer;
use crate::error::{Error, Result};
use crate::models::vqgan::{encode_dataset, open_vqgan, weights_sha256, EncodeOptions, VqganCodec};
use crate::pipeline::config::paths;
use crate::pipeline::stage::Stage;

/// Records per parquet shard: small enough that a killed run loses little.
const SHARD_SIZE: usize = 1000;
/// Images per device per encoder call.
const PER_DEVICE: i64 = 8;
/// Threads decoding PNG files.
const WORKERS: usize = 2;

pub fn run(cx: &Context) -> Result<StageEnd> {
    let train_images = cx.run.input(Stage::Encode, paths::SHAPES_TRAIN, Stage::Shapes)?;
    let heldout_images = cx.run.input(Stage::Encode, paths::SHAPES_HELDOUT, Stage::Shapes)?;
    let vqgan_run = cx.run.input(Stage::Encode, paths::VQGAN_RUN, Stage::Vqgan)?;

    let tokenizer = cx.run.path(paths::TOKENIZER);
    let train_index = ImageIndex::open(&train_images)?;
    let vocab = train_tokenizer_file(&train_index, cx.config.tokenizer.vocab_size, &tokenizer)?;

    let (config, weights, origin) = open_vqgan(&path_string(&vqgan_run))?;
    let devices = cx.client.device_count();
    let codec = VqganCodec::new(cx.client, config, &weights, &origin, PER_DEVICE, devices)?;
    // The manifest ties the shards to these inputs and this VQGAN; a rerun of
    // the vqgan stage removes this stage's outputs, so no restart is needed here.
    let options = EncodeOptions { shard_size: SHARD_SIZE, workers: WORKERS, restart: false, vqgan: origin.clone(), vqgan_sha256: weights_sha256(&weights) };
    let mut counts = serde_json::Map::new();
    for (name, index, out) in [
        ("train", train_index, paths::ENCODED_TRAIN),
        ("heldout", ImageIndex::open(&heldout_images)?, paths::ENCODED_HELDOUT),
    ] {
        if let Some(reason) = cx.stop.reason() {
            return Ok(StageEnd::Stopped(reason));
        }
        let dir = cx.run.path(out);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let location = crate::storage::open(&path_string(&dir))?;
        let report = encode_dataset(&codec, index, &location, &options, |_| {})?;
        if !report.skipped.skipped.is_empty() {
            tracing::warn!("encode {name}: {}", report.skipped);
        }
        tracing::info!("encode {name}: {} shard(s) written, {} already there", report.shards_written, report.shards_skipped);
        counts.insert(format!("{name}_shards"), report.shards_total.into());
        counts.insert(format!("{name}_images_skipped"), report.skipped.skipped.len().into());
    }
    counts.insert("tokenizer_vocab_size".into(), vocab.into());
    Ok(StageEnd::Completed(serde_json::Value::Object(counts)))
}

/// Trains the tokenizer on the captions of `index` unless `out` exists;
/// returns its vocabulary size.
fn train_tokenizer_file(index: &ImageIndex, vocab_size: usize, out: &std::path::Path) -> Result<usize> {
    if !out.exists() {
        let dir = out.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lines = dir.join(".captions.txt.tmp");
        let text: String = index.records.iter().map(|r| r.caption.replace(['\n', '\r'], " ") + "\n").collect();
        std::fs::write(&lines, text).map_err(|e| Error::io(format!("writing {}", lines.display()), e))?;
        let tmp = dir.join(".tokenizer.json.tmp");
        let trained = train_tokenizer(&lines, vocab_size, &tmp);
        let _ = std::fs::remove_file(&lines);
        trained?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), out.display()), e))?;
    }
    let encoder = crate::data::TextEncoder::load(&path_string(out), 8)?;
    Ok(encoder.vocab_size())
}
