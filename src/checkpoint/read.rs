//! Finding committed steps and loading them, checking every file against the manifest.

use super::layout::{checkpoints_location, parse_step_dir, step_location, COMMIT_FILE, METADATA_FILE};
use super::manifest::{hex_digest, sha256_hex, FileEntry, Manifest, TensorEntry, FORMAT_VERSION};
use super::shards::decode_shard;
use super::{Checkpoint, CheckpointError, CheckpointMeta, WriteOptions};
use crate::dtype::DType;
use crate::storage::retry::retrying;
use crate::storage::{Location, RetryPolicy};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

/// What the checkpoints directory holds.
#[derive(Debug, Default)]
pub(crate) struct StepListing {
    /// Steps with a `COMMIT`, ascending.
    pub committed: Vec<u64>,
    /// Step directories without a `COMMIT` (a save in progress or interrupted), ascending.
    pub uncommitted: Vec<u64>,
    /// Entries of the checkpoints directory that are not `step_<N>` directories.
    pub foreign: Vec<String>,
}

pub(crate) async fn list_steps(run: &Location, retry: &RetryPolicy) -> Result<StepListing, CheckpointError> {
    let dir = checkpoints_location(run);
    let prefix = dir.prefix.clone();
    let objects = retrying(retry, &format!("listing {}", dir.url), || dir.store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .await
        .map_err(|e| CheckpointError::store(&dir.url, "listing checkpoints", e))?;
    let mut steps: BTreeMap<u64, bool> = BTreeMap::new();
    let mut foreign = BTreeSet::new();
    for object in objects {
        let Some(parts) = object.location.prefix_match(&prefix) else { continue };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let Some(first) = parts.first() else { continue };
        match parse_step_dir(first) {
            Some(step) => {
                let has_commit = parts.len() == 2 && parts[1] == COMMIT_FILE;
                *steps.entry(step).or_default() |= has_commit;
            }
            None => {
                foreign.insert(first.clone());
            }
        }
    }
    let mut listing = StepListing { foreign: foreign.into_iter().collect(), ..Default::default() };
    for (step, committed) in steps {
        if committed {
            listing.committed.push(step);
        } else {
            listing.uncommitted.push(step);
        }
    }
    Ok(listing)
}

pub(crate) async fn get_bytes(store: &Arc<dyn ObjectStore>, path: &ObjectPath, retry: &RetryPolicy) -> Result<Bytes, object_store::Error> {
    retrying(retry, &format!("reading {path}"), || async { store.get(path).await?.bytes().await }).await
}

pub(crate) async fn is_committed(run: &Location, step: u64, retry: &RetryPolicy) -> Result<bool, CheckpointError> {
    let dir = step_location(run, step);
    let path = dir.child(COMMIT_FILE);
    match retrying(retry, &format!("checking {path}"), || dir.store.head(&path)).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(CheckpointError::store(&dir.url, format!("checking {COMMIT_FILE}"), e)),
    }
}

/// Reads a file of a step; a missing file makes the step corrupt, any other
/// failure is a storage error (the step may be fine, the store is not).
async fn read_step_file(run: &Location, step: u64, name: &str, retry: &RetryPolicy) -> Result<Bytes, CheckpointError> {
    let dir = step_location(run, step);
    match get_bytes(&dir.store, &dir.child(name), retry).await {
        Ok(bytes) => Ok(bytes),
        Err(object_store::Error::NotFound { .. }) => Err(CheckpointError::corrupt(&run.url, step, format!("{name} is missing"))),
        Err(e) => Err(CheckpointError::store(&dir.url, format!("reading {name}"), e)),
    }
}

