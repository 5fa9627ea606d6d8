//! Stage `vqgan`: trains the image tokenizer on the training split (PSNR on
//! the held-out split) and writes `vqgan/vqgan.safetensors`.

use super::training::{final_losses, train};
use super::{Context, StageEnd};
use crate::error::Result;
use crate::host::HostTensor;
use crate::models::vqgan::{psnr, weights_file, VqganTrainer, WEIGHTS_FILE};
use crate::pipeline::config::paths;
use crate::pipeline::stage::Stage;

pub fn run(cx: &Context) -> Result<StageEnd> {
    let mut config = cx.config.vqgan.clone();
    config.data.images = path_string(&cx.run.input(Stage::Vqgan, paths::SHAPES_TRAIN, Stage::Shapes)?);
    config.data.eval_images = Some(path_string(&cx.run.input(Stage::Vqgan, paths::SHAPES_HELDOUT, Stage::Shapes)?));
    config.train.run_dir = path_string(&cx.run.path(paths::VQGAN_RUN));
    let mut trainer = VqganTrainer::new(cx.client, config.clone())?;
    let run = match train(&mut trainer, "vqgan", &config, cx.stop)? {
        Ok(run) => run,
        Err(end) => return Ok(end),
    };
    let weights: Vec<(String, HostTensor)> = trainer.parameters()?.into_iter().collect();
    run.location.put(WEIGHTS_FILE, weights_file(&config.model, &weights)?)?;
    let skipped = trainer.skipped_images();
    let (loss, eval_mse) = final_losses(&run);
    Ok(StageEnd::Completed(serde_json::json!({
        "steps": config.train.steps,
        "final_loss": loss,
        "heldout_psnr_db": eval_mse.map(psnr),
        "images_skipped": skipped.skipped.len(),
    })))
}

pub fn path_string(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}
