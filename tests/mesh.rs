//! DalleBart training sharded over a (data, model) device mesh on 8 CPU
//! devices: the same updates as plain data parallelism, each device holding
//! its share of the state, checkpoints that move between meshes, and clear
//! errors for meshes that cannot work.
mod common;
use common::*;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::Trainable;

fn tiny(optimizer: &str, extra: &[&str]) -> TrainConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    // 63 image codes: lm_head's 64 output rows split over a model axis of 2 or 4.
    let mut overrides: Vec<String> =
        ["train.devices=8", "train.eval_every=0", "model.image_vocab_size=63", &format!("optimizer.kind={optimizer}")].iter().map(|s| s.to_string()).collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

fn mesh(data: usize, model: usize) -> String {
    format!("train.mesh={{data: {data}, model: {model}}}")
}

fn trainer(config: TrainConfig) -> Trainer {
    Trainer::new(&client(), config).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_same_values(got: &Trainer, want: &Trainer, tol: f64, what: &str) {
    let (got, want) = (got.values().unwrap(), want.values().unwrap());
    assert_eq!(got.len(), want.len());
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!(g.shape, w.shape, "{what}: {name} keeps its whole shape");
        assert_close(&g.to_f64_vec(), &w.to_f64_vec(), tol, &format!("{what}: {name}"));
    }
}

#[test]
fn sharded_steps_equal_the_replicated_steps() {
    for (optimizer, meshes) in [("adamw", &[(8, 1), (4, 2), (2, 4)][..]), ("adafactor", &[(8, 1), (4, 2), (2, 4)][..])] {
        let mut replicated = trainer(tiny(optimizer, &[]));
        let losses: Vec<f64> = (0..3).map(|_| replicated.train_step().unwrap().loss).collect();
        for &(data, model) in meshes {
            let what = format!("{optimizer} on mesh {{data: {data}, model: {model}}}");
            let mut sharded = trainer(tiny(optimizer, &[&mesh(data, model)]));
            for (step, want) in losses.iter().enumerate() {
                let got = sharded.train_step().unwrap().loss;
                assert_close(&[got], &[*want], 1e-5, &format!("{what}: loss of step {}", step + 1));
            }
            assert_same_values(&sharded, &replicated, 1e-5, &what);
        }
    }
}

#[test]
fn each_device_holds_its_share_of_the_state() {
    for optimizer in ["adamw", "adafactor"] {
        let replicated = trainer(tiny(optimizer, &[]));
        let full = replicated.elements_per_device().unwrap();
        assert!(full.iter().all(|&n| n == full[0]), "every replica holds everything");
        for (data, model) in [(8, 1), (4, 2), (2, 4)] {
            let sharded = trainer(tiny(optimizer, &[&mesh(data, model)]));
            let per_device = sharded.elements_per_device().unwrap();
            assert_eq!(per_device.len(), 8);
            for (d, &n) in per_device.iter().enumerate() {
                // Only tensors no axis divides (a few norm scales) stay whole.
                let share = n as f64 / full[0] as f64;
                assert!(share < 1.0 / 8.0 + 0.02, "{optimizer} on mesh {{{data}, {model}}}: device {d} holds {n} of {} elements ({share:.3})", full[0]);
            }
        }
    }
}

/// Every tensor of `got` equals `want` bit for bit.
fn assert_bit_identical(got: &Trainer, want: &Trainer, what: &str) {
    for ((name, g), (_, w)) in got.values().unwrap().iter().zip(&want.values().unwrap()) {
        assert!(g == w, "{what}: {name} differs");
    }
}

