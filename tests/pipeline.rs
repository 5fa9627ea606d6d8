//! `dalle pipeline` end to end through the binary, on a miniature version of
//! the shipped config (seconds per stage): every stage runs and the report is
//! complete; a run killed in the middle of each stage and rerun ends with the
//! same report as one that never stopped; the held-out captions never occur
//! in the training split; bad input is refused with the key or stage named.

mod support;

use dalle_xla::data::shapes::{parse_caption, HeldOut};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::train_process::TrainProcess;

/// Settings that make every stage take seconds on a CPU.
const MINI: &[&str] = &[
    "shapes.train_images=48",
    "shapes.heldout_images=12",
    "shapes.held_out_fraction=0.2",
    "vqgan.model.fsq_levels=[4,4,2]",
    "vqgan.model.embed_dim=3",
    "vqgan.model.n_embed=32",
    "vqgan.model.attn_resolutions=[]",
    "vqgan.model.ch_mult=[1,1,1]",
    "vqgan.train.batch_size=4",
    "vqgan.train.steps=6",
    "vqgan.train.log_every=1",
    "vqgan.train.eval_every=3",
    "vqgan.train.eval_batches=1",
    "vqgan.checkpoint.every_steps=2",
    "tokenizer.vocab_size=280",
    "dallebart.model.d_model=16",
    "dallebart.model.encoder_ffn_dim=32",
    "dallebart.model.decoder_ffn_dim=32",
    "dallebart.model.encoder_layers=1",
    "dallebart.model.decoder_layers=1",
    "dallebart.model.image_vocab_size=32",
    "dallebart.train.batch_size=4",
    "dallebart.train.steps=6",
    "dallebart.train.log_every=1",
    "dallebart.train.eval_every=3",
    "dallebart.train.eval_batches=1",
    "dallebart.checkpoint.every_steps=2",
    "dallebart.optimizer.schedule.warmup_steps=2",
    "dallebart.optimizer.schedule.transition_steps=6",
    "clip.model.text.hidden_size=32",
    "clip.model.text.intermediate_size=32",
    "clip.model.text.num_hidden_layers=1",
    "clip.model.vision.hidden_size=32",
    "clip.model.vision.intermediate_size=32",
    "clip.model.vision.num_hidden_layers=1",
    "clip.model.vision.patch_size=8",
    "clip.model.projection_dim=16",
    "clip.train.batch_size=8",
    "clip.train.steps=6",
    "clip.train.log_every=1",
    "clip.train.eval_every=3",
    "clip.train.eval_batches=1",
    "clip.checkpoint.every_steps=2",
    "generate.heldout_prompts=6",
    "generate.train_prompts=4",
    "generate.images_per_prompt=2",
    "report.grid_prompts=3",
];

const PROCESS_TIMEOUT: Duration = Duration::from_secs(300);

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pipeline-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn pipeline_command(run: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dalle"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command.args(["pipeline", "--config", "configs/pipeline/shapes.yaml", "--cpu-devices", "2"]);
    command.arg("--run").arg(run);
    for set in MINI {
        command.args(["--set", set]);
    }
    command.args(extra);
    command.env("DALLE_LOG", "info").env("NO_COLOR", "1");
    // Tests never write into the user's ~/.cache.
    command.env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache"));
    command
}

/// Runs the pipeline to its end and returns its log; panics unless it succeeds.
fn run_to_end(run: &Path, extra: &[&str]) -> Vec<String> {
    let (status, log) = TrainProcess::spawn(pipeline_command(run, extra)).finish(PROCESS_TIMEOUT);
    assert!(status.success(), "dalle pipeline failed ({status}); log:\n{}", log.join("\n"));
    log
}

/// Runs the pipeline expecting failure; returns its log.
fn run_failing(run: &Path, extra: &[&str]) -> String {
    let (status, log) = TrainProcess::spawn(pipeline_command(run, extra)).finish(PROCESS_TIMEOUT);
    assert!(!status.success(), "dalle pipeline should have failed; log:\n{}", log.join("\n"));
    log.join("\n")
}

/// report.json without wall times (which differ between any two runs).
fn report_without_times(run: &Path) -> serde_json::Value {
    let bytes = std::fs::read(run.join("report.json")).expect("report.json exists");
    let mut report: serde_json::Value = serde_json::from_slice(&bytes).expect("report.json is JSON");
    for stage in report["stages"].as_array_mut().expect("stages list") {
        let record = stage.as_object_mut().expect("stage record");
        record.remove("wall_secs");
        record.remove("cpu_secs");
    }
    report
}

const STAGES: [&str; 8] = ["shapes", "vqgan", "encode", "dallebart", "clip", "generate", "judge", "report"];
const TRAINING_STAGES: [&str; 3] = ["vqgan", "dallebart", "clip"];

