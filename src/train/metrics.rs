//! Metrics of a run, appended as JSON lines to `<run_dir>/metrics.jsonl`.

use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

pub struct MetricsWriter {
    path: PathBuf,
}

impl MetricsWriter {
    pub fn new(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(format!("create run directory {}", run_dir.display()), e))?;
        Ok(MetricsWriter { path: run_dir.join("metrics.jsonl") })
    }

    pub fn append(&self, m: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| Error::Invalid(format!("metrics: {e}")))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(format!("open {}", self.path.display()), e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
