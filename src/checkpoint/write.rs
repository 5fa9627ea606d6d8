//! Writing one step: tensor files, then `metadata.json`, then the create-only `COMMIT`.

use super::layout::{shard_file_name, step_location, COMMIT_FILE, METADATA_FILE};
use super::manifest::{code_version, hex_digest, sha256_hex, FileEntry, Manifest, TensorEntry, FORMAT_VERSION};
use super::shards::{plan_shards, ShardFile};
use super::{read, retention, CheckpointError, Snapshot};
use crate::storage::retry::retrying;
use crate::storage::{Location, RetryPolicy};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a step is written.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOptions {
    /// Upper bound of tensor bytes per safetensors file (a single larger tensor
    /// gets a file of its own).
    pub max_file_bytes: u64,
    /// Files larger than this are uploaded in parts of this size, a few at a
    /// time, so a failure costs one part rather than the whole file; the parts
    /// in flight are all of a file the writer holds in memory. A restore reads
    /// files back in ranges of this size.
    pub part_bytes: usize,
    /// Retries around each whole-object operation.
    pub retry: RetryPolicy,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { max_file_bytes: 2 << 30, part_bytes: 64 << 20, retry: RetryPolicy::default() }
    }
}

impl WriteOptions {
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.max_file_bytes == 0 {
            return Err(CheckpointError::Invalid("checkpoint max_file_bytes must be at least 1".into()));
        }
        if self.part_bytes == 0 {
            return Err(CheckpointError::Invalid("checkpoint part_bytes must be at least 1".into()));
        }
        self.retry.validate().map_err(CheckpointError::Invalid)
    }
}

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

pub(crate) enum WriteOutcome {
    Written { files: usize, bytes: u64 },
    /// The step was already committed and verifies; nothing was written.
    AlreadyCommitted,
}

/// Writes `ckpt` as step `ckpt.step` of the run. A committed step of that
/// number that verifies is left alone; one that does not is deleted first.
/// Each file is read out of the tensors' blocks part by part as it uploads.
pub(crate) async fn write_step(run: &Location, ckpt: &Snapshot, opts: &WriteOptions) -> Result<WriteOutcome, CheckpointError> {
    let step = ckpt.step;
    let dir = step_location(run, step);
    let store = &dir.store;

    if read::is_committed(run, step, &opts.retry).await? {
        match read::verify_step(run, step, opts).await {
            Ok(_) => return Ok(WriteOutcome::AlreadyCommitted),
            Err(CheckpointError::Corrupt { reason, .. }) => {
                tracing::warn!("checkpoint step {step} in '{}' is committed but unusable ({reason}); writing it again", run.url);
                retention::delete_step(run, step, &opts.retry).await?;
            }
            Err(e) => return Err(e),
        }
    }

    let saved_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let plan = plan_shards(&ckpt.tensors, opts.max_file_bytes);
    let mut files = Vec::with_capacity(plan.len());
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    let mut total = 0u64;
    for (index, indices) in plan.iter().enumerate() {
        let name = shard_file_name(index, plan.len());
        let file = ShardFile::new(&ckpt.tensors, indices)?;
        let sha256 = upload(store, &dir.child(&name), Body::File(&file), opts)
            .await
            .map_err(|e| CheckpointError::store(&dir.url, format!("writing {name}"), e))?;
        let entry = FileEntry { name: name.clone(), bytes: file.len() as u64, sha256 };
        total += entry.bytes;
        files.push(entry);
        for &i in indices {
            let (tensor_name, t) = &ckpt.tensors[i];
            tensors.push((i, TensorEntry { name: tensor_name.clone(), dtype: t.dtype.name().into(), shape: t.shape.clone(), file: name.clone() }));
        }
    }
    tensors.sort_by_key(|(i, _)| *i);

    let meta = &ckpt.meta;
    let manifest = Manifest {
        format: FORMAT_VERSION,
        step,
        samples_seen: meta.samples_seen,
        data_position: meta.data_position.clone(),
        rng: meta.rng.clone(),
        config_yaml: meta.config_yaml.clone(),
        config_sha256: sha256_hex(meta.config_yaml.as_bytes()),
        code_version: code_version(),
        wall_secs: meta.wall_secs,
        saved_at_unix,
        files,
        tensors: tensors.into_iter().map(|(_, t)| t).collect(),
    };
    let manifest_bytes = Bytes::from(
        serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Invalid(format!("cannot encode {METADATA_FILE}: {e}")))?,
    );
    let commit_body = sha256_hex(&manifest_bytes);
    total += manifest_bytes.len() as u64;
    upload(store, &dir.child(METADATA_FILE), Body::Bytes(manifest_bytes), opts)
        .await
        .map_err(|e| CheckpointError::store(&dir.url, format!("writing {METADATA_FILE}"), e))?;
    commit(&dir, &commit_body, &opts.retry).await?;
    Ok(WriteOutcome::Written { files: plan.len(), bytes: total })
}

