//! DalleBart training on the tiny config: the loss falls, data-parallel and
//! accumulated updates equal the plain single-device update, configs fail clearly.
mod common;
use common::*;
use dalle_xla::checkpoint::StopSignal;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{fit, FitOptions, Outcome, RunDir, Trainable};

fn tiny(overrides: &[&str]) -> TrainConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

fn trainer(config: &TrainConfig) -> Trainer {
    Trainer::new(&client(), config.clone()).unwrap_or_else(|e| panic!("{e}"))
}

fn max_relative_difference(a: &[(String, dalle_xla::HostTensor)], b: &[(String, dalle_xla::HostTensor)]) -> f64 {
    let mut worst: f64 = 0.0;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let (va, vb) = (ta.to_f64_vec(), tb.to_f64_vec());
        let scale = va.iter().map(|v| v.abs()).fold(1e-3, f64::max);
        for (x, y) in va.iter().zip(&vb) {
            worst = worst.max((x - y).abs() / scale);
        }
    }
    worst
}

#[test]
fn overfitting_a_few_captions_drives_the_loss_near_zero() {
    let config = tiny(&["data.num_captions=4", "train.steps=150", "train.eval_every=0", "optimizer.learning_rate=0.01", "train.devices=1"]);
    let mut t = trainer(&config);
    let first = t.train_step().unwrap().loss;
    let mut last = first;
    while t.step < config.train.steps {
        last = t.train_step().unwrap().loss;
    }
    let uniform = (config.model.image_vocab_size as f64 + 1.0).ln();
    assert!((first - uniform).abs() < 0.5, "the first loss {first} should be near ln(vocab) = {uniform}");
    assert!(last < 0.1, "loss after {} steps is {last} (started at {first})", t.step);
}

#[test]
fn eight_devices_equal_one_device_on_the_same_global_batch() {
    let one = tiny(&["train.devices=1", "train.batch_size=8"]);
    let eight = tiny(&["train.devices=8", "train.batch_size=8"]);
    let (mut a, mut b) = (trainer(&one), trainer(&eight));
    for _ in 0..3 {
        let (la, lb) = (a.train_step().unwrap(), b.train_step().unwrap());
        assert!((la.loss - lb.loss).abs() < 1e-5, "losses {} vs {}", la.loss, lb.loss);
        assert!((la.grad_norm - lb.grad_norm).abs() < 1e-4 * la.grad_norm.max(1.0), "grad norms {} vs {}", la.grad_norm, lb.grad_norm);
    }
    // Adam divides each gradient element by its own RMS, so an element whose
    // gradient sums contributions of opposite sign (a token embedding used
    // several times) carries the order of that sum, which differs between one
    // device and an all-reduce over eight, at the size of an update: 1.7e-4 of
    // the embedding's largest value after three steps. The losses and
    // gradient norms above hold the two runs to 1e-5 and 1e-4.
    let diff = max_relative_difference(&a.values().unwrap(), &b.values().unwrap());
    assert!(diff < 5e-4, "parameters and optimizer state differ by {diff}");
    // And the updates really moved the weights (so the comparison is not vacuous).
    let fresh = trainer(&one).values().unwrap();
    assert!(max_relative_difference(&fresh, &a.values().unwrap()) > 1e-3);
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    let plain = tiny(&["train.devices=2", "train.batch_size=8", "optimizer.kind=adafactor"]);
    let accumulated = tiny(&["train.devices=2", "train.batch_size=8", "train.gradient_accumulation=4", "optimizer.kind=adafactor"]);
    let (mut a, mut b) = (trainer(&plain), trainer(&accumulated));
    for _ in 0..3 {
        let (la, lb) = (a.train_step().unwrap(), b.train_step().unwrap());
        assert!((la.loss - lb.loss).abs() < 1e-5, "losses {} vs {}", la.loss, lb.loss);
    }
    let diff = max_relative_difference(&a.values().unwrap(), &b.values().unwrap());
    assert!(diff < 1e-4, "accumulated update differs by {diff}");
}

