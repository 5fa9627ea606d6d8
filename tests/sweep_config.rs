//! Sweep files: the shipped example loads, planning is reproducible, and every
//! kind of mistake is an error that names the offending key.

use dalle_xla::sweep::{ParamSpec, Strategy, SweepConfig};
use serde_yaml::Value;

const GOOD: &str = "
base: configs/tiny.yaml
space:
  optimizer.learning_rate: { distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }
strategy: random
num_trials: 4
seed: 1
objective: { steps: 100 }
";

/// Replaces `from` in the good file with `to` (which must change it) and returns the load error.
fn error_for(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test setup: '{from}' not in the good file");
    let text = GOOD.replace(from, to);
    match SweepConfig::from_yaml(&text, "bad.yaml", &[]) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "error should mention '{n}': {err}");
    }
    assert!(err.contains("bad.yaml"), "error should name the file: {err}");
}

#[test]
fn the_shipped_lr_sweep_loads() {
    let sweep = SweepConfig::load(std::path::Path::new("configs/sweeps/lr.yaml"), &[]).unwrap();
    assert_eq!(sweep.strategy, Strategy::Random { num_trials: 8 });
    assert!(matches!(sweep.space[0].1, ParamSpec::LogUniform { .. }));
    assert_eq!(sweep.space[0].0, "optimizer.learning_rate");
    assert_eq!(sweep.base["train"]["eval_every"], Value::from(50), "base_overrides applied");
    let trials = sweep.trials().unwrap();
    assert_eq!(trials.len(), 8);
    // Overrides on the sweep file itself go through the same config machinery.
    let more = SweepConfig::load(std::path::Path::new("configs/sweeps/lr.yaml"), &["num_trials=3".into()]).unwrap();
    assert_eq!(more.trials().unwrap().len(), 3);
}

#[test]
fn planning_is_reproducible_and_applies_overrides_to_the_base() {
    let a = SweepConfig::from_yaml(GOOD, "good.yaml", &[]).unwrap();
    let b = SweepConfig::from_yaml(GOOD, "good.yaml", &[]).unwrap();
    let ta = a.trials().unwrap();
    assert_eq!(ta, b.trials().unwrap());
    let ids: Vec<&str> = ta.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t000", "t001", "t002", "t003"]);
    for t in &ta {
        let lr = t.overrides[0].1.as_f64().unwrap();
        assert!((1e-5..=1e-2).contains(&lr));
        let cfg = a.trial_config(&t.overrides).unwrap();
        assert_eq!(cfg["optimizer"]["learning_rate"], Value::from(lr));
        assert_eq!(cfg["model"], a.base["model"], "other keys untouched");
    }
    let other_seed = SweepConfig::from_yaml(GOOD, "good.yaml", &["seed=2".into()]).unwrap();
    assert_ne!(ta, other_seed.trials().unwrap());
}

#[test]
fn unknown_keys_are_named() {
    let e = error_for("seed: 1", "sed: 1");
    assert_names(&e, &["sed"]);
    let e = error_for("objective: { steps: 100 }", "objective: { steps: 100, budget: 3 }");
    assert_names(&e, &["objective.budget"]);
    let e = error_for("{ distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }", "{ distribution: log_uniform, mn: 1.0e-5, max: 1.0e-2 }");
    assert_names(&e, &["space.optimizer.learning_rate", "mn"]);
}

#[test]
fn wrong_types_are_named() {
    let e = error_for("num_trials: 4", "num_trials: many");
    assert_names(&e, &["num_trials"]);
    let e = error_for("strategy: random", "strategy: bayesian");
    assert_names(&e, &["strategy", "bayesian"]);
    let e = error_for("distribution: log_uniform", "distribution: normal");
    assert_names(&e, &["space.optimizer.learning_rate", "normal"]);
}

#[test]
fn bad_search_spaces_are_named() {
    let e = error_for(
        "space:\n  optimizer.learning_rate: { distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }",
        "space: {}",
    );
    assert_names(&e, &["space", "empty"]);
    let e = error_for("min: 1.0e-5, max: 1.0e-2", "min: 1.0e-2, max: 1.0e-2");
    assert_names(&e, &["space.optimizer.learning_rate", "min", "below max"]);
    let e = error_for("min: 1.0e-5, max: 1.0e-2", "min: -1.0e-5, max: 1.0e-2");
    assert_names(&e, &["space.optimizer.learning_rate", "log_uniform needs positive bounds"]);
    let e = error_for("min: 1.0e-5, max: 1.0e-2", "min: 0.0, max: 1.0e-2");
    assert_names(&e, &["positive bounds"]);
    let e = error_for("{ distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }", "{ values: [] }");
    assert_names(&e, &["space.optimizer.learning_rate", "empty"]);
    let e = error_for("{ distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }", "{ distribution: log_uniform, min: 1.0e-5 }");
    assert_names(&e, &["space.optimizer.learning_rate", "needs `max`"]);
    let e = error_for("{ distribution: log_uniform, min: 1.0e-5, max: 1.0e-2 }", "{ distribution: int_uniform, min: 1.5, max: 4 }");
    assert_names(&e, &["whole-number"]);
}