#[test]
fn pipeline_completes_and_a_run_killed_in_every_stage_ends_with_the_same_report() {
    let reference = scratch("reference");
    let log = run_to_end(&reference, &[]);
    for stage in STAGES {
        assert!(log.iter().any(|l| l.contains(&format!("stage {stage} complete"))), "stage {stage} did not complete; log:\n{}", log.join("\n"));
    }
    let report = report_without_times(&reference);
    let rows = report["rows"].as_array().expect("rows");
    for row in ["real", "vqgan", "generated", "reranked", "best", "shuffled"] {
        for split in ["heldout", "train"] {
            let found = rows.iter().find(|r| r["row"] == row && r["split"] == split);
            let found = found.unwrap_or_else(|| panic!("report.json has no {row}/{split} row: {report:#}"));
            let fidelity = found["fidelity"].as_f64().expect("fidelity");
            assert!((0.0..=1.0).contains(&fidelity), "{row}/{split} fidelity {fidelity}");
        }
    }
    // The checker accepts (nearly) every real image and (nearly) no mismatched caption.
    let fidelity = |row: &str| rows.iter().find(|r| r["row"] == row && r["split"] == "heldout").expect("row")["fidelity"].as_f64().expect("number");
    assert!(fidelity("real") > fidelity("shuffled"), "real {} vs shuffled {}", fidelity("real"), fidelity("shuffled"));
    // No pick of the candidates does better than the checker's own.
    assert!(fidelity("best") >= fidelity("reranked"), "best {} vs reranked {}", fidelity("best"), fidelity("reranked"));
    let md = std::fs::read_to_string(reference.join("report.md")).expect("report.md");
    for needle in ["real images (the checker's ceiling)", "VQGAN reconstructions", "reranked (keep 1 of N)", "the reranker's ceiling", "shuffled captions", "report/grid.png", "report/loss_vqgan.png", "report/loss_dallebart.png", "report/loss_clip.png", "| total |"] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    for picture in ["report/grid.png", "report/loss_vqgan.png", "report/loss_dallebart.png", "report/loss_clip.png"] {
        let image = image::open(reference.join(picture)).unwrap_or_else(|e| panic!("{picture}: {e}"));
        assert!(image.width() > 50 && image.height() > 50, "{picture} is {}x{}", image.width(), image.height());
    }

    reranking_keeps_the_candidate_clip_scores_best(&reference, 2);

    // A second run of the same command does nothing but skip.
    let again = run_to_end(&reference, &[]);
    for stage in STAGES {
        assert!(again.iter().any(|l| l.contains(&format!("stage {stage}: already complete"))), "stage {stage} was not skipped:\n{}", again.join("\n"));
    }

    // Kill in the middle of each stage in turn, then finish.
    let killed = scratch("killed");
    for stage in STAGES {
        let mut process = TrainProcess::spawn(pipeline_command(&killed, &[]));
        process.wait_for_line(&format!("stage {stage} started"), PROCESS_TIMEOUT).unwrap_or_else(|| panic!("the pipeline ended before stage {stage}"));
        // Training stages: after a committed checkpoint and a few more steps.
        if TRAINING_STAGES.contains(&stage) {
            process.wait_for_line(&format!("{stage}: step 3 "), PROCESS_TIMEOUT);
        }
        // The quick stages may finish before the kill lands; either way the
        // rerun below must end where an uninterrupted run does.
        process.kill();
        let (status, log) = process.finish(PROCESS_TIMEOUT);
        if TRAINING_STAGES.contains(&stage) {
            assert!(!status.success(), "the pipeline was not killed in stage {stage}; log:\n{}", log.join("\n"));
        }
    }
    run_to_end(&killed, &[]);
    assert_eq!(report_without_times(&killed), report, "the report after kills differs from the uninterrupted one");
    let scores = |run: &Path| std::fs::read(run.join("judge/scores.json")).expect("scores");
    assert_eq!(scores(&killed), scores(&reference));

    held_out_captions_never_occur_in_training(&reference);
    bad_input_is_refused(&reference);
}

