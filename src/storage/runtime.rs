//! One tokio runtime for all storage I/O driven from synchronous code.
//!
//! The cloud backends keep pooled HTTP connections that belong to the runtime
//! that opened them; sharing a single runtime process-wide means a store can be
//! used from any thread without those connections going stale.

use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dalle-storage")
            .enable_all()
            .build()
            // Without a runtime no storage works at all; there is nothing to recover to.
            .expect("cannot start the storage I/O runtime")
    })
}

/// Runs a storage future to completion on the shared runtime, from any
/// synchronous code. Called from inside another tokio runtime (where blocking
/// the thread is not allowed), the wait happens on a scoped helper thread.
pub fn block_on<F: Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| runtime().block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime().block_on(future)
    }
}