#[test]
fn bf16_compute_learns_with_f32_master_weights() {
    let config = tiny(&["train.dtype=bf16", "data.num_captions=4", "train.steps=60", "train.devices=1", "optimizer.learning_rate=0.01"]);
    let mut t = trainer(&config);
    let first = t.train_step().unwrap().loss;
    let mut last = first;
    while t.step < config.train.steps {
        last = t.train_step().unwrap().loss;
    }
    assert!(last < first * 0.5, "bf16 loss went from {first} to {last}");
    assert!(t.values().unwrap().iter().all(|(_, v)| v.dtype == dalle_xla::DType::F32), "master weights stay f32");
}

#[test]
fn fit_logs_metrics_evaluates_and_checkpoints() {
    let url = format!("memory://train-fit-{}/run", std::process::id());
    let config = tiny(&["train.steps=20", "train.log_every=5", "train.eval_every=10", "train.devices=2", "checkpoint.every_steps=10"]);
    let mut t = trainer(&config);
    let (mut run, restored) = RunDir::open(&url, "config: test", &config.checkpoint, &t.tensor_types()).unwrap();
    assert!(restored.is_none(), "a new run has nothing to restore");
    let stop = StopSignal::new();
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "test".into() };
    let mut seen = Vec::new();
    let outcome = fit(&mut t, &mut run, &options, |m| seen.push(m.clone())).unwrap();
    assert_eq!(outcome, Outcome::Finished { step: 20 });
    assert_eq!(seen.iter().map(|m| m.step).collect::<Vec<_>>(), vec![5, 10, 15, 20]);
    assert_eq!(seen.iter().filter(|m| m.eval_loss.is_some()).count(), 2);
    assert_eq!(run.metrics.records().len(), 4);
    let metrics = run.location.get("metrics.jsonl").unwrap().expect("metrics.jsonl written");
    assert_eq!(String::from_utf8(metrics).unwrap().lines().count(), 4);
    assert!(run.location.get("loss.png").unwrap().is_some(), "loss curve written");
    assert_eq!(run.checkpoints.committed_steps().unwrap(), vec![10, 20]);
}

#[test]
fn a_stop_signal_commits_a_checkpoint_and_resuming_continues_exactly() {
    let url = format!("memory://train-stop-{}/run", std::process::id());
    let config = tiny(&["train.steps=12", "train.devices=2", "train.eval_every=0", "train.log_every=1", "data.num_captions=64"]);
    let stop = StopSignal::new();
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "test".into() };

    // The uninterrupted run.
    let mut reference = trainer(&config);
    for _ in 0..12 {
        reference.train_step().unwrap();
    }

    // Stopped after 5 updates...
    let mut first = trainer(&config);
    let (mut run, _) = RunDir::open(&url, "config: test", &config.checkpoint, &first.tensor_types()).unwrap();
    let outcome = fit(&mut first, &mut run, &options, |m| {
        if m.step == 5 {
            stop.request(dalle_xla::checkpoint::StopReason::Terminate)
        }
    });
    let outcome = outcome.unwrap();
    assert!(matches!(outcome, Outcome::Stopped { step: 5, .. }), "{outcome:?}");
    assert_eq!(run.checkpoints.committed_steps().unwrap(), vec![5]);
    drop(run);

    // ... then resumed by a new trainer from the committed checkpoint.
    let stop = StopSignal::new();
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "test".into() };
    let mut second = trainer(&config);
    let (mut run, restored) = RunDir::open(&url, "config: test", &config.checkpoint, &second.tensor_types()).unwrap();
    second.restore(&restored.expect("the stop committed a checkpoint")).unwrap();
    assert_eq!(second.step, 5);
    assert_eq!(fit(&mut second, &mut run, &options, |_| {}).unwrap(), Outcome::Finished { step: 12 });
    assert_eq!(second.values().unwrap(), reference.values().unwrap(), "resumed run must end bit-identical to the uninterrupted one");
}

