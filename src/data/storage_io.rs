//! Blocking access to single objects named by a path or URL, on top of the
//! async `object_store` stores that `crate::storage` opens.

use crate::error::{Error, Result};
use crate::storage::{self, Location};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::future::Future;

/// Runs a storage future on the process-wide storage runtime (see
/// [`crate::storage::block_on`]): one runtime, so pooled connections stay valid.
pub fn block_on<F: Future + Send>(future: F) -> Result<F::Output>
where
    F::Output: Send,
{
    Ok(storage::block_on(future))
}

/// Splits `a/b/c.json` or `gs://bucket/a/c.json` into the directory part and the file name.
pub fn split_parent(path_or_url: &str) -> (String, String) {
    let (scheme, rest) = match path_or_url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r.to_string()),
        None => (String::new(), path_or_url.to_string()),
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once('/') {
        Some((dir, name)) if !dir.is_empty() || scheme.is_empty() => {
            let dir = if dir.is_empty() { "/" } else { dir };
            (format!("{scheme}{dir}"), name.to_string())
        }
        _ if scheme.is_empty() => (".".to_string(), rest.to_string()),
        _ => (format!("{scheme}{rest}"), String::new()),
    }
}

/// The store and object path of one object (a file path or URL).
pub fn object_location(path_or_url: &str) -> Result<(Location, ObjectPath)> {
    let (parent, name) = split_parent(path_or_url);
    if name.is_empty() {
        return Err(Error::Invalid(format!("'{path_or_url}' names a bucket or directory, not a file")));
    }
    if !path_or_url.contains("://") && !std::path::Path::new(&parent).is_dir() {
        return Err(Error::Invalid(format!("'{path_or_url}': directory '{parent}' does not exist")));
    }
    let location = storage::open(&parent).map_err(|e| Error::Invalid(e.to_string()))?;
    let path = location.child(&name);
    Ok((location, path))
}

/// Reads a whole object named by a path or URL.
pub fn read_object(path_or_url: &str) -> Result<Bytes> {
    let (location, path) = object_location(path_or_url)?;
    get(&*location.store, &path, path_or_url)
}

pub fn get(store: &dyn ObjectStore, path: &ObjectPath, name: &str) -> Result<Bytes> {
    block_on(async { store.get(path).await?.bytes().await })?.map_err(|e| Error::Invalid(format!("cannot read '{name}': {e}")))
}

/// The size and the bytes `range` of an object, without reading the rest.
pub fn get_tail(store: &dyn ObjectStore, path: &ObjectPath, name: &str, tail: u64) -> Result<(u64, Bytes)> {
    block_on(async {
        let size = store.head(path).await?.size;
        let bytes = store.get_range(path, size.saturating_sub(tail)..size).await?;
        Ok::<_, object_store::Error>((size, bytes))
    })?
    .map_err(|e| Error::Invalid(format!("cannot read '{name}': {e}")))
}

pub fn get_range(store: &dyn ObjectStore, path: &ObjectPath, name: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
    block_on(store.get_range(path, range))?.map_err(|e| Error::Invalid(format!("cannot read '{name}': {e}")))
}

/// Writes a whole object named by a path or URL (local parent directories are created).
pub fn write_object(path_or_url: &str, bytes: Vec<u8>) -> Result<()> {
    let (parent, _) = split_parent(path_or_url);
    if !path_or_url.contains("://") {
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(format!("cannot create directory '{parent}'"), e))?;
    }
    let (location, path) = object_location(path_or_url)?;
    block_on(location.store.put(&path, bytes.into()))?.map_err(|e| Error::Invalid(format!("cannot write '{path_or_url}': {e}")))?;
    Ok(())
}
