//! The search space: one parameter spec per dotted config key, grid enumeration
//! and seeded random sampling.

use super::rng::SplitMix64;
use serde::Deserialize;
use serde_yaml::Value;

/// How one config key is searched.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamSpec {
    /// `exp(uniform(ln min, ln max))`; `0 < min < max`.
    LogUniform { min: f64, max: f64 },
    Uniform { min: f64, max: f64 },
    /// An integer in `[min, max]`, both ends included.
    IntUniform { min: i64, max: i64 },
    /// One of `values`, uniformly (random and successive halving), or each in turn (grid).
    Choice { values: Vec<Value> },
}

impl ParamSpec {
    /// Whether results against this key read best on a log axis.
    pub fn is_log(&self) -> bool {
        matches!(self, ParamSpec::LogUniform { .. })
    }

    /// The values a grid visits, or `None` for continuous distributions.
    pub fn grid_values(&self) -> Option<Vec<Value>> {
        match self {
            ParamSpec::Choice { values } => Some(values.clone()),
            ParamSpec::IntUniform { min, max } if max - min < 1000 => Some((*min..=*max).map(Value::from).collect()),
            _ => None,
        }
    }

    pub fn sample(&self, rng: &mut SplitMix64) -> Value {
        match self {
            ParamSpec::LogUniform { min, max } => {
                let (a, b) = (min.ln(), max.ln());
                Value::from(round_sig((a + rng.next_f64() * (b - a)).exp(), 4).clamp(*min, *max))
            }
            ParamSpec::Uniform { min, max } => Value::from(round_sig(min + rng.next_f64() * (max - min), 4).clamp(*min, *max)),
            ParamSpec::IntUniform { min, max } => Value::from(min + rng.below((max - min) as u64 + 1) as i64),
            ParamSpec::Choice { values } => values[rng.below(values.len() as u64) as usize].clone(),
        }
    }
}

/// Rounds to `digits` significant digits: sampled values print and copy cleanly
/// (`0.0003142`, not `0.00031415926535`), and the trial runs exactly the printed value.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    let r = (x * scale).round() / scale;
    // Re-parse the shortest decimal so the stored f64 is the one the text names.
    format!("{r:.*e}", (digits - 1) as usize).parse().unwrap_or(r)
}

/// The sweep file's form of a parameter spec, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParamSpecFile {
    #[serde(default)]
    pub distribution: Option<Distribution>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub values: Option<Vec<Value>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Distribution {
    LogUniform,
    Uniform,
    IntUniform,
    Choice,
}

impl ParamSpecFile {
    /// Checks the spec; errors are the message after `space.<key>: `.
    pub fn validate(self) -> Result<ParamSpec, String> {
        let dist = match (self.distribution, &self.values) {
            (Some(d), _) => d,
            (None, Some(_)) => Distribution::Choice,
            (None, None) => {
                return Err("needs `values: [...]` or a `distribution` (log_uniform, uniform, int_uniform, choice)".into())
            }
        };
        match dist {
            Distribution::Choice => {
                if self.min.is_some() || self.max.is_some() {
                    return Err("min/max only apply to log_uniform, uniform and int_uniform; a list of `values` takes neither".into());
                }
                let values = self.values.ok_or("choice needs `values: [...]`")?;
                if values.is_empty() {
                    return Err("`values` is empty: the search space has nothing to try".into());
                }
                Ok(ParamSpec::Choice { values })
            }
            d => {
                if self.values.is_some() {
                    return Err(format!("{} takes min and max, not `values`", name(d)));
                }
                let min = self.min.ok_or_else(|| format!("{} needs `min`", name(d)))?;
                let max = self.max.ok_or_else(|| format!("{} needs `max`", name(d)))?;
                if !min.is_finite() || !max.is_finite() {
                    return Err(format!("min and max must be finite numbers (got {min} and {max})"));
                }
                if min >= max {
                    return Err(format!("min ({min}) must be below max ({max})"));
                }
                match d {
                    Distribution::LogUniform if min <= 0.0 => {
                        Err(format!("log_uniform needs positive bounds (got min {min}, max {max})"))
                    }
                    Distribution::LogUniform => Ok(ParamSpec::LogUniform { min, max }),
                    Distribution::Uniform => Ok(ParamSpec::Uniform { min, max }),
                    _ => {
                        if min.fract() != 0.0 || max.fract() != 0.0 {
                            return Err(format!("int_uniform needs whole-number bounds (got {min} and {max})"));
                        }
                        Ok(ParamSpec::IntUniform { min: min as i64, max: max as i64 })
                    }
                }
            }
        }
    }
}

fn name(d: Distribution) -> &'static str {
    match d {
        Distribution::LogUniform => "log_uniform",
        Distribution::Uniform => "uniform",
        Distribution::IntUniform => "int_uniform",
        Distribution::Choice => "choice",
    }
}

/// Every combination of the grid values, the first key varying slowest.
pub fn grid(space: &[(String, ParamSpec)]) -> Result<Vec<Vec<(String, Value)>>, String> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, spec) in space {
        let values = spec.grid_values().ok_or_else(|| {
            format!("space.{key}: the grid strategy needs a list of `values` (or a small int_uniform range), not a continuous distribution")
        })?;
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    Ok(combos)
}

/// `n` independent samples of the whole space from `seed`; the same inputs give the same trials.
pub fn sample(space: &[(String, ParamSpec)], n: usize, seed: u64) -> Vec<Vec<(String, Value)>> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| space.iter().map(|(k, spec)| (k.clone(), spec.sample(&mut rng))).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_uniform_samples_stay_in_bounds_and_spread_over_decades() {
        let space = vec![("lr".to_string(), ParamSpec::LogUniform { min: 1e-5, max: 1e-2 })];
        let trials = sample(&space, 300, 3);
        let lrs: Vec<f64> = trials.iter().map(|t| t[0].1.as_f64().unwrap()).collect();
        assert!(lrs.iter().all(|&x| (1e-5..=1e-2).contains(&x)));
        // Each of the three decades gets a fair share (expected 100 each).
        for d in [-5, -4, -3] {
            let lo = 10f64.powi(d);
            let n = lrs.iter().filter(|&&x| x >= lo && x < lo * 10.0).count();
            assert!((60..=140).contains(&n), "decade 1e{d}: {n}");
        }
        assert_eq!(trials, sample(&space, 300, 3), "same seed, same trials");
        assert_ne!(trials, sample(&space, 300, 4));
    }

    #[test]
    fn grid_is_the_cartesian_product() {
        let space = vec![
            ("a".to_string(), ParamSpec::Choice { values: vec![Value::from(1), Value::from(2)] }),
            ("b".to_string(), ParamSpec::IntUniform { min: 0, max: 2 }),
        ];
        let g = grid(&space).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![("a".into(), Value::from(1)), ("b".into(), Value::from(0))]);
        assert_eq!(g[5], vec![("a".into(), Value::from(2)), ("b".into(), Value::from(2))]);
    }
}
