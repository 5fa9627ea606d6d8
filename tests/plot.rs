//! The PNG plotter: decodable output, series drawn where their data is, log-axis
//! ticks at decades, and undrawable data counted or rejected.

use dalle_xla::plot::{series_colour, Plot, Rendered, FOREGROUND};
use image::{Rgb, RgbImage};

/// Pixels of exactly `colour` inside the given fraction of the plot area
/// (fractions measured from the area's left and top edges).
fn count_in(r: &Rendered, colour: Rgb<u8>, fx: (f64, f64), fy: (f64, f64)) -> usize {
    let a = r.area;
    let w = (a.right - a.left) as f64;
    let h = (a.bottom - a.top) as f64;
    let x0 = a.left + (fx.0 * w) as u32;
    let x1 = a.left + (fx.1 * w) as u32;
    let y0 = a.top + (fy.0 * h) as u32;
    let y1 = a.top + (fy.1 * h) as u32;
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            if *r.image.get_pixel(x, y) == colour {
                n += 1;
            }
        }
    }
    n
}

fn decode(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).expect("PNG decodes").to_rgb8()
}

#[test]
fn png_decodes_at_requested_size() {
    let plot = Plot::new("size check").x_label("step").y_label("loss").line("a", &[(0.0, 1.0), (1.0, 2.0)]);
    let r = plot.render(640, 360).unwrap();
    let img = decode(&r.png_bytes().unwrap());
    assert_eq!((img.width(), img.height()), (640, 360));
    assert_eq!(img, r.image, "the PNG holds exactly the rendered pixels");

    let path = std::env::temp_dir().join(format!("dalle_plot_test_{}.png", std::process::id()));
    plot.save_png(&path, 300, 200).unwrap();
    let from_file = decode(&std::fs::read(&path).unwrap());
    std::fs::remove_file(&path).ok();
    assert_eq!((from_file.width(), from_file.height()), (300, 200));
}

#[test]
fn rising_and_falling_lines_land_in_their_corners() {
    let rising: Vec<(f64, f64)> = (0..=20).map(|i| (i as f64, i as f64 * 0.5)).collect();
    let falling: Vec<(f64, f64)> = (0..=20).map(|i| (i as f64, 10.0 - i as f64 * 0.5)).collect();
    let r = Plot::new("two lines").line("rising", &rising).line("falling", &falling).render(800, 500).unwrap();
    let up = series_colour(0);
    let down = series_colour(1);
    assert_ne!(up, down, "series get distinct colours");

    let lower_left = ((0.0, 0.3), (0.7, 1.0));
    let upper_right = ((0.7, 1.0), (0.0, 0.3));
    let upper_left = ((0.0, 0.3), (0.0, 0.3));
    let lower_right = ((0.7, 1.0), (0.7, 1.0));
    for (name, colour, present, absent) in
        [("rising", up, [lower_left, upper_right], [upper_left, lower_right]), ("falling", down, [upper_left, lower_right], [lower_left, upper_right])]
    {
        for (fx, fy) in present {
            assert!(count_in(&r, colour, fx, fy) > 10, "{name} line should appear in x{fx:?} y{fy:?}");
        }
        for (fx, fy) in absent {
            assert_eq!(count_in(&r, colour, fx, fy), 0, "{name} line should not appear in x{fx:?} y{fy:?}");
        }
    }
    assert_eq!(r.skipped_points, 0);
}

#[test]
fn data_points_are_drawn_at_their_mapped_pixels() {
    let pts = [(2.0, 3.0), (7.5, -1.0), (4.0, 8.0)];
    let r = Plot::new("scatter").scatter("pts", &pts).render(600, 400).unwrap();
    let colour = series_colour(0);
    for (x, y) in pts {
        let (px, py) = r.pixel(x, y);
        assert!(px >= r.area.left as f64 && px <= r.area.right as f64, "x pixel {px} inside the area");
        assert!(py >= r.area.top as f64 && py <= r.area.bottom as f64, "y pixel {py} inside the area");
        assert_eq!(*r.image.get_pixel(px.round() as u32, py.round() as u32), colour, "marker at ({x}, {y})");
    }
    // The axes cover the data.
    assert!(r.x_axis.lo <= 2.0 && r.x_axis.hi >= 7.5);
    assert!(r.y_axis.lo <= -1.0 && r.y_axis.hi >= 8.0);
    // Larger y is higher up in the image.
    assert!(r.pixel(0.0, 8.0).1 < r.pixel(0.0, 3.0).1);
}

