//! A run's metrics: one JSON line per logged step in `<run>/metrics.jsonl`,
//! and `<run>/loss.png` with the training and evaluation loss curves.

use crate::error::{Error, Result};
use crate::plot::Plot;
use crate::storage::Location;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_PLOT_FILE: &str = "loss.png";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_sec: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Model-specific figures (for example the VQGAN's discriminator loss).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// The metrics of one run, kept whole and rewritten on each append: object
/// stores have no append, and a run logs a few thousand lines at most.
pub struct MetricsLog {
    run: Location,
    records: Vec<StepMetrics>,
}

impl MetricsLog {
    /// Opens the log of `run`, keeping the records up to `resume_step` (those
    /// after it belong to updates the resumed run will redo).
    pub fn open(run: &Location, resume_step: u64) -> Result<Self> {
        let mut records = Vec::new();
        if let Some(bytes) = run.get(METRICS_FILE)? {
            for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                match serde_json::from_str::<StepMetrics>(line) {
                    Ok(m) if m.step <= resume_step => records.push(m),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{}/{METRICS_FILE} line {}: {e}; dropped", run.url, i + 1),
                }
            }
        }
        Ok(MetricsLog { run: run.clone(), records })
    }

    pub fn records(&self) -> &[StepMetrics] {
        &self.records
    }

    /// Adds a record and rewrites the log. When the write fails the record is
    /// still kept, and the next successful write includes it.
    pub fn append(&mut self, m: StepMetrics) -> Result<()> {
        self.records.push(m);
        self.write()
    }

    /// Rewrites `metrics.jsonl` with every record.
    pub fn write(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.records {
            text.push_str(&serde_json::to_string(r).map_err(|e| Error::Invalid(format!("metrics: {e}")))?);
            text.push('\n');
        }
        Ok(self.run.put(METRICS_FILE, text.into_bytes())?)
    }

    /// Draws the loss curves into `<run>/loss.png`.
    pub fn write_plot(&self, title: &str) -> Result<()> {
        let train: Vec<(f64, f64)> = self.records.iter().map(|m| (m.step as f64, m.loss)).collect();
        let eval: Vec<(f64, f64)> = self.records.iter().filter_map(|m| m.eval_loss.map(|e| (m.step as f64, e))).collect();
        if train.len() < 2 {
            return Ok(());
        }
        let mut plot = Plot::new(title).x_label("step").y_label("loss").line("train", &train);
        if !eval.is_empty() {
            plot = plot.line("eval", &eval);
        }
        let png = plot.render(800, 500).and_then(|r| r.png_bytes()).map_err(|e| Error::Invalid(format!("loss plot: {e}")))?;
        Ok(self.run.put(LOSS_PLOT_FILE, png)?)
    }
}
