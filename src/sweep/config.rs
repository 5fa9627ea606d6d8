//! The sweep file: which base training config, which keys to search and how,
//! the objective, and how trials share the devices.
//!
//! ```yaml
//! base: configs/tiny.yaml            # relative to the working directory
//! base_overrides: [train.eval_every=50]
//! space:
//!   optimizer.learning_rate: { distribution: log_uniform, min: 5.0e-5, max: 5.0e-3 }
//!   optimizer.schedule.warmup_steps: { values: [0, 100] }   # or just [0, 100]
//! strategy: random                   # grid | random | asha (successive halving)
//! num_trials: 8                      # random and asha
//! seed: 0
//! asha: { reduction_factor: 3, min_steps: 100 }
//! objective: { metric: eval_loss, steps: 900, divergence_factor: 4.0 }
//! parallelism: { trials_in_parallel: 1, devices_per_trial: 0 }
//! ```

use super::space::{self, ParamSpec, ParamSpecFile};
use crate::config::{self, set_path};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::path::Path;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    base: String,
    #[serde(default)]
    base_overrides: Vec<String>,
    space: Mapping,
    strategy: StrategyKind,
    #[serde(default)]
    num_trials: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    asha: Option<HalvingFile>,
    objective: ObjectiveFile,
    #[serde(default)]
    parallelism: Parallelism,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum StrategyKind {
    Grid,
    Random,
    #[serde(alias = "successive_halving")]
    Asha,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HalvingFile {
    #[serde(default = "default_reduction_factor")]
    reduction_factor: u64,
    min_steps: u64,
}

fn default_reduction_factor() -> u64 {
    3
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ObjectiveFile {
    #[serde(default)]
    metric: Metric,
    steps: u64,
    #[serde(default = "default_divergence_factor")]
    divergence_factor: f64,
}

fn default_divergence_factor() -> f64 {
    4.0
}

/// What a trial is ranked by.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The last evaluation at (or before) the budget.
    #[default]
    EvalLoss,
    /// The lowest evaluation up to the budget.
    BestEvalLoss,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub metric: Metric,
    /// Training steps each surviving trial gets (the top rung for successive halving).
    pub steps: u64,
    /// An eval loss above this multiple of the trial's first eval loss ends it as diverged.
    pub divergence_factor: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Trials running at the same time, each on its own devices.
    #[serde(default = "one")]
    pub trials_in_parallel: usize,
    /// Devices each trial gets; 0 means all of them (only with one trial at a time).
    #[serde(default)]
    pub devices_per_trial: usize,
}

fn one() -> usize {
    1
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism { trials_in_parallel: 1, devices_per_trial: 0 }
    }
}

impl Parallelism {
    /// The devices of worker slot `slot`: disjoint across slots; empty means "all devices".
    pub fn devices(&self, slot: usize) -> Vec<usize> {
        let d = self.devices_per_trial;
        (slot * d..(slot + 1) * d).collect()
    }

    /// Checks that the trials running at once fit on `available` devices.
    pub fn check_devices(&self, available: usize) -> Result<()> {
        let needed = self.trials_in_parallel * self.devices_per_trial;
        if needed > available {
            return Err(Error::Invalid(format!(
                "parallelism: {} trials x {} devices need {needed} devices, but only {available} are available",
                self.trials_in_parallel, self.devices_per_trial
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Every combination of the space's values.
    Grid,
    /// `num_trials` seeded samples of the space.
    Random { num_trials: usize },
    /// `num_trials` seeded samples raced through rungs of `min_steps * reduction_factor^k`
    /// steps; after each rung the best `1 / reduction_factor` go on, the rest stop.
    SuccessiveHalving { num_trials: usize, reduction_factor: u64, min_steps: u64 },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Grid => "grid",
            Strategy::Random { .. } => "random",
            Strategy::SuccessiveHalving { .. } => "asha",
        }
    }
}

/// A validated sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// The base training config's path, as written in the sweep file.
    pub base_path: String,
    pub base_overrides: Vec<String>,
    /// The base training config tree with `base_overrides` applied.
    pub base: Value,
    /// Searched keys in file order.
    pub space: Vec<(String, ParamSpec)>,
    pub strategy: Strategy,
    pub seed: u64,
    pub objective: Objective,
    pub parallelism: Parallelism,
}

/// One planned trial: its id and the overrides it applies to the base config.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTrial {
    pub id: String,
    pub overrides: Vec<(String, Value)>,
}

fn invalid(name: &str, message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("sweep file {name}: {message}"))
}

