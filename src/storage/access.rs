//! Telling storage failures apart, and finding them before a run starts.
//!
//! A missing credential or a wrong endpoint never goes away by retrying, so
//! [`classify`] recognises them (from the backend's error chain) and
//! [`explain`] says what to set. [`check_access`] makes one cheap request with
//! a short retry budget when a run opens, so such problems surface in seconds,
//! not after minutes of retries or after compiling the model.
//!
//! Every wait here and in [`super::retry::retrying`] gives way to the stop
//! signal registered with [`stop_waits_when`] (training registers SIGTERM and
//! SIGINT), so a storage outage cannot hold up a preempted VM's shutdown.

use super::{block_on, Location, RetryPolicy, StorageError, StorageOptions};
use object_store::ObjectStoreExt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What kind of failure a storage error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No usable credentials, or credentials without access to the bucket.
    Credentials,
    /// The endpoint URL is malformed or nothing answers there.
    Endpoint,
    /// Anything else: outages, throttling, missing objects.
    Other,
}

/// The error and its sources, lower-cased, for recognising backend messages.
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.to_ascii_lowercase()
}

/// Recognises credential and endpoint problems in a backend error.
pub fn classify(error: &object_store::Error) -> Problem {
    if matches!(error, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) {
        return Problem::Credentials;
    }
    let text = chain_text(error);
    let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    // Fetching a token talks to the metadata server or an OAuth endpoint; any
    // failure there (unreachable included) means no usable credentials.
    if any(&["token request", "token response", "credential", "metadata server", "169.254.169.254", "metadata.google.internal"]) {
        return Problem::Credentials;
    }
    if any(&["builder error", "relative url", "invalid url", "url scheme is not allowed", "empty host", "invalid port"]) {
        return Problem::Endpoint;
    }
    if any(&["connection refused", "dns error", "failed to lookup address", "tcp connect error", "error trying to connect", "no route to host"]) {
        return Problem::Endpoint;
    }
    if any(&[
        "status: 401",
        "status: 403",
        "401 unauthorized",
        "403 forbidden",
        "accessdenied",
        "access denied",
        "invalidaccesskeyid",
        "signaturedoesnotmatch",
        "permission",
        "unauthorized",
        "forbidden",
    ]) {
        return Problem::Credentials;
    }
    Problem::Other
}

/// Whether `error` says a byte range lies outside the object (HTTP 416 or a
/// local store's equivalent): asking again gives the same answer.
pub fn is_unsatisfiable_range(error: &object_store::Error) -> bool {
    let text = chain_text(error);
    ["status: 416", "416 range", "invalidrange", "range was invalid", "invalid range", "not satisfiable", "cannot be satisfied"].iter().any(|n| text.contains(n))
}

/// What to do about `error` on the store `url` names; empty when there is
/// nothing more to say than the error itself.
pub fn explain(url: &str, error: &object_store::Error) -> String {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match (classify(error), scheme) {
        (Problem::Credentials, "gs") => " (no usable Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) to a service-account key file, \
             GOOGLE_SERVICE_ACCOUNT_KEY to its JSON, or storage.gcs_service_account_key in the config; on a TPU/GCE VM, give the VM's service account \
             access to the bucket and the storage scope)"
            .into(),
        (Problem::Credentials, "s3") => " (no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_REGION), \
             or run where an instance role has access to the bucket)"
            .into(),
        (Problem::Endpoint, "gs") => format!(" (cannot reach the storage endpoint {}: check GOOGLE_BASE_URL or storage.gcs_base_url)", endpoint("GOOGLE_BASE_URL", "https://storage.googleapis.com")),
        (Problem::Endpoint, "s3") => format!(" (cannot reach the storage endpoint {}: check AWS_ENDPOINT or storage.s3_endpoint)", endpoint("AWS_ENDPOINT", "the AWS default")),
        _ => String::new(),
    }
}

fn endpoint(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

type StopCheck = Arc<dyn Fn() -> bool + Send + Sync>;

fn stop_check() -> &'static RwLock<Option<StopCheck>> {
    static CHECK: RwLock<Option<StopCheck>> = RwLock::new(None);
    &CHECK
}

/// Makes storage waits (retries, the access check) give way once `check`
/// returns true. One check per process; a later call replaces it.
pub fn stop_waits_when(check: impl Fn() -> bool + Send + Sync + 'static) {
    *stop_check().write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(check));
}

/// Whether the registered stop check says to stop waiting.
pub fn stop_requested() -> bool {
    stop_check().read().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|check| check())
}

/// Runs `future`, giving up (`None`) as soon as a stop is requested.
pub async fn unless_stopped<F: std::future::Future>(future: F) -> Option<F::Output> {
    tokio::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return Some(output),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if stop_requested() {
                    return None;
                }
            }
        }
    }
}

/// One request against the store of `url` with a short retry budget (a few
/// retries, at most 20 s), so missing credentials or a wrong endpoint are
/// reported before any work starts. Local paths and `memory://` need none.
pub fn check_access(url: &str, options: &StorageOptions) -> Result<(), StorageError> {
    if !(url.starts_with("gs://") || url.starts_with("s3://")) {
        return Ok(());
    }
    let quick = RetryPolicy {
        max_retries: options.retry.max_retries.min(2),
        initial_backoff_secs: options.retry.initial_backoff_secs.min(0.2),
        max_backoff_secs: options.retry.max_backoff_secs.min(1.0),
        timeout_secs: options.retry.timeout_secs.min(20.0),
    };
    let probe: Location = super::open_with(url, &StorageOptions { retry: quick.clone(), ..options.clone() })?;
    let path = probe.child(".dalle-access-check");
    let outcome = block_on(unless_stopped(async { tokio::time::timeout(quick.timeout() + Duration::from_secs(5), probe.store.head(&path)).await }));
    match outcome {
        None => Err(StorageError::Interrupted { url: url.to_string() }),
        Some(Err(_)) => Err(StorageError::Access { url: url.to_string(), message: format!("no answer within {:.0}s", quick.timeout_secs + 5.0) }),
        Some(Ok(Ok(_))) | Some(Ok(Err(object_store::Error::NotFound { .. }))) => Ok(()),
        Some(Ok(Err(e))) => Err(StorageError::Access { url: url.to_string(), message: format!("{e}{}", explain(url, &e)) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic { store: "GCS", source: message.to_string().into() }
    }

    #[test]
    fn recognises_credential_and_endpoint_failures() {
        let token = generic("Error performing token request: Server returned non-2xx status code: 403 Forbidden: http://169.254.169.254/computeMetadata/v1/...");
        assert_eq!(classify(&token), Problem::Credentials);
        assert!(explain("gs://b/run", &token).contains("GOOGLE_APPLICATION_CREDENTIALS"));
        assert_eq!(classify(&generic("HTTP error: builder error")), Problem::Endpoint);
        assert!(explain("s3://b/run", &generic("error sending request: tcp connect error: Connection refused")).contains("AWS_ENDPOINT"));
        assert_eq!(classify(&generic("Server returned non-2xx status code: 503 Service Unavailable")), Problem::Other);
        assert_eq!(explain("gs://b/run", &generic("503 Service Unavailable")), "");
    }
}
