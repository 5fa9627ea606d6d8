//! Fine-tuning from released weights (`model.init_from`): a new run starts
//! from the imported weights with their tokenizer, so its first loss is the
//! reference model's loss on that batch (tests/fixtures/released, made by
//! tools/make_released_fixtures.py with dalle-mini's processor and model);
//! a resumed run restores its own checkpoint; the run exports back.
mod common;
use common::*;
use dalle_xla::checkpoint::StopSignal;
use dalle_xla::data::TextEncoder;
use dalle_xla::models::convert::{convert_dir, ConvertOptions};
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::train::{fit, FitOptions, Outcome, RunDir, Trainable};
use dalle_xla::weights::load_safetensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-finetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A training config that names only the weights: the model keys and the tokenizer come from them.
fn write_config(dir: &Path, init_from: &Path, run: &str, steps: u64) -> PathBuf {
    let path = dir.join("finetune.yaml");
    let yaml = format!(
        "model:\n  init_from: {}\noptimizer:\n  kind: adamw\n  learning_rate: 0.001\ntrain:\n  batch_size: 4\n  steps: {steps}\n  devices: 1\n  log_every: 1\n  eval_every: 0\n  run_dir: {run}\ndata:\n  kind: files\n  train_files: [{}]\n  shuffle_buffer: 1\n",
        init_from.display(),
        fixture("dallebart_f32").join("finetune.jsonl").display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn first_loss_equals_the_reference_loss_and_resume_continues() {
    let dir = scratch("loss");
    let converted = dir.join("mini");
    convert_dir(&fixture("dallebart_f32"), &converted, &ConvertOptions::default()).unwrap();
    let expected = load_safetensors(&fixture("dallebart_f32").join("expected.safetensors")).unwrap();

    // From the converted directory and from the released (flax) one directly;
    // the step programs depend only on the model config, so they are compiled once.
    let mut programs = None;
    for source in [converted.clone(), fixture("dallebart_f32")] {
        let run = format!("memory://finetune-{}-{}/run", source.file_name().unwrap().to_string_lossy(), std::process::id());
        let (config, _) = TrainConfig::load(&write_config(&dir, &source, &run, 3), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.model.encoder_vocab_size, 300, "model keys come from the weights");
        let tokenizer = config.data.tokenizer.clone().expect("the tokenizer comes with the weights");
        assert!(tokenizer.ends_with("tokenizer.json") && tokenizer.starts_with(source.to_str().unwrap()), "{tokenizer}");

        // Our text pipeline gives dalle-mini's processor's ids for these captions.
        let text = TextEncoder::load(&tokenizer, 16).unwrap();
        let ids: Vec<i32> = ["a red square", "two blue circles", "a green triangle on a white background", "a yellow star"]
            .iter()
            .flat_map(|c| text.encode(c).unwrap().input_ids)
            .collect();
        assert_eq!(ids, expected["ft/input_ids"].to_vec::<i32>().unwrap(), "token ids");

        let mut trainer = Trainer::with_programs(&client(), config.clone(), programs.clone()).unwrap_or_else(|e| panic!("{e}"));
        programs = Some(trainer.programs());
        let first = trainer.train_step().unwrap();
        // The batch holds all four rows, so its mean loss does not depend on their order.
        assert_close(&[first.loss], &expected["ft/loss"].to_f64_vec(), 1e-5, "first fine-tuning loss");
        let second = trainer.train_step().unwrap();
        assert!(second.loss < first.loss, "training moves: {} then {}", first.loss, second.loss);
    }

    // Resume: a run stopped after 2 steps continues from its checkpoint, not from the imported weights.
    let run = format!("memory://finetune-resume-{}/run", std::process::id());
    let (config, _) = TrainConfig::load(&write_config(&dir, &converted, &run, 4), &[]).unwrap();
    let new = |c: &TrainConfig| Trainer::with_programs(&client(), c.clone(), programs.clone()).unwrap();
    let mut reference = new(&config);
    let mut losses = Vec::new();
    for _ in 0..4 {
        losses.push(reference.train_step().unwrap().loss);
    }
    let stop = StopSignal::new();
    let options = FitOptions { train: &config.train, checkpoint: &config.checkpoint, stop: &stop, title: "finetune".into() };
    let mut first = new(&config);
    let (mut dir_run, restored) = RunDir::open(&run, "config: finetune", &config.checkpoint, &first.tensor_types()).unwrap();
    assert!(restored.is_none());
    let outcome = fit(&mut first, &mut dir_run, &options, |m| {
        if m.step == 2 {
            stop.request(dalle_xla::checkpoint::StopReason::Terminate)
        }
    })
    .unwrap();
    assert!(matches!(outcome, Outcome::Stopped { step: 2, .. }), "{outcome:?}");
    drop(dir_run);
    let mut second = new(&config);
    let (_, restored) = RunDir::open(&run, "config: finetune", &config.checkpoint, &second.tensor_types()).unwrap();
    second.restore(&restored.expect("checkpoint committed on stop")).unwrap();
    assert_eq!(second.step, 2);
    let third = second.train_step().unwrap();
    assert_close(&[third.loss], &[losses[2]], 1e-6, "the third loss after resuming");
}

#[test]
fn model_keys_that_disagree_with_the_weights_are_refused() {
    let dir = scratch("disagree");
    let path = write_config(&dir, &fixture("dallebart_f32"), "memory://unused/run", 1);
    let e = TrainConfig::load(&path, &["model.d_model=64".to_string()]).err();
    // `--set` applies after the weights' config fills the model section: the override wins and validation/trainer refuse.
    if let Some(e) = e {
        assert!(e.to_string().contains("d_model"), "{e}");
    } else {
        let (config, _) = TrainConfig::load(&path, &["model.d_model=64".to_string()]).unwrap();
        let e = Trainer::new(&client(), config).err().expect("weights of another size").to_string();
        assert!(e.contains("init_from"), "{e}");
    }
    let text = std::fs::read_to_string(&path).unwrap().replace("model:\n", "model:\n  encoder_vocab_size: 128\n");
    std::fs::write(&path, text).unwrap();
    let e = TrainConfig::load(&path, &[]).err().expect("128 is not 300").to_string();
    assert!(e.contains("model.encoder_vocab_size is 128") && e.contains("300"), "{e}");
    // A directory that is not a model.
    let e = TrainConfig::load(&write_config(&dir, &dir, "memory://unused/run", 1), &[]).err().expect("not a model").to_string();
    assert!(e.contains("not a model directory"), "{e}");
}

#[test]
fn init_from_a_storage_url_downloads_the_model() {
    let dir = scratch("url");
    let converted = dir.join("mini");
    convert_dir(&fixture("dallebart_f32"), &converted, &ConvertOptions::default()).unwrap();
    let url = format!("memory://init-from-{}/models/mini", std::process::id());
    let location = dalle_xla::storage::open(&url).unwrap();
    for e in std::fs::read_dir(&converted).unwrap() {
        let e = e.unwrap();
        location.put(&e.file_name().to_string_lossy(), std::fs::read(e.path()).unwrap()).unwrap();
    }
    let path = write_config(&dir, Path::new(&url), "memory://unused/run", 1);
    let (config, _) = TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.data.tokenizer.as_deref(), Some(format!("{url}/tokenizer.json").as_str()));
    let weights = dalle_xla::models::dallebart::init_from::initial_weights(&config.model).unwrap().expect("weights");
    let local = dalle_xla::models::dallebart::load_weights_dir(&converted).unwrap();
    assert!(weights == local.weights, "downloaded weights equal the local ones");
}
