//! The sweep's outputs: `results.md` and `results.csv` (one row per trial),
//! `curves.png` (every trial's eval loss against steps), `loss_vs_<key>.png`
//! (best eval loss against each numeric searched key) and `best.yaml` (the
//! base config with the best trial's overrides, ready to train with).

use super::config::{Metric, SweepConfig};
use super::space::ParamSpec;
use super::state::{TrialRecord, TrialStatus};
use super::store;
use crate::error::{Error, Result};
use crate::plot::{format_sci, Plot};
use crate::storage::Location;
use serde_yaml::Value;

pub const RESULTS_MD: &str = "results.md";
pub const RESULTS_CSV: &str = "results.csv";
pub const CURVES_PNG: &str = "curves.png";
pub const BEST_YAML: &str = "best.yaml";
const PLOT_SIZE: (u32, u32) = (900, 560);

/// What [`write`] produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Names of the files written under the sweep directory.
    pub written: Vec<String>,
    /// Outputs that were not written, each with the reason.
    pub skipped: Vec<String>,
}

/// The completed trial with the lowest objective at the full budget (ties: the earlier trial).
pub fn best_trial<'a>(sweep: &SweepConfig, trials: &'a [TrialRecord]) -> Option<(&'a TrialRecord, f64)> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(|t| t.objective_at(sweep.objective.steps, sweep.objective.metric).map(|o| (t, o)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// `key=value, key=value` for messages.
pub fn describe_overrides(overrides: &[(String, Value)]) -> String {
    overrides.iter().map(|(k, v)| format!("{k}={}", full_value(v))).collect::<Vec<_>>().join(", ")
}

/// A value exactly as YAML would write it (for CSV and messages).
fn full_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other).map(|s| s.trim_end().to_string()).unwrap_or_else(|_| format!("{other:?}")),
    }
}

/// A value for humans; `sci` (log-scale keys) writes floats as `3.142e-4` so a column reads evenly.
fn short_value(v: &Value, sci: bool) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() && f != 0.0 && (sci || f.abs() < 1e-3 || f.abs() >= 1e5) => format_sci(f, 4),
        _ => full_value(v),
    }
}

/// The short name of a dotted key for legends and file names (`learning_rate` reads as `lr`).
fn short_key(key: &str) -> String {
    match key.rsplit('.').next().unwrap_or(key) {
        "learning_rate" => "lr".to_string(),
        other => other.to_string(),
    }
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into())
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The results table as markdown.
pub fn markdown_table(sweep: &SweepConfig, trials: &[TrialRecord]) -> String {
    let mut out = String::from("# Sweep results\n\n");
    let metric = match sweep.objective.metric {
        Metric::EvalLoss => "eval loss",
        Metric::BestEvalLoss => "best eval loss",
    };
    out += &format!(
        "Base config `{}`, strategy {}, objective: {metric} at {} steps.\n\n",
        sweep.base_path,
        sweep.strategy.name(),
        sweep.objective.steps
    );
    match best_trial(sweep, trials) {
        Some((t, o)) => out += &format!("Best: **{}** ({}), {metric} {o:.4}.\n\n", t.id, describe_overrides(&t.overrides)),
        None => out += "Best: none (no trial completed its budget).\n\n",
    }
    let keys: Vec<&str> = sweep.space.iter().map(|(k, _)| k.as_str()).collect();
    let log_keys: Vec<bool> = sweep.space.iter().map(|(_, s)| s.is_log()).collect();
    out += &format!("| trial | {} | status | final eval loss | best eval loss | steps | wall time (s) | note |\n", keys.join(" | "));
    out += &format!("|---|{}---|---:|---:|---:|---:|---|\n", "---|".repeat(keys.len()));
    for t in trials {
        let values: Vec<String> =
            keys.iter().zip(&log_keys).map(|(k, &sci)| lookup(t, k).map(|v| short_value(v, sci)).unwrap_or_default()).collect();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            t.id,
            values.join(" | "),
            t.status.as_str(),
            fmt_loss(t.final_loss()),
            fmt_loss(t.best_loss()),
            t.steps,
            t.wall_time_s,
            md_escape(t.message.as_deref().unwrap_or(""))
        );
    }
    out
}