#[test]
fn resuming_with_a_different_model_shape_is_refused() {
    let url = format!("memory://train-shape-{}/run", std::process::id());
    let config = tiny(&["train.steps=2", "train.devices=1", "train.eval_every=0"]);
    let mut t = trainer(&config);
    let (mut run, _) = RunDir::open(&url, "a", &config.checkpoint, &t.tensor_types()).unwrap();
    let stop = StopSignal::new();
    fit(&mut t, &mut run, &FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "t".into() }, |_| {}).unwrap();
    drop(run);
    let wider = trainer(&tiny(&["train.devices=1", "model.d_model=64"]));
    let err = RunDir::open(&url, "b", &config.checkpoint, &wider.tensor_types()).err().expect("shape change refused");
    assert!(err.to_string().contains("cannot resume"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    let err = |o: &str| TrainConfig::load(&path, &[o.to_string()]).unwrap_err().to_string();
    assert!(err("optimizer.learning_rat=0.1").contains("optimizer.learning_rat"), "{}", err("optimizer.learning_rat=0.1"));
    assert!(err("optimizer.learning_rat=0.1").contains("learning_rate"), "suggests the right key");
    assert!(err("train.batch_size=many").contains("train.batch_size"), "{}", err("train.batch_size=many"));
    assert!(err("optimizer.kind=sgd").contains("optimizer.kind"), "{}", err("optimizer.kind=sgd"));
    assert!(err("model.d_model=30").contains("model.d_model"), "{}", err("model.d_model=30"));
    assert!(err("train.dtype=f8").contains("train.dtype"));
    let e = Trainer::new(&client(), tiny(&["train.batch_size=6", "train.devices=4"])).err().expect("6 over 4 devices");
    assert!(e.to_string().contains("train.batch_size"), "{e}");
}

/// Resumes `trainer` from the run at `url` as `dalle train` does.
fn resume(trainer: &mut Trainer, url: &str, config: &TrainConfig) -> dalle_xla::error::Result<RunDir> {
    let storage = dalle_xla::storage::StorageOptions::default();
    RunDir::resume(trainer, url, &storage, "config: test", &config.checkpoint, RunDir::lease(url, &storage)?)
}

/// Flips a byte in the middle of the last tensor file of checkpoint `step`.
fn damage_last_file(run: &RunDir, step: u64) {
    let manifest = run.checkpoints.manifest(step).unwrap();
    assert!(manifest.files.len() >= 3, "step {step} is {} file(s): too few to be streamed halfway", manifest.files.len());
    let name = format!("checkpoints/step_{step}/{}", manifest.files.last().unwrap().name);
    let mut bytes = run.location.get(&name).unwrap().expect("the file exists");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    run.location.put(&name, bytes).unwrap();
}

#[test]
fn a_resume_that_finds_the_newest_checkpoint_damaged_halfway_restores_the_one_before() {
    let url = format!("memory://train-damaged-{}/run", std::process::id());
    // About 2 MiB of parameters and state, in files of at most 1 MiB: the
    // stream hands the model the first files of step 4 before it reads the
    // damaged last one.
    let config = tiny(&[
        "train.steps=4", "train.devices=2", "train.eval_every=0", "checkpoint.every_steps=2", "checkpoint.max_file_mib=1",
        "model.d_model=128", "model.encoder_ffn_dim=512", "model.decoder_ffn_dim=512",
    ]);
    let mut first = trainer(&config);
    let mut run = resume(&mut first, &url, &config).unwrap();
    let stop = StopSignal::new();
    fit(&mut first, &mut run, &FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "t".into() }, |_| {}).unwrap();
    let at_step_2 = run.checkpoints.restore(2).unwrap();
    damage_last_file(&run, 4);
    drop(run);

    let mut resumed = trainer(&config);
    let run = resume(&mut resumed, &url, &config).unwrap();
    assert_eq!(resumed.step, 2, "step 4 is damaged: the resume falls back to step 2");
    assert!(resumed.values().unwrap() == at_step_2.tensors, "nothing of the damaged step 4 is left in the state");
    resumed.train_step().expect("the restored state trains");

    // With no usable step left, the resume fails, and so does training with
    // the half-restored trainer, naming why.
    damage_last_file(&run, 2);
    drop(run);
    let mut stranded = trainer(&config);
    let err = resume(&mut stranded, &url, &config).err().expect("no usable checkpoint").to_string();
    assert!(err.contains("none is usable"), "{err}");
    let err = stranded.train_step().err().expect("no weights to train").to_string();
    assert!(err.contains("holds no weights"), "{err}");
}
