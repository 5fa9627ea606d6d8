//! The library's error type: every layer's errors, each naming what is wrong.

use crate::checkpoint::CheckpointError;
use crate::graph::GraphError;
use crate::host::HostError;
use crate::pjrt::PjrtError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Pjrt(#[from] PjrtError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Invalid(String),
    /// A long operation stopped because its caller asked it to (a stop signal, a client gone).
    #[error("cancelled")]
    Cancelled,
    // The cause is part of the message and deliberately not a `#[source]`, so
    // error chains (`{:#}`) do not print it twice.
    #[error("{context}: {cause}")]
    Io { context: String, cause: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), cause: source }
    }
}
