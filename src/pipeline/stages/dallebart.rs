//! Stage `dallebart`: trains the seq2seq model from captions to VQGAN tokens
//! on the encoded training split; its evaluation loss is measured on the
//! held-out split, so it tracks generalisation to unseen combinations.

use super::training::{final_losses, train};
use super::vqgan::path_string;
use super::{Context, StageEnd};
use crate::error::{Error, Result};
use crate::pipeline::config::paths;
use crate::pipeline::stage::Stage;
use crate::models::dallebart::Trainer;

pub fn run(cx: &Context) -> Result<StageEnd> {
    let mut config = cx.config.dallebart.clone();
    config.data.train_files = vec![path_string(&cx.run.input(Stage::Dallebart, paths::ENCODED_TRAIN, Stage::Encode)?)];
    config.data.eval_files = vec![path_string(&cx.run.input(Stage::Dallebart, paths::ENCODED_HELDOUT, Stage::Encode)?)];
    let tokenizer = cx.run.input(Stage::Dallebart, paths::TOKENIZER, Stage::Encode)?;
    let vocab = crate::data::TextEncoder::load(&path_string(&tokenizer), 8)?.vocab_size();
    if vocab as i64 > config.model.encoder_vocab_size {
        return Err(Error::Invalid(format!(
            "the tokenizer {} has {vocab} tokens but dallebart.model.encoder_vocab_size is {}; raise it",
            tokenizer.display(),
            config.model.encoder_vocab_size
        )));
    }
    config.data.tokenizer = Some(path_string(&tokenizer));
    config.train.run_dir = path_string(&cx.run.path(paths::DALLEBART_RUN));
    let mut trainer = Trainer::new(cx.client, config.clone())?;
    let run = match train(&mut trainer, "dallebart", &config, cx.stop)? {
        Ok(run) => run,
        Err(end) => return Ok(end),
    };
    let skipped = trainer.data_counts().bad_rows();
    let (loss, eval) = final_losses(&run);
    let first_eval = run.metrics.records().iter().find_map(|m| m.eval_loss);
    Ok(StageEnd::Completed(serde_json::json!({
        "steps": config.train.steps,
        "parameters": trainer.parameter_count(),
        "final_loss": loss,
        "first_heldout_eval_loss": first_eval,
        "final_heldout_eval_loss": eval,
        "bad_rows_skipped": skipped,
    })))
}
