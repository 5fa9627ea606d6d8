//! Stage `report`: `report.md` and `report.json` at the top of the run
//! directory, and under `report/` the grid of held-out prompts with their
//! images and the loss curves of the training stages.

use super::generate::{image_name, read_scores};
use super::judge::{prompts, RowScores, JUDGE_FILE, RECONSTRUCTIONS};
use super::{Context, StageEnd};
use crate::error::{Error, Result};
use crate::pipeline::config::paths;
use crate::pipeline::run::{write_atomically, StageRecord};
use crate::pipeline::stage::Stage;
use crate::plot::canvas::{text_height, text_width, Canvas};
use crate::plot::Plot;
use crate::train::METRICS_FILE;
use image::{imageops, Rgb};
use std::path::Path;

/// Rows of the fidelity table, in order, with what each one measures.
const ROWS: [(&str, &str); 6] = [
    ("real", "real images (the checker's ceiling)"),
    ("vqgan", "VQGAN reconstructions (the tokenizer's ceiling)"),
    ("generated", "generated, no reranking"),
    ("reranked", "generated, reranked (keep 1 of N)"),
    ("best", "generated, the checker's pick of N (the reranker's ceiling)"),
    ("shuffled", "real images, shuffled captions (the floor)"),
];

pub fn run(cx: &Context) -> Result<StageEnd> {
    let scores_path = cx.run.input(Stage::Report, JUDGE_FILE, Stage::Judge)?;
    let bytes = std::fs::read(&scores_path).map_err(|e| Error::io(format!("reading {}", scores_path.display()), e))?;
    let rows: Vec<RowScores> = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", scores_path.display())))?;
    let mut stages = Vec::new();
    for stage in Stage::ALL.iter().filter(|s| **s < Stage::Report) {
        if let Some(record) = cx.run.record(*stage)? {
            stages.push(record);
        }
    }
    let dir = cx.run.path(paths::REPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

    let mut curves = Vec::new();
    for (stage, run, eval_name) in [(Stage::Vqgan, paths::VQGAN_RUN, "held-out MSE"), (Stage::Dallebart, paths::DALLEBART_RUN, "held-out loss"), (Stage::Clip, paths::CLIP_RUN, "held-out loss")] {
        let file = format!("loss_{stage}.png");
        if loss_curve(&cx.run.path(run).join(METRICS_FILE), &dir.join(&file), &format!("{stage}: {}", stage.title()), eval_name)? {
            curves.push((stage, format!("{}/{file}", paths::REPORT_DIR)));
        }
    }
    let grid = format!("{}/grid.png", paths::REPORT_DIR);
    let shown = grid_picture(cx, &cx.run.path(&grid))?;

    let json = serde_json::json!({
        "preset": cx.config.preset,
        "image_size": cx.config.shapes.size,
        "images_per_prompt": cx.config.generate.images_per_prompt,
        "rows": rows,
        "stages": stages,
        "grid": grid,
        "loss_curves": curves.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
    });
    let json_bytes = serde_json::to_vec_pretty(&json).map_err(|e| Error::Invalid(format!("serialising the report: {e}")))?;
    write_atomically(&cx.run.path(paths::REPORT_JSON), &json_bytes)?;
    write_atomically(&cx.run.path(paths::REPORT_MD), markdown(cx, &rows, &stages, &curves, &grid, shown).as_bytes())?;
    tracing::info!("report: {} and {}", cx.run.path(paths::REPORT_MD).display(), cx.run.path(paths::REPORT_JSON).display());
    Ok(StageEnd::Completed(serde_json::json!({ "rows": rows.len() })))
}

fn percent(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn find<'a>(rows: &'a [RowScores], row: &str, split: &str) -> Option<&'a RowScores> {
    rows.iter().find(|r| r.row == row && r.split == split)
}

