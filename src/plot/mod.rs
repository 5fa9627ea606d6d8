//! Small PNG plots (line and scatter series, linear or log axes) with no
//! plotting or font dependency: loss curves for training runs and sweeps.
//!
//! ```no_run
//! # use dalle_xla::plot::Plot;
//! let rendered = Plot::new("eval loss")
//!     .x_label("step")
//!     .y_label("loss")
//!     .line("lr=1e-3", &[(0.0, 4.0), (100.0, 2.5), (200.0, 2.1)])
//!     .save_png(std::path::Path::new("loss.png"), 800, 500)?;
//! println!("{} points skipped", rendered.skipped_points);
//! # Ok::<(), dalle_xla::Error>(())
//! ```
//!
//! Points that cannot be drawn (NaN or infinite coordinates, non-positive values
//! on a log axis) are skipped and counted in [`Rendered::skipped_points`]; a plot
//! with nothing left to draw is an error.

mod axis;
pub mod canvas;
pub mod font;

pub use axis::{format_sci, Axis, Scale, Tick};

use crate::error::{Error, Result};
use canvas::{text_height, text_width, Canvas};
use image::{Rgb, RgbImage};
use std::path::Path;

pub const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
pub const FOREGROUND: Rgb<u8> = Rgb([20, 20, 20]);
pub const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// The first ten series colours (matplotlib's "tab10"); later series get
/// golden-angle hues so neighbours stay distinguishable.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour of the `index`-th series (in the order they were added).
pub fn series_colour(index: usize) -> Rgb<u8> {
    if let Some(c) = PALETTE.get(index) {
        return Rgb(*c);
    }
    let hue = (index as f64 * 137.508) % 360.0;
    hsv_to_rgb(hue, 0.7, 0.8)
}

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> Rgb<u8> {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |f: f64| ((f + m) * 255.0).round() as u8;
    Rgb([to(r), to(g), to(b)])
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeriesKind {
    Line,
    Scatter,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub kind: SeriesKind,
    pub points: Vec<(f64, f64)>,
}

/// A plot description; nothing is drawn until [`Plot::render`] or [`Plot::save_png`].
#[derive(Clone, Debug)]
pub struct Plot {
    title: String,
    x_label: String,
    y_label: String,
    x_scale: Scale,
    y_scale: Scale,
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
    series: Vec<Series>,
}

/// The plot area in pixels (inclusive edges): where data is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlotArea {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

/// A drawn plot with the geometry used to draw it, so callers (and tests) can
/// locate data points and ticks in the image.
pub struct Rendered {
    pub image: RgbImage,
    pub area: PlotArea,
    pub x_axis: Axis,
    pub y_axis: Axis,
    /// Points that were not drawn: NaN/infinite, or non-positive on a log axis.
    pub skipped_points: usize,
    /// Points outside an explicit [`Plot::x_range`] / [`Plot::y_range`] (lines to them are cut at the frame).
    pub clipped_points: usize,
}

impl Rendered {
    /// The pixel at which data point (x, y) was drawn.
    pub fn pixel(&self, x: f64, y: f64) -> (f64, f64) {
        (self.x_axis.pixel(x), self.y_axis.pixel(y))
    }

    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.image
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::Invalid(format!("cannot encode PNG: {e}")))?;
        Ok(out.into_inner())
    }
}

const MIN_WIDTH: u32 = 200;
const MIN_HEIGHT: u32 = 150;
/// Legend labels longer than this are cut (with a trailing `..`) so the legend cannot eat the plot.
const MAX_LEGEND_CHARS: usize = 28;

impl Plot {
    pub fn new(title: impl Into<String>) -> Plot {
        Plot {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_range: None,
            y_range: None,
            series: Vec::new(),
        }
    }

    pub fn x_label(mut self, label: impl Into<String>) -> Plot {
        self.x_label = label.into();
        self
    }

    pub fn y_label(mut self, label: impl Into<String>) -> Plot {
        self.y_label = label.into();
        self
    }

    pub fn log_x(mut self, on: bool) -> Plot {
        self.x_scale = if on { Scale::Log10 } else { Scale::Linear };
        self
    }

    pub fn log_y(mut self, on: bool) -> Plot {
        self.y_scale = if on { Scale::Log10 } else { Scale::Linear };
        self
    }

    /// Fixes the x axis to `[lo, hi]` instead of fitting it to the data.
    pub fn x_range(mut self, lo: f64, hi: f64) -> Plot {
        self.x_range = Some((lo, hi));
        self
    }

    /// Fixes the y axis to `[lo, hi]`; e.g. to keep one exploding curve from flattening the rest.
    pub fn y_range(mut self, lo: f64, hi: f64) -> Plot {
        self.y_range = Some((lo, hi));
        self
    }

    /// Adds a polyline through `points` (in the given order).
    pub fn line(mut self, name: impl Into<String>, points: &[(f64, f64)]) -> Plot {
        self.series.push(Series { name: name.into(), kind: SeriesKind::Line, points: points.to_vec() });
        self
    }

