//! The pipeline's run directory: `pipeline.yaml` (the config it runs with),
//! one folder per stage, and `stages/<stage>.json`, written last by a stage
//! that completed (so a stage with its record is skipped when run again).

use super::config::paths;
use super::stage::Stage;
use crate::checkpoint::changed_config_keys;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a completed stage leaves in `stages/<stage>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    /// Wall time of the session that completed the stage (a stage resumed
    /// after an interruption counts from its last start).
    pub wall_secs: f64,
    /// CPU time the process spent in that session, over all its threads
    /// (where the platform reports it): unlike wall time it does not grow
    /// when other programs share the machine.
    #[serde(default)]
    pub cpu_secs: Option<f64>,
    /// Figures the stage measured (for the report).
    #[serde(default)]
    pub summary: serde_json::Value,
}

pub struct PipelineRun {
    pub dir: PathBuf,
}

impl PipelineRun {
    /// Opens (creating if needed) the run in `dir` for `config_yaml`. A run
    /// made with another config is refused, naming the differing keys, unless
    /// `restart` names a stage at or before every stage those keys belong to;
    /// a restart removes that stage's outputs and those of every later stage.
    pub fn open(dir: &Path, config_yaml: &str, restart: Option<Stage>) -> Result<PipelineRun> {
        if dir.to_str().is_some_and(|d| d.contains("://")) {
            return Err(Error::Invalid(format!("the pipeline run directory must be a local path, got {}", dir.display())));
        }
        std::fs::create_dir_all(dir.join("stages")).map_err(|e| Error::io(format!("creating the run directory {}", dir.display()), e))?;
        let run = PipelineRun { dir: dir.to_path_buf() };
        let saved_path = run.path(paths::CONFIG);
        if saved_path.exists() {
            let saved = std::fs::read_to_string(&saved_path).map_err(|e| Error::io(format!("reading {}", saved_path.display()), e))?;
            let changed: Vec<String> = changed_config_keys(&saved, config_yaml)?
                .into_iter()
                .filter(|k| Stage::of_config_key(k).is_some())
                .collect();
            if !changed.is_empty() {
                let described: Vec<String> = changed.iter().map(|k| format!("{k} ({})", Stage::of_config_key(k).map_or("?", Stage::name))).collect();
                let first = changed.iter().filter_map(|k| Stage::of_config_key(k)).min().unwrap_or(Stage::Shapes);
                match restart {
                    None => {
                        return Err(Error::Invalid(format!(
                            "{} holds a pipeline run with another config; keys that differ (stage): {}. Use --restart {first} to redo that stage and the ones after it with this config, or a new --run directory",
                            dir.display(),
                            described.join(", ")
                        )))
                    }
                    Some(stage) if stage > first => {
                        let early: Vec<&String> = changed.iter().filter(|k| Stage::of_config_key(k).is_some_and(|s| s < stage)).collect();
                        return Err(Error::Invalid(format!(
                            "--restart {stage} keeps the stages before it, but these keys of theirs differ from the run in {}: {}; restart from {first} instead",
                            dir.display(),
                            early.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(stage) = restart {
            run.clear_from(stage)?;
        }
        write_atomically(&saved_path, config_yaml.as_bytes())?;
        Ok(run)
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    fn record_path(&self, stage: Stage) -> PathBuf {
        self.dir.join("stages").join(format!("{}.json", stage.name()))
    }

    /// The record of a completed stage; `None` when it has not completed.
    pub fn record(&self, stage: Stage) -> Result<Option<StageRecord>> {
        let path = self.record_path(stage);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Invalid(format!("{} is damaged ({e}); rerun with --restart {stage}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    pub fn mark_done(&self, record: &StageRecord) -> Result<()> {
        let stage = Stage::parse(&record.stage)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::Invalid(format!("serialising the record of stage {stage}: {e}")))?;
        write_atomically(&self.record_path(stage), &bytes)
    }

    /// The path of `relative`, an input of `stage` that `producer` writes;
    /// an error saying which stage to run when the producer has not completed
    /// or the input is gone.
    pub fn input(&self, stage: Stage, relative: &str, producer: Stage) -> Result<PathBuf> {
        let path = self.path(relative);
        if self.record(producer)?.is_none() || !path.exists() {
            return Err(Error::Invalid(format!(
                "stage {stage} needs {}, which stage {producer} writes and which is {}: run the pipeline without --only (it runs {producer} first){}",
                path.display(),
                if path.exists() { "not complete" } else { "missing" },
                if self.record(producer)?.is_some() { format!(", or with --restart {producer} to make it again") } else { String::new() }
            )));
        }
        Ok(path)
    }

    /// Removes the outputs and records of `stage` and every later stage.
    fn clear_from(&self, stage: Stage) -> Result<()> {
        for s in Stage::ALL.iter().filter(|s| **s >= stage) {
            let record = self.record_path(*s);
            if record.exists() {
                std::fs::remove_file(&record).map_err(|e| Error::io(format!("removing {}", record.display()), e))?;
            }
            for output in s.outputs() {
                let path = self.path(output);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else if path.exists() {
                    std::fs::remove_file(&path)
                } else {
                    Ok(())
                };
                removed.map_err(|e| Error::io(format!("removing {} to restart stage {stage}", path.display()), e))?;
            }
        }
        tracing::info!("restarting from stage {stage}: removed its outputs and those of the stages after it");
        Ok(())
    }
}

/// Writes under a temporary name in the same folder, then renames.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))
}

/// CPU seconds (user + system) this process has used so far, from
/// `/proc/self/stat`; `None` where that file does not exist.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')';
    // Linux counts them in USER_HZ, 100 per second on every architecture it exports.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