#[test]
fn log_x_ticks_sit_on_decades_evenly_spaced() {
    let pts = [(2e-5, 1.0), (3e-4, 0.5), (8e-3, 0.9)];
    let r = Plot::new("log axis").log_x(true).scatter("lr", &pts).render(800, 500).unwrap();
    let ticks = &r.x_axis.ticks;
    let values: Vec<f64> = ticks.iter().map(|t| t.value).collect();
    // Every decade inside the axis range, and nothing else.
    let expected: Vec<f64> =
        (-8..=2).map(|e| 10f64.powi(e)).filter(|d| *d >= r.x_axis.lo && *d <= r.x_axis.hi).collect();
    assert!(expected.len() >= 3, "the data spans more than two decades");
    assert_eq!(values.len(), expected.len(), "ticks {values:?}");
    for (v, e) in values.iter().zip(&expected) {
        assert!((v / e - 1.0).abs() < 1e-12, "tick {v} vs decade {e}");
    }
    // Equal spacing per decade, at the log-linear position inside the axis range.
    let a = r.area;
    let width = (a.right - a.left) as f64;
    let (lo, hi) = (r.x_axis.lo.log10(), r.x_axis.hi.log10());
    assert!(lo < (2e-5f64).log10() && hi > (8e-3f64).log10(), "the axis covers the data");
    let spacing: Vec<f64> = ticks.windows(2).map(|w| w[1].pixel - w[0].pixel).collect();
    for s in &spacing {
        assert!((s - spacing[0]).abs() < 1e-6 && *s > 0.0, "decades equally spaced: {spacing:?}");
    }
    for (i, t) in ticks.iter().enumerate() {
        let want = a.left as f64 + (t.value.log10() - lo) / (hi - lo) * width;
        assert!((t.pixel - want).abs() < 1e-6, "tick {i} at {} want {want}", t.pixel);
        let parsed: f64 = t.label.parse().unwrap_or_else(|_| panic!("label '{}' is a number", t.label));
        assert!((parsed / t.value - 1.0).abs() < 1e-9, "label '{}' for {}", t.label, t.value);
        // A tick mark is drawn just below the frame.
        assert_eq!(*r.image.get_pixel(t.pixel.round() as u32, a.bottom + 2), FOREGROUND, "tick mark {i}");
    }
    // 3e-4 sits at log10 fraction (log10(3e-4) + 5) / 3 of the width.
    // 3e-4 sits between the 1e-4 and 1e-3 ticks at log10(3) of the way.
    let (px, _) = r.pixel(3e-4, 0.5);
    let t4 = ticks.iter().find(|t| (t.value / 1e-4 - 1.0).abs() < 1e-9).expect("a 1e-4 tick");
    let want = t4.pixel + (3f64).log10() * spacing[0];
    assert!((px - want).abs() < 1e-6, "{px} vs {want}");
}

#[test]
fn narrow_log_range_gets_intermediate_ticks() {
    let r = Plot::new("one decade").log_x(true).line("a", &[(1.5e-3, 1.0), (6e-3, 2.0)]).render(600, 400).unwrap();
    let values: Vec<f64> = r.x_axis.ticks.iter().map(|t| t.value).collect();
    let expected = [2e-3, 5e-3];
    assert_eq!(values.len(), expected.len(), "{values:?}");
    for (v, e) in values.iter().zip(expected) {
        assert!((v / e - 1.0).abs() < 1e-12, "{values:?}");
    }
}