/// Reads `range` of a step's tensor file, checking the object's size against
/// the manifest's (a size that differs makes the step corrupt).
async fn read_range(dir: &Location, step: u64, run_url: &str, file: &FileEntry, range: Range<u64>, retry: &RetryPolicy) -> Result<Bytes, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::corrupt(run_url, step, reason);
    let wrong_size = |size: u64| corrupt(format!("{} has {size} bytes, the manifest says {}", file.name, file.bytes));
    let path = dir.child(&file.name);
    let options = || if file.bytes == 0 { GetOptions::default() } else { GetOptions::default().with_range(Some(range.clone())) };
    let what = format!("reading bytes {}..{} of {path}", range.start, range.end);
    let expected = range.end - range.start;
    let got = retrying(retry, &what, || async {
        let got = dir.store.get_opts(&path, options()).await?;
        let size = got.meta.size;
        let bytes = got.bytes().await?;
        if size == file.bytes && bytes.len() as u64 != expected {
            // A short answer from an object of the right size: try again.
            return Err(object_store::Error::Generic { store: "checkpoint", source: format!("{} of {expected} bytes came back", bytes.len()).into() });
        }
        Ok((size, bytes))
    })
    .await;
    match got {
        Ok((size, _)) if size != file.bytes => Err(wrong_size(size)),
        Ok((_, bytes)) => Ok(bytes),
        Err(object_store::Error::NotFound { .. }) => Err(corrupt(format!("{} is missing", file.name))),
        // A range past the end of a shorter object fails; say so by its size.
        Err(e) => match dir.store.head(&path).await {
            Ok(meta) if meta.size != file.bytes => Err(wrong_size(meta.size)),
            _ => Err(CheckpointError::store(&dir.url, format!("reading {}", file.name), e)),
        },
    }
}

/// The manifest of a committed step, checked against the hash in `COMMIT`.
pub(crate) async fn read_manifest(run: &Location, step: u64, retry: &RetryPolicy) -> Result<Manifest, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::corrupt(&run.url, step, reason);
    let commit = read_step_file(run, step, COMMIT_FILE, retry).await?;
    let bytes = read_step_file(run, step, METADATA_FILE, retry).await?;
    let want = String::from_utf8_lossy(&commit).trim().to_string();
    let got = sha256_hex(&bytes);
    if want != got {
        return Err(corrupt(format!("{METADATA_FILE} has SHA-256 {got} but {COMMIT_FILE} records {want}")));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{METADATA_FILE} does not parse: {e}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(corrupt(format!("format version {} is not supported (this build reads {FORMAT_VERSION})", manifest.format)));
    }
    if manifest.step != step {
        return Err(corrupt(format!("{METADATA_FILE} says step {} but lives in the directory of step {step}", manifest.step)));
    }
    Ok(manifest)
}

/// Range requests of a restore in flight at once, over all its files: one
/// stream from a cloud store is far slower than the machine's network, and a
/// failed request costs one range, not a whole file.
const RANGES_IN_FLIGHT: usize = 8;

/// Loads a committed step, verifying every file's size and SHA-256 and every
/// tensor's dtype and shape against the manifest.
pub(crate) async fn load_step(run: &Location, step: u64, opts: &WriteOptions) -> Result<Checkpoint, CheckpointError> {
    load_step_with(run, &read_manifest(run, step, &opts.retry).await?, opts).await
}

/// Checks a committed step as [`load_step`] does, keeping none of its
/// tensors: the host holds one file at a time, not the whole step.
pub(crate) async fn verify_step(run: &Location, step: u64, opts: &WriteOptions) -> Result<(), CheckpointError> {
    stream_step(run, &read_manifest(run, step, &opts.retry).await?, opts, &mut |_, _| Ok(())).await
}

/// [`load_step`] of the step whose `manifest` was read.
pub(crate) async fn load_step_with(run: &Location, manifest: &Manifest, opts: &WriteOptions) -> Result<Checkpoint, CheckpointError> {
    let mut by_name: HashMap<String, crate::host::HostTensor> = HashMap::with_capacity(manifest.tensors.len());
    stream_step(run, manifest, opts, &mut |name, tensor| {
        by_name.insert(name, tensor);
        Ok(())
    })
    .await?;
    let tensors = manifest.tensors.iter().map(|e| (e.name.clone(), by_name.remove(&e.name).expect("every tensor was checked present"))).collect();
    Ok(Checkpoint { step: manifest.step, tensors, meta: meta_of(manifest) })
}

/// The run state a manifest records besides its tensors.
pub(crate) fn meta_of(manifest: &Manifest) -> CheckpointMeta {
    CheckpointMeta {
        samples_seen: manifest.samples_seen,
        data_position: manifest.data_position.clone(),
        rng: manifest.rng.clone(),
        config_yaml: manifest.config_yaml.clone(),
        wall_secs: manifest.wall_secs,
    }
}