impl SweepConfig {
    /// Reads a sweep file, applies `--set`-style overrides to it and validates it,
    /// including loading the base training config it names.
    pub fn load(path: &Path, overrides: &[String]) -> Result<SweepConfig> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("cannot read sweep file {name}"), e))?;
        Self::from_yaml(&text, &name, overrides)
    }

    /// As [`SweepConfig::load`], from text; `name` is used in messages.
    pub fn from_yaml(text: &str, name: &str, overrides: &[String]) -> Result<SweepConfig> {
        let (file, _): (SweepFile, Value) = config::load_str(text, name, overrides).map_err(|e| invalid(name, e))?;
        let base_text = std::fs::read_to_string(&file.base).map_err(|e| {
            invalid(name, format!("base: cannot read training config '{}' (relative to the working directory): {e}", file.base))
        })?;
        let mut base: Value = serde_yaml::from_str(&base_text)
            .map_err(|e| invalid(name, format!("base: '{}' is not valid YAML: {e}", file.base)))?;
        for (k, v) in config::parse_overrides(&file.base_overrides).map_err(|e| invalid(name, format!("base_overrides: {e}")))? {
            set_path(&mut base, &k, v).map_err(|e| invalid(name, format!("base_overrides: {e} in '{}'", file.base)))?;
        }
        Self::validate(file, base, name)
    }

    fn validate(file: SweepFile, base: Value, name: &str) -> Result<SweepConfig> {
        if file.space.is_empty() {
            return Err(invalid(name, "space: is empty; name at least one config key to search"));
        }
        let mut space = Vec::new();
        for (key, spec) in file.space {
            let key = key.as_str().ok_or_else(|| invalid(name, format!("space: keys must be dotted config keys, got {key:?}")))?;
            let spec = match spec {
                Value::Sequence(values) => ParamSpecFile { distribution: None, min: None, max: None, values: Some(values) },
                other => config::from_value::<ParamSpecFile>(other).map_err(|e| invalid(name, format!("space.{key}: {e}")))?,
            };
            let spec = spec.validate().map_err(|m| invalid(name, format!("space.{key}: {m}")))?;
            // The key must name an existing leaf of the base config, or every trial would fail.
            let mut probe = base.clone();
            set_path(&mut probe, key, Value::Null)
                .map_err(|e| invalid(name, format!("space.{key}: not a key of the base config '{}': {e}", file.base)))?;
            space.push((key.to_string(), spec));
        }

        let objective = Objective {
            metric: file.objective.metric,
            steps: file.objective.steps,
            divergence_factor: file.objective.divergence_factor,
        };
        if objective.steps == 0 {
            return Err(invalid(name, "objective.steps: must be at least 1"));
        }
        if objective.divergence_factor.is_nan() || objective.divergence_factor <= 1.0 {
            return Err(invalid(
                name,
                format!("objective.divergence_factor: must be above 1 (got {})", objective.divergence_factor),
            ));
        }

        let need_trials = |kind: &str| -> Result<usize> {
            match file.num_trials {
                Some(0) => Err(invalid(name, "num_trials: must be at least 1")),
                Some(n) => Ok(n),
                None => Err(invalid(name, format!("num_trials: required by the {kind} strategy"))),
            }
        };
        let strategy = match file.strategy {
            StrategyKind::Grid => {
                if let Some(n) = file.num_trials {
                    return Err(invalid(name, format!("num_trials: not used by the grid strategy (it runs every combination), got {n}")));
                }
                Strategy::Grid
            }
            StrategyKind::Random => Strategy::Random { num_trials: need_trials("random")? },
            StrategyKind::Asha => {
                let num_trials = need_trials("asha")?;
                let h = file.asha.as_ref().ok_or_else(|| invalid(name, "asha: required by the asha strategy (reduction_factor, min_steps)"))?;
                if h.reduction_factor < 2 {
                    return Err(invalid(name, format!("asha.reduction_factor: must be at least 2 (got {})", h.reduction_factor)));
                }
                if h.min_steps == 0 || h.min_steps >= objective.steps {
                    return Err(invalid(
                        name,
                        format!("asha.min_steps: must be between 1 and objective.steps - 1 ({}), got {}", objective.steps - 1, h.min_steps),
                    ));
                }
                Strategy::SuccessiveHalving { num_trials, reduction_factor: h.reduction_factor, min_steps: h.min_steps }
            }
        };
        if file.asha.is_some() && file.strategy != StrategyKind::Asha {
            return Err(invalid(name, "asha: only used by the asha strategy"));
        }

        let p = &file.parallelism;
        if p.trials_in_parallel == 0 {
            return Err(invalid(name, "parallelism.trials_in_parallel: must be at least 1"));
        }
        if p.trials_in_parallel > 1 && p.devices_per_trial == 0 {
            return Err(invalid(
                name,
                "parallelism.devices_per_trial: must be set (at least 1) when trials_in_parallel is above 1, so concurrent trials get disjoint devices",
            ));
        }

        let sweep = SweepConfig {
            base_path: file.base,
            base_overrides: file.base_overrides,
            base,
            space,
            strategy,
            seed: file.seed,
            objective,
            parallelism: file.parallelism,
        };
        if let Strategy::Grid = sweep.strategy {
            space::grid(&sweep.space).map_err(|m| invalid(name, m))?;
        }
        Ok(sweep)
    }

    /// The trials this sweep runs, in order; the same file always plans the same trials.
    pub fn trials(&self) -> Result<Vec<PlannedTrial>> {
        let combos = match &self.strategy {
            Strategy::Grid => space::grid(&self.space).map_err(Error::Invalid)?,
            Strategy::Random { num_trials } | Strategy::SuccessiveHalving { num_trials, .. } => {
                space::sample(&self.space, *num_trials, self.seed)
            }
        };
        let width = combos.len().saturating_sub(1).to_string().len().max(3);
        Ok(combos.into_iter().enumerate().map(|(i, overrides)| PlannedTrial { id: format!("t{i:0width$}"), overrides }).collect())
    }

    /// Step budgets at which trials are compared: `[objective.steps]`, or for
    /// successive halving `min_steps * reduction_factor^k` below it, then it.
    pub fn rungs(&self) -> Vec<u64> {
        let mut rungs = Vec::new();
        if let Strategy::SuccessiveHalving { reduction_factor, min_steps, .. } = self.strategy {
            let mut b = min_steps;
            while b < self.objective.steps {
                rungs.push(b);
                b = b.saturating_mul(reduction_factor);
            }
        }
        rungs.push(self.objective.steps);
        rungs
    }

    /// The base config with `overrides` applied.
    pub fn trial_config(&self, overrides: &[(String, Value)]) -> Result<Value> {
        let mut cfg = self.base.clone();
        for (k, v) in overrides {
            set_path(&mut cfg, k, v.clone()).map_err(|e| Error::Invalid(format!("trial override {k}: {e}")))?;
        }
        Ok(cfg)
    }
}