/// Creates `COMMIT`, refusing to replace an existing one. When a retried
/// request finds a `COMMIT` already there, it is ours exactly when it holds
/// the same hash (an earlier attempt landed but its answer was lost).
async fn commit(dir: &Location, body: &str, retry: &RetryPolicy) -> Result<(), CheckpointError> {
    let path = dir.child(COMMIT_FILE);
    let put = retrying(retry, &format!("writing {}/{COMMIT_FILE}", dir.url), || {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        dir.store.put_opts(&path, PutPayload::from(body.to_string()), opts)
    })
    .await;
    match put {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = read::get_bytes(&dir.store, &path, retry)
                .await
                .map_err(|e| CheckpointError::store(&dir.url, format!("reading back {COMMIT_FILE}"), e))?;
            if existing.as_ref() == body.as_bytes() {
                Ok(())
            } else {
                Err(CheckpointError::Invalid(format!(
                    "{}/{COMMIT_FILE} already exists and belongs to another save (another writer on the same run?)",
                    dir.url
                )))
            }
        }
        Err(e) => Err(CheckpointError::store(&dir.url, format!("writing {COMMIT_FILE}"), e)),
    }
}

/// What an upload sends: bytes in memory, or a checkpoint file read out of
/// its tensors as it goes.
enum Body<'a> {
    Bytes(Bytes),
    File(&'a ShardFile<'a>),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::File(f) => f.len(),
        }
    }

    fn slice(&self, start: usize, len: usize) -> Bytes {
        match self {
            Body::Bytes(b) => b.slice(start..start + len),
            Body::File(f) => Bytes::from(f.bytes(start, len)),
        }
    }
}

/// Writes one object, in parts when it is large, retrying the whole upload;
/// returns the SHA-256 of what it wrote.
async fn upload(store: &Arc<dyn ObjectStore>, path: &ObjectPath, body: Body<'_>, opts: &WriteOptions) -> Result<String, object_store::Error> {
    let what = format!("uploading {path}");
    if body.len() <= opts.part_bytes {
        let data = body.slice(0, body.len());
        retrying(&opts.retry, &what, || store.put_opts(path, PutPayload::from(data.clone()), PutOptions::default())).await?;
        Ok(sha256_hex(&data))
    } else {
        retrying(&opts.retry, &what, || upload_parts(store, path, &body, opts.part_bytes)).await
    }
}

/// One multipart upload whose parts are taken from `body` only as they are
/// sent, so at most `PARTS_IN_FLIGHT` parts of a file are in memory at once.
async fn upload_parts(store: &Arc<dyn ObjectStore>, path: &ObjectPath, body: &Body<'_>, part_bytes: usize) -> Result<String, object_store::Error> {
    let mut upload = store.put_multipart(path).await?;
    let mut hasher = Sha256::new();
    // The stream takes parts in order, so the hash sees the bytes in order.
    let parts = futures::stream::iter((0..body.len()).step_by(part_bytes)).map(|start| {
        let part = body.slice(start, part_bytes.min(body.len() - start));
        hasher.update(&part);
        upload.put_part(PutPayload::from(part))
    });
    let sent = parts.buffer_unordered(PARTS_IN_FLIGHT).try_collect::<Vec<()>>().await;
    match sent {
        Ok(_) => {
            upload.complete().await?;
            Ok(hex_digest(hasher.finalize()))
        }
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!("could not abort the failed upload of {path}: {abort}");
            }
            Err(e)
        }
    }
}