/// Reads the tensors of the committed step `manifest` describes and hands
/// each to `put` as soon as the file holding it is verified: its size and
/// SHA-256, and the tensor's name, dtype and shape, against the manifest.
/// Files are read in ranges of `opts.part_bytes`, [`RANGES_IN_FLIGHT`] at a
/// time over all files, and decoded in order as each one completes, so the
/// host holds one file and the ranges in flight, not the whole step. A later
/// file can still fail: what `put` took belongs to a usable step only once
/// this returns `Ok`, having handed over every tensor exactly once.
pub(crate) async fn stream_step(
    run: &Location,
    manifest: &Manifest,
    opts: &WriteOptions,
    put: &mut (dyn FnMut(String, crate::host::HostTensor) -> Result<(), CheckpointError> + Send),
) -> Result<(), CheckpointError> {
    let step = manifest.step;
    let corrupt = |reason: String| CheckpointError::corrupt(&run.url, step, reason);
    let dir = step_location(run, step);
    let part = opts.part_bytes.max(1) as u64;
    let mut ranges: Vec<(usize, Range<u64>)> = Vec::new();
    for (index, file) in manifest.files.iter().enumerate() {
        // An empty file is one request for all of it, so its size is still checked.
        for start in (0..file.bytes.max(1)).step_by(part as usize) {
            ranges.push((index, start..(start + part).min(file.bytes)));
        }
    }
    let mut fetched = futures::stream::iter(ranges)
        .map(|(index, range)| {
            let (dir, file) = (&dir, &manifest.files[index]);
            async move { Ok::<_, CheckpointError>((index, read_range(dir, step, &run.url, file, range, &opts.retry).await?)) }
        })
        .buffered(RANGES_IN_FLIGHT);
    let entries: HashMap<&str, &TensorEntry> = manifest.tensors.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut handed_over: HashSet<String> = HashSet::with_capacity(entries.len());
    // The ranges come back in order, so the file being filled is always the
    // one the next range belongs to. Its size was checked by its first range.
    let mut filling: Option<(Vec<u8>, Sha256)> = None;
    while let Some((index, bytes)) = fetched.try_next().await? {
        let file = &manifest.files[index];
        let (data, sha) = if filling.is_none() && bytes.len() as u64 == file.bytes {
            // A file of one range is used as it came.
            let sha = sha256_hex(&bytes);
            (bytes, sha)
        } else {
            let (data, hasher) = filling.get_or_insert_with(|| (Vec::with_capacity(file.bytes as usize), Sha256::new()));
            hasher.update(&bytes);
            data.extend_from_slice(&bytes);
            if (data.len() as u64) < file.bytes {
                continue;
            }
            let (data, hasher) = filling.take().expect("a file being filled");
            (Bytes::from(data), hex_digest(hasher.finalize()))
        };
        if sha != file.sha256 {
            return Err(corrupt(format!("{} has SHA-256 {sha}, the manifest says {}", file.name, file.sha256)));
        }
        let tensors = decode_shard(&data).map_err(|e| corrupt(format!("{}: {e}", file.name)))?;
        drop(data);
        for (name, tensor) in tensors {
            let entry = entries.get(name.as_str()).ok_or_else(|| corrupt(format!("tensor '{name}' is in a file but not in the manifest")))?;
            let dtype = DType::parse(&entry.dtype).ok_or_else(|| corrupt(format!("tensor '{name}' has unknown dtype '{}'", entry.dtype)))?;
            if file.name != entry.file || tensor.dtype != dtype || tensor.shape != entry.shape {
                return Err(corrupt(format!(
                    "tensor '{name}' is {} {:?} in {}, the manifest says {} {:?} in {}",
                    tensor.dtype, tensor.shape, file.name, entry.dtype, entry.shape, entry.file
                )));
            }
            if !handed_over.insert(name.clone()) {
                return Err(corrupt(format!("tensor '{name}' appears in more than one file")));
            }
            put(name, tensor)?;
        }
    }
    if let Some(missing) = manifest.tensors.iter().find(|e| !handed_over.contains(&e.name)) {
        return Err(corrupt(format!("tensor '{}' listed in the manifest is in no file", missing.name)));
    }
    Ok(())
}
