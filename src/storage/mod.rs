//! Where runs, checkpoints and datasets live: one URL scheme for every program.
//!
//! `gs://bucket/prefix` (Google Cloud Storage), `s3://bucket/prefix`,
//! `memory://name` (a process-wide in-memory store, for tests) and plain local
//! paths all become an [`ObjectStore`] plus a prefix inside it.
//!
//! Cloud backends retry failed requests with exponential backoff
//! ([`RetryPolicy`]); [`retry::retrying`] adds a second layer around whole-object
//! operations for the failures a single request's retries cannot absorb.
//! [`block_on`] runs storage futures from synchronous code on one shared runtime.
//!
//! # Environment
//!
//! The cloud backends read `object_store`'s standard variables, so a program
//! that only takes a URL (`dalle train --run gs://bucket/run`) can still be
//! pointed at another endpoint or given credentials:
//!
//! - `GOOGLE_BASE_URL`: the GCS XML API endpoint (default
//!   `https://storage.googleapis.com`), e.g. a local test server.
//! - `GOOGLE_SERVICE_ACCOUNT_KEY`: a service-account key as JSON text;
//!   `GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_SERVICE_ACCOUNT_PATH`): the path of
//!   one. A key with `"disable_oauth": true` sends unauthenticated requests
//!   (test servers). `GOOGLE_APPLICATION_CREDENTIALS` names an application
//!   default credentials file. With none of them, a GCE/TPU VM's metadata
//!   server provides the credentials.
//! - `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`: the same for S3.
//!
//! Explicit [`StorageOptions`] (a config's `storage:` section) take precedence.

pub mod access;
pub mod lease;
mod options;
pub mod retry;
mod runtime;

pub use access::{check_access, stop_requested, stop_waits_when};
pub use lease::{Lease, LeaseHolder, LeaseOptions, LEASE_FILE};
pub use options::{RetryPolicy, StorageOptions};
pub use runtime::block_on;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage location '{url}': {message}")]
    Location { url: String, message: String },
    #[error("storage at '{location}': {source}{}", access::explain(location, source))]
    Store { location: String, source: object_store::Error },
    #[error("cannot use storage at '{url}': {message}")]
    Access { url: String, message: String },
    #[error("stopped while waiting for storage at '{url}'")]
    Interrupted { url: String },
    #[error("'{url}' is in use by another writer: {holder}. Wait for it to finish, stop it, or use another directory (a lease whose holder stopped is taken over automatically)")]
    LeaseHeld { url: String, holder: String },
    #[error("the writer lease of '{url}' was taken over by {holder}; stopped writing there")]
    LeaseLost { url: String, holder: String },
}

/// A store and the prefix inside it that a URL names.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// The URL (or path) as the user wrote it, for messages.
    pub url: String,
}

impl Location {
    /// The object `name` under this location's prefix (`name` may contain `/`).
    pub fn child(&self, name: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// A location for the sub-directory `name`.
    pub fn join(&self, name: &str) -> Location {
        Location { store: self.store.clone(), prefix: self.child(name), url: format!("{}/{}", self.url.trim_end_matches('/'), name) }
    }

    /// The directory on local disk this location is, when it is one.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        match self.url.split_once("://") {
            None => Some(std::path::PathBuf::from(&self.url)),
            Some(("file", rest)) => Some(std::path::PathBuf::from(rest)),
            Some(_) => None,
        }
    }

    /// Writes the whole object `name` (small files: configs, metrics, plots).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let path = self.child(name);
        block_on(async { self.store.put(&path, bytes.into()).await })
            .map(|_| ())
            .map_err(|source| StorageError::Store { location: format!("{}/{name}", self.url.trim_end_matches('/')), source })
    }

    /// Reads the whole object `name`; `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.child(name);
        let result = block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        result.map(|b| b.map(|b| b.to_vec())).map_err(|source| StorageError::Store { location: format!("{}/{name}", self.url.trim_end_matches('/')), source })
    }
}

/// Process-wide in-memory stores by name, so `memory://x` means the same store everywhere in a test.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    stores.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())).clone()
}

/// Opens the store a URL or local path names, with default options (and the
/// backends' own environment variables, e.g. `GOOGLE_SERVICE_ACCOUNT_KEY`).
pub fn open(url: &str) -> Result<Location, StorageError> {
    open_with(url, &StorageOptions::default())
}

/// Opens the store a URL or local path names, with explicit retry settings and
/// endpoint overrides (a GCS or S3 test server, for instance).
pub fn open_with(url: &str, options: &StorageOptions) -> Result<Location, StorageError> {
    options.validate().map_err(|message| StorageError::Location { url: url.to_string(), message })?;
    let bad = |message: String| StorageError::Location { url: url.to_string(), message };
    if url.trim().is_empty() {
        return Err(bad("is empty".into()));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!("names no bucket: expected {scheme}://BUCKET/PREFIX")));
        }
        let prefix = ObjectPath::parse(prefix.trim_end_matches('/')).map_err(|e| bad(format!("bad prefix: {e}")))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            "gs" => {
                if options.gcs_base_url.is_none() {
                    check_endpoint_variable("GOOGLE_BASE_URL").map_err(bad)?;
                }
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(options.retry.to_object_store());
                if let Some(key) = &options.gcs_service_account_key {
                    builder = builder.with_service_account_key(key);
                }
                if let Some(base) = &options.gcs_base_url {
                    builder = builder.with_base_url(base.trim_end_matches('/'));
                }
                Arc::new(builder.build().map_err(|e| bad(format!("cannot open Google Cloud Storage: {e}")))?)
            }
            "s3" => {
                if options.s3_endpoint.is_none() {
                    check_endpoint_variable("AWS_ENDPOINT").map_err(bad)?;
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(options.retry.to_object_store());
                if let Some(endpoint) = &options.s3_endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                } else if std::env::var("AWS_ENDPOINT").is_ok_and(|e| e.starts_with("http://")) && std::env::var("AWS_ALLOW_HTTP").is_err() {
                    // An http:// endpoint named explicitly is meant to be used; the
                    // backend would otherwise refuse every request ("builder error").
                    builder = builder.with_allow_http(true);
                }
                Arc::new(builder.build().map_err(|e| bad(format!("cannot open S3: {e}")))?)
            }
            "memory" => memory_store(bucket),
            "file" => return open_local(&format!("{bucket}/{prefix}"), url),
            other => return Err(bad(format!("unsupported scheme '{other}' (supported: gs, s3, memory, file, or a local path)"))),
        };
        return Ok(Location { store, prefix, url: url.to_string() });
    }
    open_local(url, url)
}

/// An endpoint from the environment must be an http(s) URL; the backends
/// would otherwise only fail at the first request, with a less clear message.
fn check_endpoint_variable(name: &str) -> Result<(), String> {
    match std::env::var(name) {
        Ok(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            Err(format!("the environment variable {name} must be an http:// or https:// URL, got '{url}'"))
        }
        _ => Ok(()),
    }
}

fn open_local(path: &str, url: &str) -> Result<Location, StorageError> {
    let bad = |message: String| StorageError::Location { url: url.to_string(), message };
    let dir = std::path::Path::new(path);
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create directory: {e}")))?;
    let dir = dir.canonicalize().map_err(|e| bad(format!("cannot resolve directory: {e}")))?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
    Ok(Location { store: Arc::new(fs), prefix: ObjectPath::default(), url: url.to_string() })
}
