//! The stages, in order, with the folders they write and the config
//! sections that decide them.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Shapes,
    Vqgan,
    Encode,
    Dallebart,
    Clip,
    Generate,
    Judge,
    Report,
}

impl Stage {
    pub const ALL: [Stage; 8] = [Stage::Shapes, Stage::Vqgan, Stage::Encode, Stage::Dallebart, Stage::Clip, Stage::Generate, Stage::Judge, Stage::Report];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Shapes => "shapes",
            Stage::Vqgan => "vqgan",
            Stage::Encode => "encode",
            Stage::Dallebart => "dallebart",
            Stage::Clip => "clip",
            Stage::Generate => "generate",
            Stage::Judge => "judge",
            Stage::Report => "report",
        }
    }

    pub fn parse(name: &str) -> Result<Stage> {
        Stage::ALL.iter().copied().find(|s| s.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
            Error::Invalid(format!("unknown stage '{name}' (stages: {})", names.join(", ")))
        })
    }

    /// What the stage does, for logs and the report.
    pub fn title(self) -> &'static str {
        match self {
            Stage::Shapes => "make the shapes dataset (training split and held-out combinations)",
            Stage::Vqgan => "train the VQGAN",
            Stage::Encode => "train the caption tokenizer and encode both splits with the VQGAN",
            Stage::Dallebart => "train DalleBart on the encoded training split",
            Stage::Clip => "train CLIP on the training split's images and captions (to rerank generated images)",
            Stage::Generate => "generate images for held-out and training captions (super-conditioning), scored by CLIP",
            Stage::Judge => "judge real, reconstructed, generated and mismatched images with the shapes checker",
            Stage::Report => "write report.md, report.json and the pictures",
        }
    }

    /// Files and folders (relative to the run directory) the stage writes;
    /// a restart of the stage removes them.
    pub fn outputs(self) -> &'static [&'static str] {
        use super::config::paths::*;
        match self {
            Stage::Shapes => &["shapes"],
            Stage::Vqgan => &[VQGAN_RUN],
            Stage::Encode => &["encoded"],
            Stage::Dallebart => &[DALLEBART_RUN],
            Stage::Clip => &[CLIP_RUN],
            Stage::Generate => &[GENERATED],
            Stage::Judge => &[JUDGE],
            Stage::Report => &[REPORT_DIR, REPORT_MD, REPORT_JSON],
        }
    }

    /// The stage a top-level config section belongs to; `None` for keys
    /// that decide nothing by themselves (the preset name and table: their
    /// effect shows in the keys they set).
    pub fn of_config_key(key: &str) -> Option<Stage> {
        match key.split('.').next().unwrap_or_default() {
            "shapes" => Some(Stage::Shapes),
            "vqgan" => Some(Stage::Vqgan),
            "tokenizer" => Some(Stage::Encode),
            "dallebart" => Some(Stage::Dallebart),
            "clip" => Some(Stage::Clip),
            "generate" => Some(Stage::Generate),
            "report" => Some(Stage::Report),
            _ => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
