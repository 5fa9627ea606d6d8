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

/// Runs a storage future to completion on the shared runtime.
///
/// Must not be called from inside an async task (that would block a runtime
/// worker); every caller in this crate is a plain thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}
