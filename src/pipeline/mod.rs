//! `dalle pipeline`: the whole DALL·E mini recipe on the shapes world, each
//! stage an ordinary resumable run inside one run directory, judged by the
//! shapes checker: dataset with held-out combinations, VQGAN, encoding,
//! DalleBart, generation, judging and a report.
//!
//! A completed stage leaves a record and is skipped when the pipeline runs
//! again; an interrupted one continues from what it saved (training stages
//! from their newest checkpoint, the others file by file).

mod config;
mod run;
mod stage;
mod stages;

pub use config::{paths, GenerateConfig, PipelineConfig, ReportConfig, ShapesConfig, TokenizerConfig};
pub use run::{process_cpu_secs, write_atomically, PipelineRun, StageRecord};
pub use stage::Stage;
pub use stages::{judge, reconstruct, row_scores, AttributeScores, Judgement, RowScores, JUDGE_FILE};

use crate::checkpoint::{StopReason, StopSignal};
use crate::error::Result;
use crate::pjrt::Client;
use stages::{run_stage, Context, StageEnd};
use std::time::Instant;

/// How a pipeline session ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PipelineOutcome {
    /// Every stage asked for is complete.
    Finished,
    /// A stop signal arrived during `stage`; a rerun continues it.
    Stopped { stage: Stage, reason: StopReason },
}

pub struct Pipeline<'a> {
    pub config: &'a PipelineConfig,
    pub run: &'a PipelineRun,
    pub client: &'a Client,
    pub stop: &'a StopSignal,
}

impl Pipeline<'_> {
    /// Runs `stages` in order (all of them when `None`), skipping complete ones.
    pub fn run(&self, only: Option<Stage>) -> Result<PipelineOutcome> {
        let cx = Context { config: self.config, run: self.run, client: self.client, stop: self.stop };
        for stage in Stage::ALL.iter().copied().filter(|s| only.is_none_or(|o| o == *s)) {
            if let Some(record) = self.run.record(stage)? {
                tracing::info!("stage {stage}: already complete ({:.0} s), skipped", record.wall_secs);
                continue;
            }
            if let Some(reason) = self.stop.reason() {
                return Ok(PipelineOutcome::Stopped { stage, reason });
            }
            tracing::info!("stage {stage} started: {}", stage.title());
            let started = Instant::now();
            let cpu_start = process_cpu_secs();
            match run_stage(stage, &cx).map_err(|e| crate::error::Error::Invalid(format!("stage {stage}: {e}")))? {
                StageEnd::Completed(summary) => {
                    let wall_secs = started.elapsed().as_secs_f64();
                    let cpu_secs = process_cpu_secs().zip(cpu_start).map(|(end, start)| end - start);
                    self.run.mark_done(&StageRecord { stage: stage.name().to_string(), wall_secs, cpu_secs, summary })?;
                    tracing::info!("stage {stage} complete in {wall_secs:.1} s (CPU {:.1} s)", cpu_secs.unwrap_or(f64::NAN));
                }
                StageEnd::Stopped(reason) => return Ok(PipelineOutcome::Stopped { stage, reason }),
            }
        }
        Ok(PipelineOutcome::Finished)
    }
}
