//! safetensors written tensor by tensor (never the whole model in memory),
//! split into `model-0000K-of-0000N.safetensors` shards with a
//! `model.safetensors.index.json` when over [`SHARD_BYTES`], as transformers does.

use super::partial_path;
use super::safetensors::read_safetensors;
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::DType;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Shards are cut before they would pass this size.
pub const SHARD_BYTES: u64 = 2_000_000_000;
const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

fn st_name(d: DType) -> &'static str {
    match d {
        DType::Bool => "BOOL",
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I32 => "I32",
        DType::I64 => "I64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
    }
}

/// The files a write produced (final names, in the directory written to).
#[derive(Clone, Debug, Default)]
pub struct WrittenFiles {
    pub files: Vec<(String, u64)>,
}

/// Writes `tensors` (name, dtype, shape) into `dir`, asking `fetch` for each
/// tensor's data as it goes. Every file is written under a temporary name and
/// renamed once complete.
pub fn write_sharded_safetensors(
    dir: &Path,
    tensors: &[(String, DType, Vec<i64>)],
    metadata: &BTreeMap<String, String>,
    max_shard_bytes: u64,
    mut fetch: impl FnMut(usize) -> Result<HostTensor>,
) -> Result<WrittenFiles> {
    let size = |t: &(String, DType, Vec<i64>)| t.2.iter().product::<i64>() as u64 * t.1.size_in_bytes() as u64;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let s = size(t);
        if current > 0 && current + s > max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("one shard at least").push(i);
        current += s;
    }
    let n = shards.len();
    let name_of = |k: usize| if n == 1 { SINGLE.to_string() } else { format!("model-{:05}-of-{:05}.safetensors", k + 1, n) };
    let mut written = WrittenFiles::default();
    let mut weight_map = BTreeMap::new();
    for (k, members) in shards.iter().enumerate() {
        let path = dir.join(name_of(k));
        let bytes = write_one(&path, tensors, members, metadata, &mut fetch)?;
        for &i in members {
            weight_map.insert(tensors[i].0.clone(), name_of(k));
        }
        written.files.push((name_of(k), bytes));
    }
    if n > 1 {
        let total: u64 = tensors.iter().map(size).sum();
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let path = dir.join(INDEX);
        let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Invalid(format!("{INDEX}: {e}")))?;
        let tmp = partial_path(&path);
        std::fs::write(&tmp, &text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
        written.files.push((INDEX.to_string(), text.len() as u64));
    }
    Ok(written)
}

fn write_one(
    path: &Path,
    tensors: &[(String, DType, Vec<i64>)],
    members: &[usize],
    metadata: &BTreeMap<String, String>,
    fetch: &mut impl FnMut(usize) -> Result<HostTensor>,
) -> Result<u64> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| Error::Invalid(e.to_string()))?);
    }
    let mut offset = 0u64;
    for &i in members {
        let (name, dtype, shape) = &tensors[i];
        let len = shape.iter().product::<i64>() as u64 * dtype.size_in_bytes() as u64;
        header.insert(name.clone(), serde_json::json!({ "dtype": st_name(*dtype), "shape": shape, "data_offsets": [offset, offset + len] }));
        offset += len;
    }
    let mut head = serde_json::to_string(&header).map_err(|e| Error::Invalid(e.to_string()))?.into_bytes();
    // The data must start 8-byte aligned; safetensors pads the header with spaces.
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let tmp = partial_path(path);
    let werr = |e: std::io::Error| Error::io(format!("writing {}", tmp.display()), e);
    let file = std::fs::File::create(&tmp).map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = (|| -> Result<()> {
        w.write_all(&(head.len() as u64).to_le_bytes()).map_err(werr)?;
        w.write_all(&head).map_err(werr)?;
        for &i in members {
            let (name, dtype, shape) = &tensors[i];
            let t = fetch(i)?;
            if t.dtype != *dtype || &t.shape != shape {
                return Err(Error::Invalid(format!("tensor '{name}' came out as {}{:?}, {}{:?} was planned", t.dtype, t.shape, dtype, shape)));
            }
            w.write_all(&t.data).map_err(werr)?;
        }
        w.flush().map_err(werr)?;
        w.get_ref().sync_all().map_err(werr)
    })();
    drop(w);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))?;
    Ok(8 + head.len() as u64 + offset)
}

/// Every tensor of `dir`'s `model.safetensors`, or of the shards its
/// `model.safetensors.index.json` lists.
pub fn load_sharded_safetensors(dir: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let single = dir.join(SINGLE);
    let index = dir.join(INDEX);
    let files: Vec<PathBuf> = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{} is not JSON: {e}", index.display())))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Invalid(format!("{} has no 'weight_map'", index.display())))?;
        let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        if let Some(bad) = names.iter().find(|n| n.contains('/') || n.contains("..")) {
            return Err(Error::Invalid(format!("{} names a shard outside its directory: {bad}", index.display())));
        }
        names.into_iter().map(|n| dir.join(n)).collect()
    } else if single.is_file() {
        vec![single]
    } else {
        return Err(Error::Invalid(format!("{} has neither {SINGLE} nor {INDEX}", dir.display())));
    };
    let mut out = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        for (name, t) in read_safetensors(&bytes, &f.display().to_string())? {
            if out.insert(name.clone(), t).is_some() {
                return Err(Error::Invalid(format!("tensor '{name}' appears in two shards of {}", dir.display())));
            }
        }
    }
    Ok(out)
}
