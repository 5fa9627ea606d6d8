//! DalleBart training on the tiny config: the loss falls, data-parallel and
//! accumulated updates equal the plain single-device update, configs fail clearly.
mod common;
use common::*;
use dalle_xla::data::Synthetic;
use dalle_xla::train::{BatchSource, MetricsWriter, SyntheticSource, TrainConfig, Trainer};

fn tiny(overrides: &[&str]) -> TrainConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.yaml");
    TrainConfig::load(&path, &overrides).unwrap_or_else(|e| panic!("{e}")).0
}

fn source(config: &TrainConfig, start: u64) -> Box<dyn BatchSource> {
    let task = Synthetic {
        seed: config.train.seed,
        text_vocab: config.model.encoder_vocab_size,
        image_vocab: config.model.image_vocab_size,
        text_length: config.model.max_text_length as usize,
        image_length: config.model.image_length as usize,
        num_captions: config.data.num_captions,
    };
    Box::new(SyntheticSource { task, next: start })
}

fn trainer(config: &TrainConfig) -> Trainer {
    Trainer::new(&client(), config.clone(), source(config, 0), Some(source(config, 0))).unwrap_or_else(|e| panic!("{e}"))
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
    let diff = max_relative_difference(&a.values().unwrap(), &b.values().unwrap());
    assert!(diff < 1e-4, "parameters and optimizer state differ by {diff}");
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
fn run_logs_metrics_and_evaluates() {
    let dir = std::env::temp_dir().join(format!("dalle-train-run-{}", std::process::id()));
    let config = tiny(&["train.steps=20", "train.log_every=5", "train.eval_every=10", "train.devices=2"]);
    let mut t = trainer(&config);
    let mut metrics = MetricsWriter::new(&dir).unwrap();
    let mut seen = Vec::new();
    t.run(&mut metrics, |m| seen.push(m.clone())).unwrap();
    assert_eq!(seen.iter().map(|m| m.step).collect::<Vec<_>>(), vec![5, 10, 15, 20]);
    assert_eq!(seen.iter().filter(|m| m.eval_loss.is_some()).count(), 2);
    let lines = std::fs::read_to_string(metrics.path()).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let _ = std::fs::remove_dir_all(dir);
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
    let e = Trainer::new(&client(), tiny(&["train.batch_size=6", "train.devices=4"]), source(&tiny(&[]), 0), None).err().expect("6 over 4 devices");
    assert!(e.to_string().contains("train.batch_size"), "{e}");
}
