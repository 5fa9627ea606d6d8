//! Pixel drawing on an RGB image: rectangles, thick lines, markers and bitmap text.

use super::font::{glyph, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
use image::{Rgb, RgbImage};

pub struct Canvas {
    pub image: RgbImage,
    /// Drawing outside this rectangle (x0, y0, x1, y1; inclusive) is discarded.
    clip: (i64, i64, i64, i64),
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb<u8>) -> Canvas {
        let image = RgbImage::from_pixel(width, height, background);
        Canvas { image, clip: (0, 0, width as i64 - 1, height as i64 - 1) }
    }

    /// Restricts drawing to a rectangle (inclusive corners); `None` restores the whole image.
    pub fn set_clip(&mut self, rect: Option<(i64, i64, i64, i64)>) {
        let full = (0, 0, self.image.width() as i64 - 1, self.image.height() as i64 - 1);
        self.clip = rect.unwrap_or(full);
    }

    pub fn put(&mut self, x: i64, y: i64, colour: Rgb<u8>) {
        let (x0, y0, x1, y1) = self.clip;
        if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
            self.image.put_pixel(x as u32, y as u32, colour);
        }
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, colour: Rgb<u8>) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, colour);
            }
        }
    }

    pub fn hline(&mut self, x0: i64, x1: i64, y: i64, colour: Rgb<u8>) {
        for x in x0.min(x1)..=x0.max(x1) {
            self.put(x, y, colour);
        }
    }

    pub fn vline(&mut self, x: i64, y0: i64, y1: i64, colour: Rgb<u8>) {
        for y in y0.min(y1)..=y0.max(y1) {
            self.put(x, y, colour);
        }
    }

    /// A line `thickness` pixels wide (Bresenham with a square brush). Solid colours
    /// only, no anti-aliasing, so every series pixel has exactly its series colour.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), thickness: i64, colour: Rgb<u8>) {
        let (mut x0, mut y0) = (from.0.round() as i64, from.1.round() as i64);
        let (x1, y1) = (to.0.round() as i64, to.1.round() as i64);
        let dx = (x1 - x0).abs();
        let dy = -(y1 - y0).abs();
        let sx = if x0 < x1 { 1 } else { -1 };
        let sy = if y0 < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        let half = thickness / 2;
        loop {
            self.fill_rect(x0 - half, y0 - half, thickness, thickness, colour);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// A filled disc of radius `r` centred on `at`.
    pub fn disc(&mut self, at: (f64, f64), r: i64, colour: Rgb<u8>) {
        let (cx, cy) = (at.0.round() as i64, at.1.round() as i64);
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r + r {
                    self.put(cx + dx, cy + dy, colour);
                }
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
    /// Characters outside the font are drawn as `?` so missing text is visible, not dropped.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
        let s = scale as i64;
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c).or_else(|| glyph('?')).unwrap_or([0; 7]);
            let gx = x + i as i64 * ADVANCE as i64 * s;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        self.fill_rect(gx + col as i64 * s, y + r as i64 * s, s, s, colour);
                    }
                }
            }
        }
    }

    /// Draws `text` rotated a quarter turn anticlockwise (reading bottom to top), with
    /// the bottom-left of its first character at (x, y_bottom).
    pub fn text_vertical(&mut self, x: i64, y_bottom: i64, text: &str, scale: u32, colour: Rgb<u8>) {
        let s = scale as i64;
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c).or_else(|| glyph('?')).unwrap_or([0; 7]);
            let base = y_bottom - i as i64 * ADVANCE as i64 * s;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)) != 0 {
                        // Glyph column becomes height (upwards), glyph row becomes x.
                        self.fill_rect(x + r as i64 * s, base - (col as i64 + 1) * s, s, s, colour);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale
    }
}

pub fn text_height(scale: u32) -> u32 {
    GLYPH_HEIGHT * scale
}