    /// Adds unconnected point markers.
    pub fn scatter(mut self, name: impl Into<String>, points: &[(f64, f64)]) -> Plot {
        self.series.push(Series { name: name.into(), kind: SeriesKind::Scatter, points: points.to_vec() });
        self
    }

    fn drawable(&self, (x, y): (f64, f64)) -> bool {
        Axis::accepts(self.x_scale, x) && Axis::accepts(self.y_scale, y)
    }

    /// Draws the plot into a `width` x `height` image.
    pub fn render(&self, width: u32, height: u32) -> Result<Rendered> {
        if width < MIN_WIDTH || height < MIN_HEIGHT {
            return Err(Error::Invalid(format!(
                "plot '{}': {width}x{height} pixels is too small (at least {MIN_WIDTH}x{MIN_HEIGHT})",
                self.title
            )));
        }
        let total: usize = self.series.iter().map(|s| s.points.len()).sum();
        let kept: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| self.drawable(*p)).collect();
        let skipped_points = total - kept.len();
        if kept.is_empty() {
            let why = if total == 0 {
                "has no data points".to_string()
            } else {
                format!("has no drawable points ({skipped_points} skipped as NaN/infinite or non-positive on a log axis)")
            };
            return Err(Error::Invalid(format!("plot '{}' {why}", self.title)));
        }
        for (axis, range, scale) in [("x", self.x_range, self.x_scale), ("y", self.y_range, self.y_scale)] {
            if let Some((lo, hi)) = range {
                if !(Axis::accepts(scale, lo) && Axis::accepts(scale, hi) && lo < hi) {
                    return Err(Error::Invalid(format!(
                        "plot '{}': {axis} range [{lo}, {hi}] must be finite, increasing{}",
                        self.title,
                        if scale == Scale::Log10 { " and positive on a log axis" } else { "" }
                    )));
                }
            }
        }
        let inside = |(x, y): (f64, f64)| {
            self.x_range.is_none_or(|(lo, hi)| x >= lo && x <= hi) && self.y_range.is_none_or(|(lo, hi)| y >= lo && y <= hi)
        };
        let clipped_points = kept.iter().filter(|p| !inside(**p)).count();
        let (x_min, x_max) = min_max(kept.iter().map(|p| p.0));
        let (y_min, y_max) = min_max(kept.iter().map(|p| p.1));

        let s = if width.min(height) >= 700 { 2 } else { 1 };
        let margin = 10 * s;
        let gap = 4 * s;
        let tick_len = 5 * s as i64;
        let title_scale = 2 * s;

        // Legend on the right, outside the data.
        let legend_labels: Vec<String> = self.series.iter().map(|s| truncate(&s.name, MAX_LEGEND_CHARS)).collect();
        let swatch = 18 * s;
        let legend_text_w = legend_labels.iter().map(|l| text_width(l, s)).max().unwrap_or(0);
        let legend_w = if self.series.is_empty() { 0 } else { swatch + gap + legend_text_w + 2 * margin };

        let top = margin + text_height(title_scale) + margin;
        let x_label_h = if self.x_label.is_empty() { 0 } else { text_height(s) + gap };
        let bottom = height - margin - x_label_h - text_height(s) - gap - tick_len as u32;
        let y_ticks = ((bottom - top) / (40 * s)).clamp(2, 8) as usize;
        let y_axis = match self.y_range {
            Some((lo, hi)) => Axis::fixed(self.y_scale, lo, hi, bottom as f64, top as f64, y_ticks),
            None => Axis::fit(self.y_scale, y_min, y_max, bottom as f64, top as f64, y_ticks),
        };
        let y_tick_w = y_axis.ticks.iter().map(|t| text_width(&t.label, s)).max().unwrap_or(0);
        let y_label_w = if self.y_label.is_empty() { 0 } else { text_height(s) + gap };
        let left = margin + y_label_w + y_tick_w + gap + tick_len as u32;
        if left + 50 + margin + legend_w > width {
            return Err(Error::Invalid(format!(
                "plot '{}': {width} pixels is too narrow for its labels and legend (needs {})",
                self.title,
                left + 50 + margin + legend_w
            )));
        }
        let right = width - margin - legend_w;
        let x_ticks = ((right - left) / (70 * s)).clamp(2, 10) as usize;
        let x_axis = match self.x_range {
            Some((lo, hi)) => Axis::fixed(self.x_scale, lo, hi, left as f64, right as f64, x_ticks),
            None => Axis::fit(self.x_scale, x_min, x_max, left as f64, right as f64, x_ticks),
        };
        let area = PlotArea { left, top, right, bottom };

        let mut c = Canvas::new(width, height, BACKGROUND);
        let (l, t, r, b) = (left as i64, top as i64, right as i64, bottom as i64);

