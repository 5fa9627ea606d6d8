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
use std::time::{Duration, Instant};

/// Whether an error may go away by trying again. Answers that are about the
/// object (missing, already there, precondition failed, a range past its end)
/// or about the caller (permissions, bad path, unsupported) will not.
pub fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    matches!(error, E::Generic { .. } | E::JoinError { .. })
        && super::access::classify(error) == super::access::Problem::Other
        && !super::access::is_unsatisfiable_range(error)
}

/// How long a retry loop may go on once a stop was requested: enough to
/// finish a final checkpoint through a short hiccup, not to wait out an outage.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `op` until it succeeds, fails with a non-transient error, or the
/// policy's retries or time run out; logs each retry with `what` it was doing.
/// The whole loop, attempts included, ends within the policy's timeout (and
/// within a short grace once a stop is requested, see [`super::stop_waits_when`]).
pub async fn retrying<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let start = Instant::now();
    let mut deadline = start + policy.timeout();
    let mut attempt = 0;
    loop {
        if super::stop_requested() {
            deadline = deadline.min(Instant::now() + STOP_GRACE);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(left, op()).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(what, policy, start)),
        };
        match result {
            Ok(value) => return Ok(value),
            Err(error) => {
                let wait = policy.backoff(attempt);
                let give_up = !is_transient(&error) || attempt >= policy.max_retries || Instant::now() + wait >= deadline;
                if give_up {
                    return Err(error);
                }
                attempt += 1;
                tracing::warn!("{what} failed (retry {attempt} of {} in {:.2}s): {error}", policy.max_retries, wait.as_secs_f64());
                if super::access::unless_stopped(tokio::time::sleep(wait)).await.is_none() {
                    deadline = deadline.min(Instant::now() + STOP_GRACE);
                }
            }
        }
    }
}

fn timed_out(what: &str, policy: &RetryPolicy, start: Instant) -> object_store::Error {
    let message = format!("{what} gave up after {:.1}s (storage.retry.timeout_secs is {})", start.elapsed().as_secs_f64(), policy.timeout_secs);
    object_store::Error::Generic { store: "retry", source: message.into() }
}
