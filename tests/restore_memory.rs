//! A restore uploads straight from the checkpoint it read: the host holds the
//! checkpoint and the devices' new buffers, not further copies of the whole
//! state (for mega with Shampoo, 80 GiB of whole tensors). Its own test
//! binary, because it measures the peak of the whole process's heap.
mod common;
use common::*;
use dalle_xla::host::heap;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::Trainable;

const MIB: f64 = (1 << 20) as f64;

#[test]
fn restoring_holds_no_extra_copies_of_the_checkpoint() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    // About 50 MiB of parameters and AdamW state on one device.
    let overrides: Vec<String> =
        ["train.devices=1", "train.eval_every=0", "model.d_model=256", "model.encoder_ffn_dim=1024", "model.decoder_ffn_dim=1024"].iter().map(|s| s.to_string()).collect();
    let config: TrainConfig = TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0;
    let mut trainer = Trainer::new(&client(), config.clone()).unwrap();
    trainer.train_step().unwrap();
    let checkpoint = trainer.snapshot().unwrap().to_checkpoint();
    drop(trainer);
    let state: usize = checkpoint.tensors.iter().map(|(_, t)| t.data.len()).sum();
    assert!(state as f64 > 40.0 * MIB, "the state is {:.1} MiB", state as f64 / MIB);
    let mut trainer = Trainer::new(&client(), config).unwrap();

    let before = heap::reset_peak();
    trainer.restore(&checkpoint).unwrap();
    let extra = heap::peak() - before;
    // The device buffers are the plugin's, not on this heap; each copy of the
    // checkpoint our code makes on the way is (0.04 MiB measured; one copy
    // of this 55 MiB state adds 55 MiB).
    assert!(
        (extra as f64) < 0.1 * state as f64,
        "restoring {:.1} MiB of state held {:.1} MiB more at its peak",
        state as f64 / MIB,
        extra as f64 / MIB
    );
    assert_eq!(trainer.values().unwrap().into_iter().map(|(_, t)| t).collect::<Vec<_>>(), checkpoint.tensors.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());
}