fn markdown(cx: &Context, rows: &[RowScores], stages: &[StageRecord], curves: &[(Stage, String)], grid: &str, shown: usize) -> String {
    let c = cx.config;
    let held = stages.iter().find(|s| s.stage == "shapes").and_then(|s| s.summary.get("held_out_triples")).and_then(|v| v.as_u64()).unwrap_or(0);
    let mut md = String::from("# Text to image on the shapes world\n\n");
    md.push_str(&format!(
        "Preset `{}`: {}x{} images, a VQGAN of {} tokens per image from {} codes, DalleBart with d_model {} and {}+{} layers. \
         {held} of the 216 (colour, shape, position) triples never occur in training; the held-out prompts each name at least one of them. \
         {} held-out and {} training prompts, {} images sampled per prompt and ranked by a CLIP trained on the training split ({} parameters).\n\n",
        c.preset,
        c.shapes.size,
        c.shapes.size,
        c.vqgan.model.image_length(),
        c.vqgan.model.n_embed,
        c.dallebart.model.d_model,
        c.dallebart.model.encoder_layers,
        c.dallebart.model.decoder_layers,
        c.generate.heldout_prompts,
        c.generate.train_prompts,
        c.generate.images_per_prompt,
        stages.iter().find(|s| s.stage == "clip").and_then(|s| s.summary.get("parameters")).map_or("-".to_string(), |v| v.to_string()),
    ));
    md.push_str("## Fidelity\n\nShare of images whose caption the shapes checker accepts (every object found with its shape, colour, size and position, and nothing else).\n\n");
    md.push_str("| | held-out captions | training captions |\n| --- | ---: | ---: |\n");
    for (row, label) in ROWS {
        let cell = |split: &str| find(rows, row, split).map_or("-".to_string(), |r| format!("{} ({} images)", percent(r.fidelity), r.images));
        md.push_str(&format!("| {label} | {} | {} |\n", cell("heldout"), cell("train")));
    }
    for split in ["heldout", "train"] {
        let title = if split == "heldout" { "held-out" } else { "training" };
        md.push_str(&format!("\n### By attribute, {title} captions\n\n| | shape | colour | position | size | count |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"));
        for (row, label) in ROWS {
            if let Some(r) = find(rows, row, split) {
                let a = &r.attributes;
                md.push_str(&format!("| {label} | {} | {} | {} | {} | {} |\n", percent(a.shape), percent(a.colour), percent(a.position), percent(a.size), percent(a.count)));
            }
        }
    }
    md.push_str(&format!("\n## Held-out prompts\n\nThe first {shown} held-out prompts: the real image, its VQGAN reconstruction, then images generated for the prompt, best first by the pipeline's CLIP (the first one is what reranking keeps).\n\n![grid]({grid})\n"));
    if !curves.is_empty() {
        md.push_str("\n## Loss curves\n\n");
        for (stage, file) in curves {
            md.push_str(&format!("![{stage} loss]({file})\n"));
        }
    }
    md.push_str("\n## Stages\n\nWall time and the process's CPU time (all threads) of the session that completed each stage; on a machine of its own with C cores, wall time is at least CPU time / C.\n\n| stage | wall time | CPU time | figures |\n| --- | ---: | ---: | --- |\n");
    let (mut total, mut total_cpu) = (0.0, 0.0);
    for s in stages {
        total += s.wall_secs;
        total_cpu += s.cpu_secs.unwrap_or(0.0);
        let figures = match &s.summary {
            serde_json::Value::Object(map) => map.iter().map(|(k, v)| format!("{k}: {}", figure(v))).collect::<Vec<_>>().join(", "),
            _ => String::new(),
        };
        let cpu = s.cpu_secs.map_or("-".to_string(), |c| format!("{c:.0} s"));
        md.push_str(&format!("| {} | {:.0} s | {cpu} | {figures} |\n", s.stage, s.wall_secs));
    }
    md.push_str(&format!("| total | {total:.0} s | {total_cpu:.0} s | |\n"));
    md
}

fn figure(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => format!("{f:.4}"),
        _ => v.to_string(),
    }
}