/// The reranked verdict of each prompt is the verdict on the candidate with
/// the highest CLIP score that the generate stage wrote.
fn reranking_keeps_the_candidate_clip_scores_best(run: &Path, per_prompt: usize) {
    let details = std::fs::read_to_string(run.join("judge/details.jsonl")).expect("details.jsonl");
    let lines: Vec<serde_json::Value> = details.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let verdict = |row: &str, split: &str, index: usize| {
        let found = lines.iter().find(|d| d["row"] == row && d["split"] == split && d["index"] == index);
        found.unwrap_or_else(|| panic!("no {row}/{split}/{index} in details.jsonl"))["judgement"].clone()
    };
    let mut checked = 0;
    for split in ["heldout", "train"] {
        let dir = run.join("generated").join(split);
        for i in 0.. {
            let Ok(text) = std::fs::read_to_string(dir.join(format!("{i:06}_scores.json"))) else { break };
            let scores: Vec<f64> = serde_json::from_str(&text).expect("a list of scores");
            assert_eq!(scores.len(), per_prompt);
            assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
            let best = (0..per_prompt).fold(0, |b, k| if scores[k] > scores[b] { k } else { b });
            assert_eq!(verdict("reranked", split, i), verdict("generated", split, i * per_prompt + best), "{split} prompt {i}");
            // The checker's pick holds whenever any candidate's caption holds.
            let any_holds = (0..per_prompt).any(|k| verdict("generated", split, i * per_prompt + k)["holds"] == true);
            assert_eq!(verdict("best", split, i)["holds"] == true, any_holds, "{split} prompt {i}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6 + 4, "one scores file per judged prompt");
}

/// Checked from the files the shapes stage wrote.
fn held_out_captions_never_occur_in_training(run: &Path) {
    let split = std::fs::read(run.join("shapes/split.json")).expect("split.json");
    let held = HeldOut::from_json(&split, "split.json").expect("split.json reads");
    assert!(!held.triples.is_empty());
    let captions = |dir: &str| -> Vec<String> {
        let text = std::fs::read_to_string(run.join(dir).join("captions.csv")).expect("captions.csv");
        text.lines().skip(1).map(|l| l.split_once(',').expect("path,caption").1.trim_matches('"').to_string()).collect()
    };
    let train = captions("shapes/train");
    let heldout = captions("shapes/heldout");
    assert_eq!((train.len(), heldout.len()), (48, 12));
    for caption in &train {
        assert!(held.triples_in(caption).expect("parses").is_empty(), "training caption {caption:?} names a held-out triple");
        assert_eq!(parse_caption(caption).expect("parses").len(), caption.matches(" and ").count() + 1);
    }
    for caption in &heldout {
        assert!(!held.triples_in(caption).expect("parses").is_empty(), "held-out caption {caption:?} names no held-out triple");
    }
    let train: BTreeSet<&String> = train.iter().collect();
    assert!(heldout.iter().all(|c| !train.contains(c)));
}

fn bad_input_is_refused(run: &Path) {
    // Another config: refused, naming the key and its stage.
    let log = run_failing(run, &["--set", "dallebart.train.steps=7"]);
    assert!(log.contains("dallebart.train.steps (dallebart)") && log.contains("--restart dallebart"), "{log}");
    // A restart of a later stage cannot take a change of an earlier one.
    let log = run_failing(run, &["--set", "vqgan.train.steps=7", "--restart", "judge"]);
    assert!(log.contains("vqgan.train.steps") && log.contains("restart from vqgan"), "{log}");
    // Unknown preset and stage.
    let log = run_failing(run, &["--set", "preset=huge"]);
    assert!(log.contains("unknown preset 'huge'") && log.contains("default, full"), "{log}");
    let log = run_failing(run, &["--only", "painting"]);
    assert!(log.contains("unknown stage 'painting'"), "{log}");
    // A stage whose inputs are missing names the stage that makes them.
    let fresh = scratch("missing");
    let log = run_failing(&fresh, &["--only", "dallebart"]);
    assert!(log.contains("stage dallebart needs") && log.contains("which stage encode writes"), "{log}");
    // A key the pipeline owns.
    let log = run_failing(&fresh, &["--set", "vqgan.data.images=elsewhere"]);
    assert!(log.contains("vqgan.data.images is set by the pipeline"), "{log}");
}

#[test]
fn shipped_pipeline_configs_load() {
    use dalle_xla::pipeline::PipelineConfig;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("configs/pipeline/shapes.yaml");
    let (default, _) = PipelineConfig::load(&path, &[]).expect("the default preset loads");
    let (full, _) = PipelineConfig::load(&path, &["preset=full".to_string()]).expect("the full preset loads");
    assert_eq!((default.preset.as_str(), full.preset.as_str()), ("default", "full"));
    assert!(full.dallebart.model.d_model > default.dallebart.model.d_model);
    assert!(full.shapes.train_images > default.shapes.train_images);
    // --set wins over the preset.
    let (set, _) = PipelineConfig::load(&path, &["preset=full".to_string(), "dallebart.train.steps=7".to_string()]).expect("loads");
    assert_eq!(set.dallebart.train.steps, 7);
    let err = PipelineConfig::load(&path, &["preset=huge".to_string()]).expect_err("unknown preset");
    assert!(err.to_string().contains("unknown preset 'huge'"), "{err}");
    // A CPU client gets the devices the stages train on, all 8 when one trains on every device.
    assert_eq!(default.cpu_devices_used(), Some(2));
    assert_eq!(full.cpu_devices_used(), None, "the full preset trains the VQGAN on every device");
    // The hand-training config on the pipeline's encoded data.
    let (shapes, _) = dalle_xla::models::dallebart::TrainConfig::load(&root.join("configs/shapes.yaml"), &[]).expect("configs/shapes.yaml loads");
    assert_eq!(shapes.model, default.dallebart.model);
    assert_eq!(shapes.optimizer, default.dallebart.optimizer, "configs/shapes.yaml trains with the preset's optimizer and schedule");
    assert_eq!((shapes.train.steps, shapes.train.batch_size, &shapes.train.dtype), (default.dallebart.train.steps, default.dallebart.train.batch_size, &default.dallebart.train.dtype));
}
