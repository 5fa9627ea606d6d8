//! Axis ranges, data-to-pixel mapping and tick placement for linear and log axes.

/// How values map onto an axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; only positive values can be placed.
    Log10,
}

/// One tick: its data value, its pixel coordinate along the axis and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub pixel: f64,
    pub label: String,
}

/// A data range mapped onto a pixel span. For log axes `lo`/`hi` are in data units
/// (not exponents); the mapping is linear in `log10(value)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub scale: Scale,
    pub lo: f64,
    pub hi: f64,
    /// Pixel coordinates of `lo` and `hi` (for a y axis `lo` maps to the bottom, the larger pixel).
    pub pixel_lo: f64,
    pub pixel_hi: f64,
    pub ticks: Vec<Tick>,
}

impl Axis {
    /// Builds an axis covering `[min, max]` (finite, and positive on log axes) plus a
    /// small margin, so data never sits on the frame; ticks are nice values inside it.
    pub fn fit(scale: Scale, min: f64, max: f64, pixel_lo: f64, pixel_hi: f64, max_ticks: usize) -> Axis {
        let (lo, hi) = padded(scale, min, max);
        Axis::fixed(scale, lo, hi, pixel_lo, pixel_hi, max_ticks)
    }

    /// Builds an axis spanning exactly `[lo, hi]` (`lo < hi`, positive on log axes).
    pub fn fixed(scale: Scale, lo: f64, hi: f64, pixel_lo: f64, pixel_hi: f64, max_ticks: usize) -> Axis {
        let max_ticks = max_ticks.max(2);
        let values = match scale {
            Scale::Linear => linear_ticks(lo, hi, max_ticks),
            Scale::Log10 => log_ticks(lo, hi, max_ticks),
        };
        let mut axis = Axis { scale, lo, hi, pixel_lo, pixel_hi, ticks: Vec::new() };
        let step = values.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
        let decades_only = values.iter().all(|v| (v.log10() - v.log10().round()).abs() < 1e-9);
        axis.ticks = values
            .into_iter()
            .map(|value| Tick {
                value,
                pixel: axis.pixel(value),
                label: if scale == Scale::Log10 && decades_only { format_log(value) } else { format_linear(value, step) },
            })
            .collect();
        axis
    }

    /// The pixel coordinate of `value` along this axis.
    pub fn pixel(&self, value: f64) -> f64 {
        let (v, lo, hi) = match self.scale {
            Scale::Linear => (value, self.lo, self.hi),
            Scale::Log10 => (value.log10(), self.lo.log10(), self.hi.log10()),
        };
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        self.pixel_lo + t * (self.pixel_hi - self.pixel_lo)
    }

    /// Whether `value` can be placed on this axis at all.
    pub fn accepts(scale: Scale, value: f64) -> bool {
        value.is_finite() && (scale == Scale::Linear || value > 0.0)
    }
}

/// "Nice" tick step (1, 2 or 5 times a power of ten) for a span split into about `n` parts.
fn nice_step(span: f64, n: usize) -> f64 {
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Fraction of the data span added on each side.
const MARGIN: f64 = 0.04;

fn padded(scale: Scale, min: f64, max: f64) -> (f64, f64) {
    match scale {
        Scale::Linear => {
            let span = max - min;
            if span <= f64::EPSILON * min.abs().max(max.abs()).max(1.0) {
                // A flat series still needs a visible range around it.
                let pad = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
                (min - pad, max + pad)
            } else {
                (min - span * MARGIN, max + span * MARGIN)
            }
        }
        Scale::Log10 => {
            let (a, b) = (min.log10(), max.log10());
            let (a, b) = if b - a < 1e-9 { (a - 0.2, b + 0.2) } else { (a - (b - a) * MARGIN, b + (b - a) * MARGIN) };
            (10f64.powf(a), 10f64.powf(b))
        }
    }
}

/// Nice ticks (multiples of a 1/2/5 step) inside `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    let step = nice_step(hi - lo, max_ticks - 1);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            // Snap float noise like 0.30000000000000004 so labels stay short.
            let digits = (-step.log10().floor()).max(0.0) as i32 + 1;
            let q = 10f64.powi(digits);
            (v * q).round() / q
        })
        .collect()
}

/// Decade ticks inside `[lo, hi]` (every k-th decade when there are many); within
/// a decade or two, 1/2/5 multiples; in a very narrow range, plain linear ticks.
fn log_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    let (a, b) = (lo.log10(), hi.log10());
    let first = a.ceil() as i32;
    let last = b.floor() as i32;
    let decades = (last - first + 1).max(0) as usize;
    if decades >= 3 {
        let every = decades.div_ceil(max_ticks).max(1);
        return (first..=last).step_by(every).map(|e| 10f64.powi(e)).collect();
    }
    let mut values = Vec::new();
    for e in a.floor() as i32..=b.ceil() as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-12) && v <= hi * (1.0 + 1e-12) {
                values.push(v);
            }
        }
    }
    if values.len() >= 2 {
        values
    } else {
        linear_ticks(lo, hi, max_ticks)
    }
}

/// Formats a linear tick with as many decimals as the step needs; very large or
/// small magnitudes use `e` notation.
pub fn format_linear(value: f64, step: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let big = value.abs().max(step.abs());
    if big >= 1e5 || step.abs() < 1e-3 {
        return format_sci(value, 2);
    }
    let decimals = if step.is_finite() && step > 0.0 { (-step.log10().floor()).max(0.0) as usize } else { 2 };
    format!("{value:.decimals$}")
}

/// Formats a decade (or 2x/5x a decade) tick: plain digits between 0.01 and 1000, `1e-4` style outside.
pub fn format_log(value: f64) -> String {
    let exp = value.log10().floor() as i32;
    if (-2..=3).contains(&exp) {
        let decimals = (-exp).max(0) as usize;
        format!("{value:.decimals$}")
    } else {
        format_sci(value, 2)
    }
}

/// `1.2e-3` style with up to `digits` significant digits and no trailing zeros (`1e-4`, `2.5e5`).
pub fn format_sci(value: f64, digits: usize) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let s = format!("{:.*e}", digits.saturating_sub(1), value);
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
    format!("{mantissa}e{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sci_format_drops_trailing_zeros() {
        assert_eq!(format_sci(0.0001, 2), "1e-4");
        assert_eq!(format_sci(0.00123, 2), "1.2e-3");
        assert_eq!(format_sci(250000.0, 2), "2.5e5");
    }

    #[test]
    fn linear_ticks_cover_data_with_nice_steps() {
        let a = Axis::fit(Scale::Linear, 0.13, 0.91, 0.0, 100.0, 6);
        assert!(a.lo < 0.13 && a.hi > 0.91);
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0.2", "0.4", "0.6", "0.8"]);
    }
}