/// Plots a run's training and evaluation losses; false when it has no metrics.
fn loss_curve(metrics: &Path, out: &Path, title: &str, eval_name: &str) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(metrics) else { return Ok(false) };
    let records: Vec<crate::train::StepMetrics> = text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect();
    if records.is_empty() {
        return Ok(false);
    }
    let train: Vec<(f64, f64)> = records.iter().map(|m| (m.step as f64, m.loss)).collect();
    let eval: Vec<(f64, f64)> = records.iter().filter_map(|m| Some((m.step as f64, m.eval_loss?))).collect();
    let mut plot = Plot::new(title).x_label("step").y_label("loss").log_y(true).line("training loss", &train);
    if !eval.is_empty() {
        plot = plot.line(eval_name, &eval);
    }
    let bytes = plot.render(800, 450)?.png_bytes()?;
    write_atomically(out, &bytes)?;
    Ok(true)
}

/// Pixels per image pixel in the grid.
const ZOOM: u32 = 3;
/// Characters of caption per line in the grid's text column.
const LINE_CHARS: usize = 34;

/// Draws the grid; returns how many prompts it shows.
fn grid_picture(cx: &Context, out: &Path) -> Result<usize> {
    let n = cx.config.report.grid_prompts.min(cx.config.generate.heldout_prompts);
    let records = prompts(&cx.run.path(paths::SHAPES_HELDOUT), n)?;
    let side = cx.config.shapes.size * ZOOM;
    let gap = 6u32;
    let text_w = text_width(&"m".repeat(LINE_CHARS), 1) + 2 * gap;
    let header = text_height(1) + 2 * gap;
    let mut columns: Vec<(String, Vec<std::path::PathBuf>)> = vec![
        ("real".into(), records.iter().map(|r| r.path.clone()).collect()),
        ("VQGAN".into(), (0..n).map(|i| cx.run.path(RECONSTRUCTIONS).join("heldout").join(format!("{i:06}.png"))).collect()),
    ];
    // Each prompt's samples best first by CLIP score, as reranking keeps them.
    let generated = cx.run.path(paths::GENERATED).join("heldout");
    let per_prompt = cx.config.generate.images_per_prompt;
    let mut ranked = Vec::with_capacity(n);
    for i in 0..n {
        let scores = read_scores(&generated, i, per_prompt)?;
        let mut order: Vec<usize> = (0..per_prompt).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        ranked.push(order);
    }
    for rank in 0..per_prompt.min(6) {
        let title = if rank == 0 { "CLIP's best".to_string() } else { format!("CLIP rank {}", rank + 1) };
        columns.push((title, (0..n).map(|i| generated.join(image_name(i, ranked[i][rank]))).collect()));
    }
    let width = text_w + columns.len() as u32 * (side + gap) + gap;
    let height = header + n as u32 * (side + gap) + gap;
    let mut canvas = Canvas::new(width, height, Rgb([255, 255, 255]));
    let ink = Rgb([20, 20, 20]);
    for (c, (title, _)) in columns.iter().enumerate() {
        canvas.text((text_w + c as u32 * (side + gap)) as i64, gap as i64, title, 1, ink);
    }
    for (i, record) in records.iter().enumerate() {
        let y = header + i as u32 * (side + gap);
        for (l, line) in wrap(&record.caption, LINE_CHARS).iter().enumerate().take((side / (text_height(1) + 3)) as usize) {
            canvas.text(gap as i64, (y + l as u32 * (text_height(1) + 3)) as i64, line, 1, ink);
        }
        for (c, (_, files)) in columns.iter().enumerate() {
            let path = &files[i];
            let image = image::open(path).map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))?.to_rgb8();
            let big = imageops::resize(&image, side, side, imageops::FilterType::Nearest);
            imageops::replace(&mut canvas.image, &big, (text_w + c as u32 * (side + gap)) as i64, y as i64);
        }
    }
    let mut bytes = Vec::new();
    canvas
        .image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("encoding {}: {e}", out.display())))?;
    write_atomically(out, &bytes)?;
    Ok(n)
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("starts with one line");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

