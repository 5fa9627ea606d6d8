//! Stage `clip`: trains a small CLIP contrastively on the training split's
//! images and captions (loss also on the held-out split) and exports it as a
//! Hugging Face directory, `clip/model`, which the generate stage reranks with.

use super::training::{final_losses, train};
use super::vqgan::path_string;
use super::{Context, StageEnd};
use crate::error::Result;
use crate::models::clip::{export_hf, ClipTrainer};
use crate::pipeline::config::paths;
use crate::pipeline::stage::Stage;

/// Folder of the export inside the CLIP run (`paths::CLIP_MODEL` from the run directory).
const EXPORT_DIR: &str = "model";

pub fn run(cx: &Context) -> Result<StageEnd> {
    let mut config = cx.config.clip.clone();
    config.data.images = path_string(&cx.run.input(Stage::Clip, paths::SHAPES_TRAIN, Stage::Shapes)?);
    config.data.eval_images = Some(path_string(&cx.run.input(Stage::Clip, paths::SHAPES_HELDOUT, Stage::Shapes)?));
    config.train.run_dir = path_string(&cx.run.path(paths::CLIP_RUN));
    let mut trainer = ClipTrainer::new(cx.client, config.clone())?;
    let run = match train(&mut trainer, "clip", &config, cx.stop)? {
        Ok(run) => run,
        Err(end) => return Ok(end),
    };
    export_hf(&trainer, &run.location, EXPORT_DIR)?;
    let (loss, eval_loss) = final_losses(&run);
    let accuracy = run.metrics.records().last().and_then(|m| m.extra.get("accuracy").copied());
    Ok(StageEnd::Completed(serde_json::json!({
        "steps": config.train.steps,
        "parameters": trainer.parameter_count(),
        "final_loss": loss,
        "final_heldout_eval_loss": eval_loss,
        "final_in_batch_accuracy": accuracy,
        "images_skipped": trainer.skipped_images().skipped.len(),
    })))
}
