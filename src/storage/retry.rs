//! Retrying whole-object operations.
//!
//! The cloud backends already retry single HTTP requests, but some failures
//! escape them: a request that times out after its body was sent is not
//! retried when it is not idempotent, a multipart upload fails as a whole when
//! one part exhausts its retries, and the local and in-memory stores have no
//! retries at all. Wrapping the whole operation makes the outcome the same on
//! every backend.

use super::RetryPolicy;
use std::future::Future;
use std::time::Instant;

/// Whether an error may go away by trying again. Answers that are about the
/// object (missing, already there, precondition failed) or about the caller
/// (permissions, bad path, unsupported) will not.
pub fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    matches!(error, E::Generic { .. } | E::JoinError { .. })
}

/// Runs `op` until it succeeds, fails with a non-transient error, or the
/// policy's retries or time run out; logs each retry with `what` it was doing.
pub async fn retrying<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let give_up = !is_transient(&error) || attempt >= policy.max_retries || start.elapsed() >= policy.timeout();
                if give_up {
                    return Err(error);
                }
                let wait = policy.backoff(attempt);
                attempt += 1;
                tracing::warn!("{what} failed (retry {attempt} of {} in {:.2}s): {error}", policy.max_retries, wait.as_secs_f64());
                tokio::time::sleep(wait).await;
            }
        }
    }
}