/// The results table as CSV, values at full precision.
pub fn csv_table(sweep: &SweepConfig, trials: &[TrialRecord]) -> String {
    let keys: Vec<&str> = sweep.space.iter().map(|(k, _)| k.as_str()).collect();
    let mut header = vec!["trial"];
    header.extend(&keys);
    header.extend(["status", "final_eval_loss", "best_eval_loss", "steps", "wall_time_s", "note"]);
    let mut out = header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n";
    for t in trials {
        let mut row = vec![t.id.clone()];
        row.extend(keys.iter().map(|k| lookup(t, k).map(full_value).unwrap_or_default()));
        row.push(t.status.as_str().to_string());
        row.push(t.final_loss().map(|l| l.to_string()).unwrap_or_default());
        row.push(t.best_loss().map(|l| l.to_string()).unwrap_or_default());
        row.push(t.steps.to_string());
        row.push(format!("{:.3}", t.wall_time_s));
        row.push(t.message.clone().unwrap_or_default());
        out += &(row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

fn lookup<'a>(t: &'a TrialRecord, key: &str) -> Option<&'a Value> {
    t.overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn legend(t: &TrialRecord) -> String {
    let parts: Vec<String> = t
        .overrides
        .iter()
        .map(|(k, v)| {
            let value = match v.as_f64() {
                Some(f) if v.is_f64() => format_sci(f, 2),
                _ => full_value(v),
            };
            format!("{}={value}", short_key(k))
        })
        .collect();
    let status = match t.status {
        TrialStatus::Diverged | TrialStatus::Failed => format!(" ({})", t.status.as_str()),
        _ => String::new(),
    };
    format!("{} {}{status}", t.id, parts.join(" "))
}

/// Every trial's eval-loss curve. When some trials diverged, the y axis is fitted to
/// the healthy curves (and the diverged ones' first evaluations), so one explosion
/// does not flatten everything else; the diverged curves leave through the top.
pub fn curves_plot(trials: &[TrialRecord]) -> Plot {
    let mut plot = Plot::new("eval loss by trial").x_label("step").y_label("eval loss");
    let with_history: Vec<&TrialRecord> = trials.iter().filter(|t| !t.history.is_empty()).collect();
    let calm = with_history.iter().flat_map(|t| match t.status {
        TrialStatus::Diverged => t.history[..1].to_vec(),
        _ => t.history.clone(),
    });
    let (lo, hi) = calm.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, l)| (lo.min(l), hi.max(l)));
    let peak = with_history.iter().flat_map(|t| t.history.iter().map(|h| h.1)).fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo && peak > hi {
        let span = hi - lo;
        plot = plot.y_range(lo - 0.04 * span, hi + 0.25 * span);
    }
    for t in with_history {
        let pts: Vec<(f64, f64)> = t.history.iter().map(|&(s, l)| (s as f64, l)).collect();
        plot = plot.line(legend(t), &pts);
    }
    plot
}

/// Best eval loss against `key` (log x for log-uniform keys), one series per status.
/// Trials without any evaluation are counted in the title.
pub fn loss_vs_plot(key: &str, spec: &ParamSpec, trials: &[TrialRecord]) -> Plot {
    let missing = trials.iter().filter(|t| t.best_loss().is_none()).count();
    let title = match missing {
        0 => format!("best eval loss vs {}", short_key(key)),
        n => format!("best eval loss vs {} ({n} without evals)", short_key(key)),
    };
    let mut plot = Plot::new(title).x_label(key).y_label("best eval loss").log_x(spec.is_log());
    for status in [TrialStatus::Completed, TrialStatus::Stopped, TrialStatus::Diverged, TrialStatus::Paused, TrialStatus::Running] {
        let pts: Vec<(f64, f64)> = trials
            .iter()
            .filter(|t| t.status == status)
            .filter_map(|t| Some((lookup(t, key)?.as_f64()?, t.best_loss()?)))
            .collect();
        if !pts.is_empty() {
            plot = plot.scatter(status.as_str(), &pts);
        }
    }
    plot
}

/// Whether a key's values can go on a numeric axis.
fn numeric(spec: &ParamSpec) -> bool {
    match spec {
        ParamSpec::Choice { values } => values.iter().all(|v| v.as_f64().is_some()),
        _ => true,
    }
}

/// The base config with the best trial's overrides, with a comment saying where it came from.
pub fn best_config_yaml(sweep: &SweepConfig, best: &TrialRecord, objective: f64, dir: &Location) -> Result<String> {
    let cfg = sweep.trial_config(&best.overrides)?;
    let body = serde_yaml::to_string(&cfg).map_err(|e| Error::Invalid(format!("cannot write the best config as YAML: {e}")))?;
    Ok(format!(
        "# Best trial {} of the sweep in {}: objective {objective:.6} at {} steps.\n# Base config {} with: {}\n{body}",
        best.id,
        dir.url,
        sweep.objective.steps,
        sweep.base_path,
        describe_overrides(&best.overrides)
    ))
}

/// Writes every output under `dir`. A plot with nothing to draw is listed in
/// `Report::skipped` rather than failing the sweep; storage errors are errors.
pub fn write(sweep: &SweepConfig, trials: &[TrialRecord], dir: &Location) -> Result<Report> {
    let mut report = Report::default();
    store::write(dir, RESULTS_MD, markdown_table(sweep, trials).into_bytes())?;
    report.written.push(RESULTS_MD.into());
    store::write(dir, RESULTS_CSV, csv_table(sweep, trials).into_bytes())?;
    report.written.push(RESULTS_CSV.into());

    let mut plots = vec![(CURVES_PNG.to_string(), curves_plot(trials))];
    for (key, spec) in sweep.space.iter().filter(|(_, s)| numeric(s)) {
        plots.push((format!("loss_vs_{}.png", short_key(key)), loss_vs_plot(key, spec, trials)));
    }
    for (name, plot) in plots {
        match plot.render(PLOT_SIZE.0, PLOT_SIZE.1) {
            Ok(rendered) => {
                store::write(dir, &name, rendered.png_bytes()?)?;
                report.written.push(name);
            }
            Err(e) => report.skipped.push(format!("{name}: {e}")),
        }
    }

    match best_trial(sweep, trials) {
        Some((best, objective)) => {
            store::write(dir, BEST_YAML, best_config_yaml(sweep, best, objective, dir)?.into_bytes())?;
            report.written.push(BEST_YAML.into());
        }
        None => report.skipped.push(format!("{BEST_YAML}: no trial completed its {}-step budget", sweep.objective.steps)),
    }
    Ok(report)
}
