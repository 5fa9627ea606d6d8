//! One file per stage. Each reads its inputs from the run directory (an
//! error names the stage that makes a missing one), writes its outputs
//! resumably, and returns the figures it measured for the report.

mod clip;
mod dallebart;
mod encode;
mod generate;
mod judge;
mod report;
mod shapes;
mod training;
mod vqgan;

pub use judge::{judge, reconstruct, row_scores, AttributeScores, Judgement, RowScores, JUDGE_FILE};

use super::config::PipelineConfig;
use super::run::PipelineRun;
use super::stage::Stage;
use crate::checkpoint::{StopReason, StopSignal};
use crate::error::Result;
use crate::pjrt::Client;

/// What a stage has to work with.
pub struct Context<'a> {
    pub config: &'a PipelineConfig,
    pub run: &'a PipelineRun,
    pub client: &'a Client,
    pub stop: &'a StopSignal,
}

/// How a stage ended.
pub enum StageEnd {
    /// Done; the figures go into its record.
    Completed(serde_json::Value),
    /// A stop signal arrived; what was done is saved and a rerun continues.
    Stopped(StopReason),
}

pub fn run_stage(stage: Stage, cx: &Context) -> Result<StageEnd> {
    match stage {
        Stage::Shapes => shapes::run(cx),
        Stage::Vqgan => vqgan::run(cx),
        Stage::Encode => encode::run(cx),
        Stage::Dallebart => dallebart::run(cx),
        Stage::Clip => clip::run(cx),
        Stage::Generate => generate::run(cx),
        Stage::Judge => judge::run(cx),
        Stage::Report => report::run(cx),
    }
}