#[test]
fn a_checkpoint_moves_between_meshes() {
    let on_8x1 = tiny("adamw", &[&mesh(8, 1)]);
    let mut first = trainer(on_8x1.clone());
    for _ in 0..2 {
        first.train_step().unwrap();
    }
    let saved = first.snapshot().unwrap().to_checkpoint();
    let again_on_8x1 = || Trainer::with_programs(&client(), on_8x1.clone(), Some(first.programs())).unwrap_or_else(|e| panic!("{e}"));

    let mut moved = trainer(tiny("adamw", &[&mesh(2, 4)]));
    moved.restore(&saved).unwrap();
    // Resharding loses nothing: the restored state is the saved state, bit for bit.
    for ((name, got), (_, want)) in moved.values().unwrap().iter().zip(&saved.tensors) {
        assert_eq!(got, want, "{name} after moving to mesh {{2, 4}}");
    }
    // A detour through another mesh leaves the run as it was: saved again from
    // {2, 4}'s shards and restored on {8, 1}, it goes on exactly as the run
    // that never left (optimizer step count, data position and all).
    let mut back = again_on_8x1();
    back.restore(&moved.snapshot().unwrap().to_checkpoint()).unwrap();
    let mut resumed = again_on_8x1();
    resumed.restore(&saved).unwrap();

    for step in 3..=4 {
        let want = first.train_step().unwrap().loss;
        let (after_detour, after_resume) = (back.train_step().unwrap().loss, resumed.train_step().unwrap().loss);
        assert_eq!(after_detour.to_bits(), want.to_bits(), "step {step} after the detour through {{2, 4}}");
        assert_eq!(after_resume.to_bits(), want.to_bits(), "step {step} after resuming on {{8, 1}}");
        // {2, 4} sums the batch and the split contractions in another order:
        // the same updates, not the same bits.
        assert_close(&[moved.train_step().unwrap().loss], &[want], 1e-5, &format!("step {step} on mesh {{2, 4}} after the move"));
    }
    assert_bit_identical(&back, &first, "after the detour through {2, 4}");
    assert_bit_identical(&resumed, &first, "after resuming on {8, 1}");
    assert_same_values(&moved, &first, 1e-5, "two steps on {2, 4} after the move");

    // And onto plain data parallelism.
    let mut plain = trainer(tiny("adamw", &[]));
    plain.restore(&saved).unwrap();
    assert_eq!(plain.values().unwrap(), saved.tensors, "restored without a mesh");
}

#[test]
fn adafactor_and_shampoo_state_moves_between_meshes_bit_for_bit() {
    // Shampoo as in `shampoo_state_shards_like_any_state`: after 4 steps its
    // statistics, preconditioners and grafting state are all in use.
    let shampoo = ["model.encoder_layers=1", "model.decoder_layers=1", "optimizer.block_size=16", "optimizer.start_preconditioning_step=2", "optimizer.preconditioning_compute_steps=2"];
    for (optimizer, extra) in [("adafactor", &[][..]), ("shampoo", &shampoo[..])] {
        let on = |data, model| {
            let m = mesh(data, model);
            tiny(optimizer, &extra.iter().copied().chain([m.as_str()]).collect::<Vec<_>>())
        };
        let mut first = trainer(on(4, 2));
        for _ in 0..4 {
            first.train_step().unwrap();
        }
        let saved = first.snapshot().unwrap().to_checkpoint();
        let mut moved = trainer(on(2, 4));
        moved.restore(&saved).unwrap();
        for ((name, got), (_, want)) in moved.values().unwrap().iter().zip(&saved.tensors) {
            assert!(got == want, "{optimizer}: {name} after moving from {{4, 2}} to {{2, 4}}");
        }
        let mut back = Trainer::with_programs(&client(), on(4, 2), Some(first.programs())).unwrap();
        back.restore(&moved.snapshot().unwrap().to_checkpoint()).unwrap();
        // Steps 5 and 6 refresh the preconditioners from the moved statistics.
        for step in 5..=6 {
            let (want, got) = (first.train_step().unwrap().loss, back.train_step().unwrap().loss);
            assert_eq!(got.to_bits(), want.to_bits(), "{optimizer}: step {step} after the detour through {{2, 4}}");
        }
        assert_bit_identical(&back, &first, &format!("{optimizer} after the detour through {{2, 4}}"));
        let mut plain = trainer(tiny(optimizer, extra));
        plain.restore(&saved).unwrap();
        assert!(plain.values().unwrap() == saved.tensors, "{optimizer}: restored without a mesh");
    }
}

#[test]
fn meshes_that_cannot_work_are_refused_by_name() {
    let e = Trainer::new(&client(), tiny("adamw", &[&mesh(4, 1)])).err().expect("4 x 1 on 8 devices").to_string();
    assert!(e.contains("train.mesh") && e.contains("multiply to the device count"), "{e}");
    // 65 image-token rows (64 codes + start token) cannot split over a model axis of 2.
    let e = Trainer::new(&client(), tiny("adamw", &[&mesh(4, 2), "model.image_vocab_size=64"])).err().expect("65 rows over 2").to_string();
    assert!(e.contains("decoder.embed_tokens.embedding") && e.contains("model axis (2)") && e.contains("(65)"), "{e}");
    let e = Trainer::new(&client(), tiny("adamw", &[&mesh(8, 1), "train.batch_size=4"])).err().expect("batch 4 over data 8").to_string();
    assert!(e.contains("train.batch_size") && e.contains("data axis"), "{e}");
    let e = TrainConfig::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml"), &["train.mesh={data: 8, modle: 1}".into()])
        .err()
        .expect("a misspelt axis")
        .to_string();
    assert!(e.contains("modle"), "{e}");
}

