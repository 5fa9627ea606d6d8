//! Errors found while building, differentiating or lowering a graph.

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// A primitive rejected its operands; the message names them.
    #[error("op '{op}': {message}")]
    Op { op: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl GraphError {
    pub fn op(op: impl Into<String>, message: impl Into<String>) -> Self {
        GraphError::Op { op: op.into(), message: message.into() }
    }
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// Returns an op error: `bail!(op, "format", args)`.
macro_rules! op_bail {
    ($op:expr, $($arg:tt)*) => {
        return Err($crate::graph::GraphError::op($op, format!($($arg)*)))
    };
}
pub(crate) use op_bail;