#[test]
fn keys_missing_from_the_base_config_are_named() {
    let e = error_for("optimizer.learning_rate:", "optimizer.learning_rat:");
    assert_names(&e, &["space.optimizer.learning_rat", "not a key of the base config", "configs/tiny.yaml", "learning_rate"]);
    let e = error_for("optimizer.learning_rate:", "optimiser.learning_rate:");
    assert_names(&e, &["space.optimiser.learning_rate"]);
    let e = error_for("base: configs/tiny.yaml", "base: configs/tiny.yaml\nbase_overrides: [train.stepz=5]");
    assert_names(&e, &["base_overrides", "train.stepz"]);
    let e = error_for("base: configs/tiny.yaml", "base: configs/nope.yaml");
    assert_names(&e, &["base", "configs/nope.yaml"]);
}

#[test]
fn strategy_settings_are_checked() {
    let e = error_for("num_trials: 4\n", "");
    assert_names(&e, &["num_trials", "random"]);
    let e = error_for("num_trials: 4", "num_trials: 0");
    assert_names(&e, &["num_trials", "at least 1"]);
    let e = error_for("strategy: random", "strategy: grid");
    assert_names(&e, &["num_trials", "grid"]);
    let e = error_for("strategy: random\nnum_trials: 4", "strategy: grid");
    assert_names(&e, &["space.optimizer.learning_rate", "grid strategy needs a list of `values`"]);
    let e = error_for("strategy: random", "strategy: asha");
    assert_names(&e, &["asha", "required"]);
    let e = error_for("strategy: random", "strategy: asha\nasha: { reduction_factor: 1, min_steps: 10 }");
    assert_names(&e, &["asha.reduction_factor"]);
    let e = error_for("strategy: random", "strategy: asha\nasha: { min_steps: 100 }");
    assert_names(&e, &["asha.min_steps"]);
    let e = error_for("seed: 1", "seed: 1\nasha: { min_steps: 10 }");
    assert_names(&e, &["asha", "only used by the asha strategy"]);
    let e = error_for("objective: { steps: 100 }", "objective: { steps: 0 }");
    assert_names(&e, &["objective.steps"]);
    let e = error_for("objective: { steps: 100 }", "objective: { steps: 100, divergence_factor: 0.5 }");
    assert_names(&e, &["objective.divergence_factor"]);
    let e = error_for("seed: 1", "seed: 1\nparallelism: { trials_in_parallel: 4 }");
    assert_names(&e, &["parallelism.devices_per_trial"]);
    let e = error_for("seed: 1", "seed: 1\nparallelism: { trials_in_parallel: 0, devices_per_trial: 1 }");
    assert_names(&e, &["parallelism.trials_in_parallel"]);
}

#[test]
fn successive_halving_rungs_grow_by_the_reduction_factor() {
    let text = GOOD.replace("strategy: random", "strategy: asha\nasha: { reduction_factor: 3, min_steps: 10 }");
    let sweep = SweepConfig::from_yaml(&text, "asha.yaml", &[]).unwrap();
    assert_eq!(sweep.rungs(), vec![10, 30, 90, 100]);
    let text = GOOD.replace("strategy: random", "strategy: successive_halving\nasha: { reduction_factor: 2, min_steps: 25 }");
    let sweep = SweepConfig::from_yaml(&text, "asha.yaml", &[]).unwrap();
    assert_eq!(sweep.rungs(), vec![25, 50, 100]);
    assert_eq!(
        sweep.strategy,
        Strategy::SuccessiveHalving { num_trials: 4, reduction_factor: 2, min_steps: 25 }
    );
}

#[test]
fn parallel_slots_get_disjoint_devices() {
    let text = format!("{GOOD}parallelism: {{ trials_in_parallel: 4, devices_per_trial: 2 }}\n");
    let sweep = SweepConfig::from_yaml(&text, "par.yaml", &[]).unwrap();
    let sets: Vec<Vec<usize>> = (0..4).map(|s| sweep.parallelism.devices(s)).collect();
    assert_eq!(sets, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
}