#[test]
fn shampoo_state_shards_like_any_state() {
    // One layer each side; blocks of 16 cut every matrix and the merged
    // embeddings into many blocks; preconditioners start at step 2 and
    // refresh every 2 steps, so 4 steps use statistics, roots and grafting.
    let shampoo = [
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        "optimizer.block_size=16",
        "optimizer.start_preconditioning_step=2",
        "optimizer.preconditioning_compute_steps=2",
    ];
    let mut replicated = trainer(tiny("shampoo", &shampoo));
    let losses: Vec<f64> = (0..4).map(|_| replicated.train_step().unwrap().loss).collect();
    let want = replicated.values().unwrap();
    let full = replicated.elements_per_device().unwrap()[0];
    for (data, model) in [(4, 2), (8, 1), (2, 4)] {
        let what = format!("shampoo on mesh {{{data}, {model}}}");
        let mut extra = shampoo.to_vec();
        let on_mesh = mesh(data, model);
        extra.push(&on_mesh);
        // The refresh inverts the 16x16 statistics five at a time, in
        // several chunks.
        extra.push("optimizer.refresh_chunk_mib=0.005");
        let mut sharded = trainer(tiny("shampoo", &extra));
        for (d, n) in sharded.elements_per_device().unwrap().into_iter().enumerate() {
            // Statistics and preconditioners are sharded like any state.
            let share = n as f64 / full as f64;
            assert!(share < 1.0 / 8.0 + 0.02, "{what}: device {d} holds {n} of {full} elements ({share:.3})");
        }
        for (step, want) in losses.iter().enumerate() {
            assert_close(&[sharded.train_step().unwrap().loss], &[*want], 1e-5, &format!("{what}: loss of step {}", step + 1));
        }
        // Parameters within 1e-5. Optimizer state within 1e-4 of each tensor's
        // largest value: rmsprop_normalized grafting divides every gradient
        // element by its own running RMS, so an element whose gradient is near
        // zero carries the mesh's different reduction order at full size (one
        // graft_momentum element differs by 7.6e-4 in a tensor of values up to
        // 10); the parameters take lr times it.
        let got = sharded.values().unwrap();
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(g.shape, w.shape, "{name} keeps its whole shape");
            let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
            if name.contains('/') {
                let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let (at, diff) = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
                assert!(diff <= 1e-4 * scale, "{what}: {name}: element {at} differs by {diff:e}, over 1e-4 of the tensor's scale {scale}");
            } else {
                assert_close(&g, &w, 1e-5, &format!("{what}: {name}"));
            }
        }
    }
}

#[test]
fn a_scanned_model_with_shampoo_on_a_mesh_follows_the_unrolled_replicated_run() {
    // Two layers each side, so the optimizer's loops over the layer stacks
    // run more than once, on sharded stacks of parameters and statistics.
    let shampoo = [
        "model.encoder_layers=2",
        "model.decoder_layers=2",
        "optimizer.block_size=16",
        "optimizer.start_preconditioning_step=2",
        "optimizer.preconditioning_compute_steps=2",
    ];
    let mut replicated = trainer(tiny("shampoo", &shampoo));
    let mut extra = shampoo.to_vec();
    let on_mesh = mesh(4, 2);
    extra.extend([on_mesh.as_str(), "model.scan_layers=true"]);
    let mut scanned = trainer(tiny("shampoo", &extra));
    for step in 1..=4 {
        let (want, got) = (replicated.train_step().unwrap().loss, scanned.train_step().unwrap().loss);
        assert_close(&[got], &[want], 1e-5, &format!("loss of step {step}"));
    }
    let (got, want) = (scanned.values().unwrap(), replicated.values().unwrap());
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        // Parameters within 1e-5; state within 1e-4 of each tensor's largest
        // value, as in `shampoo_state_shards_like_any_state`, except the
        // grafted momentum within 1e-3: the scanned model's gradients differ
        // from the unrolled one's in the last bits too, and rmsprop_normalized
        // grafting divides each gradient element by its own running RMS, so
        // an element whose gradient is near zero carries those bits at full
        // size (5.2e-3 in a tensor of values up to 10; the parameters take
        // the learning rate times it, within 6e-6).
        let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
        if name.contains('/') {
            let tol = if name.ends_with("/graft_momentum") { 1e-3 } else { 1e-4 };
            let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff <= tol * scale, "{name}: differs by {diff:e}, over {tol} of the tensor's scale {scale}");
        } else {
            assert_close(&g, &w, 1e-5, name);
        }
    }
}
