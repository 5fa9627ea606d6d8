//! A scene: a background and one or two non-overlapping objects, each kept
//! inside its own cell of the 3x3 grid; its caption and its rendering.

use super::vocab::{Background, Color, Kind, Position, Size};
use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;

/// One object of a scene. `center` and `extent` place it in image-side
/// fractions, so one scene renders the same at any resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeObject {
    pub kind: Kind,
    pub color: Color,
    pub size: Size,
    pub position: Position,
    /// Centre of the bounding box, (x, y) in [0, 1], y pointing down.
    pub center: (f64, f64),
    /// Width of the bounding box as a fraction of the image side.
    pub extent: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub background: Background,
    pub objects: Vec<ShapeObject>,
}

/// Gap kept between an object's bounding box and the border of its cell.
const CELL_MARGIN: f64 = 0.01;

/// Samples per pixel along each axis when rendering (anti-aliasing).
const SUPERSAMPLE: u32 = 4;

/// Inner to outer radius of the star's points; fatter than a regular
/// pentagram (0.38) so that small stars keep their arms through JPEG.
pub(crate) const STAR_INNER_RATIO: f64 = 0.42;

impl ShapeObject {
    /// A random object in `position`: kind, colour, size, then a jittered
    /// extent and a centre that keeps the bounding box inside the cell.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, position: Position) -> ShapeObject {
        let kind = *Kind::ALL.choose(rng).unwrap_or(&Kind::Circle);
        let color = *Color::ALL.choose(rng).unwrap_or(&Color::Red);
        let size = *Size::ALL.choose(rng).unwrap_or(&Size::Small);
        let extent = size.extent() * rng.gen_range(1.0 - Size::JITTER..=1.0 + Size::JITTER);
        let (column, row) = position.cell();
        let half = extent / 2.0;
        let mut coordinate = |cell: u32| {
            let lo = cell as f64 / 3.0 + CELL_MARGIN + half;
            let hi = (cell + 1) as f64 / 3.0 - CELL_MARGIN - half;
            if hi > lo {
                rng.gen_range(lo..=hi)
            } else {
                (lo + hi) / 2.0
            }
        };
        let center = (coordinate(column), coordinate(row));
        ShapeObject { kind, color, size, position, center, extent }
    }

    /// "a small red circle at the top left"
    pub fn phrase(&self) -> String {
        format!("a {} {} {} {}", self.size, self.color, self.kind, self.position.phrase())
    }

    /// Whether the point (x, y), in image-side fractions, lies inside.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let half = self.extent / 2.0;
        // Local coordinates: the bounding box width spans [-1, 1].
        let (u, v) = ((x - self.center.0) / half, (y - self.center.1) / half);
        match self.kind {
            Kind::Circle => u * u + v * v <= 1.0,
            Kind::Square => u.abs() <= 1.0 && v.abs() <= 1.0,
            Kind::Triangle => {
                // Equilateral, apex up, base 2 wide, height sqrt(3), centred.
                let h = 3f64.sqrt();
                let from_apex = v + h / 2.0;
                (0.0..=h).contains(&from_apex) && u.abs() <= from_apex / h
            }
            Kind::Star => inside_polygon(&star_outline(), u, v),
        }
    }

    /// Half the height of the bounding box, in the same units as `extent`.
    fn half_height(&self) -> f64 {
        let ratio = match self.kind {
            Kind::Circle | Kind::Square => 1.0,
            Kind::Triangle => 3f64.sqrt() / 2.0,
            Kind::Star => star_height_ratio(),
        };
        self.extent / 2.0 * ratio
    }
}

impl Kind {
    /// Area of the shape over the square of its bounding-box width.
    pub fn box_fraction(self) -> f64 {
        match self {
            Kind::Circle => std::f64::consts::PI / 4.0,
            Kind::Square => 1.0,
            Kind::Triangle => 3f64.sqrt() / 4.0,
            // Ten triangles between the centre, an outer and an inner point,
            // for a box 2 wide (so divide by 4).
            Kind::Star => {
                let outer = star_outer_radius();
                10.0 * 0.5 * outer * outer * STAR_INNER_RATIO * 36f64.to_radians().sin() / 4.0
            }
        }
    }
}

/// Outer radius of a star whose bounding box is 2 wide.
fn star_outer_radius() -> f64 {
    1.0 / 72f64.to_radians().sin()
}

/// Height over width of the star's bounding box.
fn star_height_ratio() -> f64 {
    star_outer_radius() * (1.0 + 36f64.to_radians().cos()) / 2.0
}

/// The star's ten vertices in local coordinates, bounding box centred on 0.
fn star_outline() -> [(f64, f64); 10] {
    let outer = star_outer_radius();
    let inner = outer * STAR_INNER_RATIO;
    // Shift so that the bounding box (top point to lower points) is centred.
    let shift = outer * (1.0 - 36f64.to_radians().cos()) / 2.0;
    let mut points = [(0.0, 0.0); 10];
    for (i, p) in points.iter_mut().enumerate() {
        let angle = (i as f64 * 36.0 - 90.0).to_radians();
        let r = if i % 2 == 0 { outer } else { inner };
        *p = (r * angle.cos(), r * angle.sin() + shift);
    }
    points
}

/// Even-odd rule point-in-polygon test.
fn inside_polygon(polygon: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = polygon.len() - 1;
    for i in 0..polygon.len() {
        let ((xi, yi), (xj, yj)) = (polygon[i], polygon[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

impl Scene {
    /// A random scene: background, one or two objects in distinct cells.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Scene {
        let background = *Background::ALL.choose(rng).unwrap_or(&Background::White);
        let count = rng.gen_range(1..=2);
        let objects = Position::ALL.choose_multiple(rng, count).map(|p| ShapeObject::random(rng, *p)).collect();
        Scene { background, objects }
    }

    /// The ground-truth caption: every object's phrase, joined by "and".
    pub fn caption(&self) -> String {
        self.objects.iter().map(ShapeObject::phrase).collect::<Vec<_>>().join(" and ")
    }

    /// Renders at `size x size` pixels, anti-aliased by supersampling.
    pub fn render(&self, size: u32) -> RgbImage {
        let side = size as f64;
        let background = self.background.rgb();
        let mut image = RgbImage::from_pixel(size, size, Rgb(background));
        for object in &self.objects {
            // Only pixels under the object's bounding box can change.
            let (hw, hh) = (object.extent / 2.0, object.half_height());
            let range = |c: f64, h: f64| {
                let lo = ((c - h) * side).floor().max(0.0) as u32;
                let hi = (((c + h) * side).ceil() as u32).min(size);
                lo..hi
            };
            let color = object.color.rgb();
            for py in range(object.center.1, hh) {
                for px in range(object.center.0, hw) {
                    let mut covered = 0u32;
                    for sy in 0..SUPERSAMPLE {
                        for sx in 0..SUPERSAMPLE {
                            let x = (px as f64 + (sx as f64 + 0.5) / SUPERSAMPLE as f64) / side;
                            let y = (py as f64 + (sy as f64 + 0.5) / SUPERSAMPLE as f64) / side;
                            covered += object.contains(x, y) as u32;
                        }
                    }
                    if covered > 0 {
                        let t = covered as f64 / (SUPERSAMPLE * SUPERSAMPLE) as f64;
                        let pixel = image.get_pixel_mut(px, py);
                        for c in 0..3 {
                            pixel.0[c] = (pixel.0[c] as f64 * (1.0 - t) + color[c] as f64 * t).round() as u8;
                        }
                    }
                }
            }
        }
        image
    }
}
