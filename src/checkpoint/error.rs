//! Errors of the checkpoint layer; each names the run, the step or the file at fault.

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint storage '{location}': {what}: {source}")]
    Store { location: String, what: String, source: object_store::Error },
    #[error("checkpoint step {step} in '{location}' is unusable: {reason}")]
    Corrupt { location: String, step: u64, reason: String },
    #[error("checkpoint does not fit the model: {0}")]
    Incompatible(String),
    #[error("saving checkpoint step {step} failed: {message}")]
    SaveFailed { step: u64, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl CheckpointError {
    pub(crate) fn store(location: &str, what: impl Into<String>, source: object_store::Error) -> Self {
        CheckpointError::Store { location: location.to_string(), what: what.into(), source }
    }

    pub(crate) fn corrupt(location: &str, step: u64, reason: impl Into<String>) -> Self {
        CheckpointError::Corrupt { location: location.to_string(), step, reason: reason.into() }
    }
}
