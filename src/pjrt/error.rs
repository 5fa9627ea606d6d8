//! Errors of the PJRT layer: each names the call or the file that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PjrtError {
    #[error("{0}")]
    PluginNotFound(String),

    #[error("cannot load PJRT plugin {path}: {reason}")]
    PluginLoad { path: PathBuf, reason: String },

    #[error("PJRT plugin {path} speaks PJRT C API {major}.{minor}, which this build does not support ({supported})")]
    UnsupportedApiVersion { path: PathBuf, major: i32, minor: i32, supported: String },

    #[error("PJRT plugin {path} has no function {function} (API table of {slots} entries)")]
    MissingFunction { path: PathBuf, function: &'static str, slots: usize },

    #[error("{call} failed [{code}]: {message}")]
    Call { call: &'static str, code: String, message: String },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = PjrtError> = std::result::Result<T, E>;

/// Name of an absl status code as PJRT reports it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}
