//! Blocking reads and whole-object writes on a storage [`Location`].
//!
//! The sweep driver is synchronous (trials block on devices), so it drives the
//! async object store from a small private runtime.

use crate::error::{Error, Result};
use crate::storage::Location;
use object_store::{ObjectStoreExt, PutPayload};
use std::future::Future;
use std::sync::OnceLock;

fn block_on<F: Future + Send>(fut: F) -> Result<F::Output>
where
    F::Output: Send,
{
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Invalid(format!("cannot start the storage runtime: {e}")))?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // Called from inside another runtime (an async caller): blocking it would panic, so
        // wait on a plain thread instead.
        Ok(std::thread::scope(|s| s.spawn(|| rt.block_on(fut)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
    } else {
        Ok(rt.block_on(fut))
    }
}

/// The object `name` under `loc`, or `None` if it does not exist.
pub fn read_optional(loc: &Location, name: &str) -> Result<Option<Vec<u8>>> {
    let path = loc.child(name);
    block_on(async {
        match loc.store.get(&path).await {
            Ok(got) => got.bytes().await.map(|b| Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })?
    .map_err(|e| Error::Invalid(format!("cannot read {}/{name}: {e}", loc.url.trim_end_matches('/'))))
}

/// Writes `bytes` as the object `name` under `loc` in one put: readers see the old
/// object or the new one, never a partial write.
pub fn write(loc: &Location, name: &str, bytes: Vec<u8>) -> Result<()> {
    let path = loc.child(name);
    block_on(async { loc.store.put(&path, PutPayload::from(bytes)).await })?
        .map(|_| ())
        .map_err(|e| Error::Invalid(format!("cannot write {}/{name}: {e}", loc.url.trim_end_matches('/'))))
}
