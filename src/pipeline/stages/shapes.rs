//! Stage `shapes`: the held-out triples, the training split (scenes that
//! show none of them) and the held-out split (scenes that show at least one).

use super::{Context, StageEnd};
use crate::data::shapes::{generate_where, HeldOut};
use crate::error::Result;
use crate::pipeline::config::paths;
use crate::pipeline::run::write_atomically;

pub fn run(cx: &Context) -> Result<StageEnd> {
    let s = &cx.config.shapes;
    let held = HeldOut::choose(s.held_out_fraction, s.seed)?;
    write_atomically(&cx.run.path(paths::SPLIT), &held.to_json()?)?;
    tracing::info!("holding out {} of the 216 (colour, shape, position) triples", held.triples.len());
    // Both splits draw from one scene stream with disjoint filters, so no
    // scene (and no caption) can land in both.
    let train = generate_where(s.train_images, s.size, s.seed, &cx.run.path(paths::SHAPES_TRAIN), |scene| !held.touches(scene))?;
    if let Some(reason) = cx.stop.reason() {
        return Ok(StageEnd::Stopped(reason));
    }
    let heldout = generate_where(s.heldout_images, s.size, s.seed, &cx.run.path(paths::SHAPES_HELDOUT), |scene| held.touches(scene))?;
    tracing::info!(
        "shapes: {} training images ({} written), {} held-out images ({} written)",
        s.train_images,
        train.written,
        s.heldout_images,
        heldout.written
    );
    Ok(StageEnd::Completed(serde_json::json!({
        "held_out_triples": held.triples.len(),
        "train_images": s.train_images,
        "heldout_images": s.heldout_images,
    })))
}