#[test]
fn undrawable_points_are_skipped_and_counted() {
    let r = Plot::new("gaps")
        .log_x(true)
        .line("a", &[(1e-3, 1.0), (f64::NAN, 2.0), (2e-3, f64::INFINITY), (-1.0, 3.0), (0.0, 1.0), (4e-3, 2.0)])
        .render(400, 300)
        .unwrap();
    assert_eq!(r.skipped_points, 4, "NaN, inf, negative and zero x on a log axis");
    assert!(r.x_axis.lo <= 1e-3 && r.x_axis.hi >= 4e-3);
}

#[test]
fn nothing_to_draw_is_an_error_naming_the_plot() {
    let err = Plot::new("empty plot").render(400, 300).err().expect("no series is an error").to_string();
    assert!(err.contains("empty plot") && err.contains("no data"), "{err}");

    let err = Plot::new("all nan").line("a", &[(f64::NAN, 1.0), (1.0, f64::NAN)]).render(400, 300).err().unwrap().to_string();
    assert!(err.contains("all nan") && err.contains("2 skipped"), "{err}");

    let err = Plot::new("tiny").line("a", &[(0.0, 1.0)]).render(50, 40).err().unwrap().to_string();
    assert!(err.contains("too small"), "{err}");
}

#[test]
fn legend_lists_series_and_counts_overflow() {
    // 40 series cannot all fit in a 300 px tall legend; the plot still renders.
    let mut plot = Plot::new("many");
    for i in 0..40 {
        plot = plot.line(format!("s{i}"), &[(0.0, i as f64), (1.0, i as f64 + 1.0)]);
    }
    let r = plot.render(800, 300).unwrap();
    assert_ne!(series_colour(12), series_colour(13));
    assert_ne!(series_colour(3), series_colour(13));
    // The first series' swatch is drawn to the right of the area.
    let right_of_area = (r.area.right + 1..r.image.width())
        .flat_map(|x| (r.area.top..r.area.bottom).map(move |y| (x, y)))
        .filter(|&(x, y)| *r.image.get_pixel(x, y) == series_colour(0))
        .count();
    assert!(right_of_area > 0, "legend swatch for the first series");
}

#[test]
fn fixed_y_range_cuts_off_scale_points_at_the_frame() {
    // One curve explodes to 1e6; with the y axis fixed to [0, 10] the other stays readable.
    let calm: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64, 2.0 + i as f64 * 0.5)).collect();
    let wild = [(0.0, 3.0), (1.0, 4.0), (2.0, 1e6)];
    let r = Plot::new("clipped").line("calm", &calm).line("wild", &wild).y_range(0.0, 10.0).render(600, 400).unwrap();
    assert_eq!((r.y_axis.lo, r.y_axis.hi), (0.0, 10.0));
    assert_eq!(r.clipped_points, 1);
    assert_eq!(r.skipped_points, 0);
    // The calm line spans the lower half diagonally, the wild one leaves through the top.
    assert!(count_in(&r, series_colour(0), (0.0, 0.2), (0.6, 0.85)) > 0);
    assert!(count_in(&r, series_colour(0), (0.8, 1.0), (0.15, 0.4)) > 0);
    let (wx, _) = r.pixel(1.5, 0.0);
    let top_band = ((wx - r.area.left as f64) / (r.area.right - r.area.left) as f64, 0.0);
    assert!(count_in(&r, series_colour(1), (top_band.0 - 0.1, top_band.0 + 0.1), (top_band.1, 0.05)) > 0, "the wild line reaches the top edge");
    // Nothing is drawn above the frame.
    let above = (0..r.area.top).flat_map(|y| (r.area.left..=r.area.right).map(move |x| (x, y)));
    assert!(above.into_iter().all(|(x, y)| *r.image.get_pixel(x, y) != series_colour(1)));

    let err = Plot::new("bad range").line("a", &[(1.0, 1.0)]).log_x(true).x_range(0.0, 1.0).render(400, 300).err().unwrap().to_string();
    assert!(err.contains("x range") && err.contains("positive"), "{err}");
}