        // Grid and ticks.
        for tick in &x_axis.ticks {
            let px = tick.pixel.round() as i64;
            c.vline(px, t, b, GRID);
            c.vline(px, b, b + tick_len, FOREGROUND);
            let w = text_width(&tick.label, s) as i64;
            c.text(px - w / 2, b + tick_len + gap as i64, &tick.label, s, FOREGROUND);
        }
        for tick in &y_axis.ticks {
            let py = tick.pixel.round() as i64;
            c.hline(l, r, py, GRID);
            c.hline(l - tick_len, l, py, FOREGROUND);
            let w = text_width(&tick.label, s) as i64;
            c.text(l - tick_len - gap as i64 - w, py - text_height(s) as i64 / 2, &tick.label, s, FOREGROUND);
        }
        // Frame.
        c.hline(l, r, t, FOREGROUND);
        c.hline(l, r, b, FOREGROUND);
        c.vline(l, t, b, FOREGROUND);
        c.vline(r, t, b, FOREGROUND);

        // Title and axis labels.
        let tw = text_width(&self.title, title_scale) as i64;
        c.text(((l + r) / 2 - tw / 2).max(0), margin as i64, &self.title, title_scale, FOREGROUND);
        if !self.x_label.is_empty() {
            let w = text_width(&self.x_label, s) as i64;
            c.text((l + r) / 2 - w / 2, height as i64 - margin as i64 - text_height(s) as i64, &self.x_label, s, FOREGROUND);
        }
        if !self.y_label.is_empty() {
            let w = text_width(&self.y_label, s) as i64;
            c.text_vertical(margin as i64, (t + b) / 2 + w / 2, &self.y_label, s, FOREGROUND);
        }

        // Data, clipped to the inside of the frame.
        c.set_clip(Some((l + 1, t + 1, r - 1, b - 1)));
        for (i, series) in self.series.iter().enumerate() {
            let colour = series_colour(i);
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|p| self.drawable(**p))
                .map(|&(x, y)| (x_axis.pixel(x), y_axis.pixel(y)))
                .collect();
            let frame = (l as f64, t as f64, r as f64, b as f64);
            match series.kind {
                SeriesKind::Line => {
                    if pts.len() == 1 && in_rect(pts[0], frame) {
                        c.disc(pts[0], 2 * s as i64, colour);
                    }
                    for w in pts.windows(2) {
                        // Cut segments at the frame first: an off-scale point may be millions of pixels away.
                        if let Some((a, b)) = clip_segment(w[0], w[1], frame) {
                            c.line(a, b, 2 * s as i64, colour);
                        }
                    }
                }
                SeriesKind::Scatter => {
                    for p in pts.iter().filter(|p| in_rect(**p, frame)) {
                        c.disc(*p, 3 * s as i64, colour);
                    }
                }
            }
        }
        c.set_clip(None);

        // Legend: as many entries as fit, then a count of the rest.
        let row_h = (text_height(s) + gap) as i64;
        let lx = r + margin as i64;
        let max_rows = ((b - t) / row_h).max(1) as usize;
        let shown = if self.series.len() > max_rows { max_rows - 1 } else { self.series.len() };
        for (i, (series, label)) in self.series.iter().zip(&legend_labels).take(shown).enumerate() {
            let y = t + i as i64 * row_h;
            let mid = y + text_height(s) as i64 / 2;
            let colour = series_colour(i);
            match series.kind {
                SeriesKind::Line => c.line((lx as f64, mid as f64), ((lx + swatch as i64) as f64, mid as f64), 2 * s as i64, colour),
                SeriesKind::Scatter => c.disc(((lx + swatch as i64 / 2) as f64, mid as f64), 3 * s as i64, colour),
            }
            c.text(lx + swatch as i64 + gap as i64, y, label, s, FOREGROUND);
        }
        if shown < self.series.len() {
            let y = t + shown as i64 * row_h;
            c.text(lx, y, &format!("+{} more", self.series.len() - shown), s, FOREGROUND);
        }

        Ok(Rendered { image: c.image, area, x_axis, y_axis, skipped_points, clipped_points })
    }

    /// Renders and writes a PNG file.
    pub fn save_png(&self, path: &Path, width: u32, height: u32) -> Result<Rendered> {
        let rendered = self.render(width, height)?;
        let bytes = rendered.png_bytes()?;
        std::fs::write(path, bytes).map_err(|e| Error::io(format!("cannot write plot {}", path.display()), e))?;
        Ok(rendered)
    }
}

fn in_rect((x, y): (f64, f64), (l, t, r, b): (f64, f64, f64, f64)) -> bool {
    x >= l && x <= r && y >= t && y <= b
}

/// The part of segment a-b inside the rectangle (Liang-Barsky), if any.
fn clip_segment(a: (f64, f64), b: (f64, f64), (l, t, r, bottom): (f64, f64, f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.0 - l), (dx, r - a.0), (-dy, a.1 - t), (dy, bottom - a.1)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let u = q / p;
            if p < 0.0 {
                t0 = t0.max(u);
            } else {
                t1 = t1.min(u);
            }
        }
    }
    (t0 <= t1).then_some(((a.0 + t0 * dx, a.1 + t0 * dy), (a.0 + t1 * dx, a.1 + t1 * dy)))
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn truncate(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let head: String = label.chars().take(max - 2).collect();
        format!("{head}..")
    }
}
