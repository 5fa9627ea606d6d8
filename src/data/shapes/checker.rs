//! Checks an image against a caption: finds the background, segments the
//! pixels of each object colour into connected components, measures each
//! component (shape, size, grid cell) and matches them to the caption.
//!
//! Everything is measured relative to the image size, so one rule set works
//! at 64 and 256 px. A pixel is classified by how far it lies along the line
//! from the background to each object colour: the blended edges of resized
//! or anti-aliased images count for the colour they mostly are, and JPEG
//! noise off those lines is tolerated up to a bound.

use super::caption::{parse_caption, ShapeSpec};
use super::geometry::convex_hull;
use super::vocab::{Background, Color, Kind, Position, Size};
use crate::error::Result;
use image::RgbImage;

/// Largest RGB distance between a pixel and the line from the background
/// to an object colour at which the pixel still counts as that colour.
const COLOR_TOLERANCE: f64 = 60.0;

/// Components smaller than this fraction of the image are noise. The
/// smallest object the generator draws (a small star) covers about 0.011.
const MIN_AREA_FRACTION: f64 = 0.0025;

/// A component whose pixels mostly touch a larger component of another
/// colour is the blended rim of that object, not an object of its own.
const RIM_TOUCH_FRACTION: f64 = 0.3;

/// Shape rules, from the generator's shapes at 64 and 256 px, as PNG, as
/// JPEG (quality 75) and resized; the ranges in parentheses were measured
/// over 300 scenes of each. A star is the only shape far from convex (solidity
/// 0.55-0.75, one small JPEG star 0.84; the others 0.83-1). Of the convex
/// ones a triangle holds far fewer pixels in its top quarter than in its
/// bottom one (ratio 0.13-0.52; circles 0.63 and up, squares 0.72 and up),
/// and a square covers the corners of its box (0.5-1) which a circle
/// leaves empty (0-0.17).
const STAR_MAX_SOLIDITY: f64 = 0.80;
const TRIANGLE_MAX_TOP_BOTTOM: f64 = 0.58;
const SQUARE_MIN_CORNER_FILL: f64 = 0.33;

/// An object found in an image, with the measurements that classified it.
#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    pub kind: Kind,
    pub color: Color,
    pub size: Size,
    pub position: Position,
    /// Pixels in the component.
    pub area: usize,
    /// Centroid (x, y) as fractions of the image width and height.
    pub centroid: (f64, f64),
    /// Width and height of the bounding box, in pixels.
    pub bbox: (u32, u32),
    /// Area over bounding-box area.
    pub fill: f64,
    /// Pixels over the pixels the convex hull would hold (1 when convex).
    pub solidity: f64,
    /// Pixels in the top quarter of the bounding box over those in the
    /// bottom quarter: about 1 for shapes symmetric top to bottom.
    pub top_bottom: f64,
    /// Share of the bounding box's four corner triangles that is covered.
    pub corner_fill: f64,
}

impl Detected {
    pub fn matches(&self, spec: &ShapeSpec) -> bool {
        spec.kind == self.kind
            && spec.color.is_none_or(|c| c == self.color)
            && spec.size.is_none_or(|s| s == self.size)
            && spec.position.is_none_or(|p| p == self.position)
    }
}

impl std::fmt::Display for Detected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {} {} {} {} ({} px, fill {:.2}, solidity {:.2}, box {}x{})",
            self.size,
            self.color,
            self.kind,
            self.position.phrase(),
            self.area,
            self.fill,
            self.solidity,
            self.bbox.0,
            self.bbox.1
        )
    }
}

/// What the detector sees in an image.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub background: Background,
    pub objects: Vec<Detected>,
    /// Components dropped as noise or rims (counted, not silently lost).
    pub ignored_components: usize,
}

/// The verdict on an image and a caption.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// Every spec matched a distinct object and no object was left over.
    pub holds: bool,
    pub background: Background,
    /// Every object detected, in reading order (top to bottom, left to right).
    pub found: Vec<Detected>,
    /// Specs of the caption that no detected object satisfies.
    pub missing: Vec<ShapeSpec>,
    /// Detected objects the caption does not mention.
    pub unexpected: Vec<Detected>,
    /// A readable account of the above.
    pub details: String,
}

/// Parses `caption` and checks it against `image`. Errors only when the
/// caption cannot be parsed.
pub fn check(image: &RgbImage, caption: &str) -> Result<CheckReport> {
    Ok(check_specs(image, &parse_caption(caption)?))
}

/// Checks already parsed specs against `image`. Captions describe whole
/// scenes, so an object the specs do not mention makes the check fail.
pub fn check_specs(image: &RgbImage, specs: &[ShapeSpec]) -> CheckReport {
    let detection = detect(image);
    let assignment = match_specs(specs, &detection.objects);
    let missing: Vec<ShapeSpec> =
        specs.iter().zip(&assignment).filter(|(_, a)| a.is_none()).map(|(s, _)| s.clone()).collect();
    let used: Vec<usize> = assignment.iter().flatten().copied().collect();
    let unexpected: Vec<Detected> =
        detection.objects.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, d)| d.clone()).collect();
    let holds = missing.is_empty() && unexpected.is_empty();

    let mut details = format!(
        "{}: {} background, {} object(s) found",
        if holds { "caption holds" } else { "caption does not hold" },
        detection.background,
        detection.objects.len()
    );
    for d in &detection.objects {
        details.push_str(&format!("\n  found {d}"));
    }
    for s in &missing {
        details.push_str(&format!("\n  missing {s}"));
    }
    for d in &unexpected {
        details.push_str(&format!("\n  not in caption: a {} {} {} {}", d.size, d.color, d.kind, d.position.phrase()));
    }
    if detection.ignored_components > 0 {
        details.push_str(&format!("\n  ignored {} small or rim component(s)", detection.ignored_components));
    }
    CheckReport { holds, background: detection.background, found: detection.objects, missing, unexpected, details }
}

/// For each spec, the index of the object it is matched to, maximising the
/// number of matched specs (augmenting paths; captions are short).
fn match_specs(specs: &[ShapeSpec], objects: &[Detected]) -> Vec<Option<usize>> {
    fn augment(spec: usize, specs: &[ShapeSpec], objects: &[Detected], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
        for (o, object) in objects.iter().enumerate() {
            if seen[o] || !object.matches(&specs[spec]) {
                continue;
            }
            seen[o] = true;
            if owner[o].is_none_or(|other| augment(other, specs, objects, owner, seen)) {
                owner[o] = Some(spec);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; objects.len()];
    for spec in 0..specs.len() {
        augment(spec, specs, objects, &mut owner, &mut vec![false; objects.len()]);
    }
    let mut assignment = vec![None; specs.len()];
    for (o, s) in owner.iter().enumerate() {
        if let Some(s) = s {
            assignment[*s] = Some(o);
        }
    }
    assignment
}

fn distance(a: [u8; 3], b: [u8; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y as f64).powi(2)).sum::<f64>().sqrt()
}

/// The background colour nearest to the per-channel median of the border.
fn detect_background(image: &RgbImage) -> Background {
    let (w, h) = image.dimensions();
    let mut channels: [Vec<u8>; 3] = Default::default();
    for (x, y, p) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            for c in 0..3 {
                channels[c].push(p.0[c]);
            }
        }
    }
    let median = channels.map(|mut v| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    });
    let nearest = Background::ALL.iter().min_by(|a, b| distance(a.rgb(), median).total_cmp(&distance(b.rgb(), median)));
    nearest.copied().unwrap_or(Background::White)
}

/// The object colour of a pixel, if it lies near the line from the
/// background to that colour and at least halfway along it. Edges blended
/// by anti-aliasing, resizing or JPEG lie on such lines, so this keeps the
/// pixels that are mostly object and drops the rest: the mask keeps the
/// object's true area instead of eroding it.
fn classify_pixel(pixel: [u8; 3], background: [u8; 3]) -> Option<Color> {
    let p = pixel.map(f64::from);
    let b = background.map(f64::from);
    let (color, along, off) = Color::ALL
        .iter()
        .map(|c| {
            let d = c.rgb().map(f64::from);
            let dir = [d[0] - b[0], d[1] - b[1], d[2] - b[2]];
            let len2 = dir.iter().map(|v| v * v).sum::<f64>();
            let t = (0..3).map(|i| (p[i] - b[i]) * dir[i]).sum::<f64>() / len2;
            let tc = t.clamp(0.0, 1.0);
            let off = (0..3).map(|i| (p[i] - b[i] - tc * dir[i]).powi(2)).sum::<f64>().sqrt();
            (*c, t, off)
        })
        .min_by(|a, b| a.2.total_cmp(&b.2))?;
    (along >= 0.5 && off <= COLOR_TOLERANCE).then_some(color)
}

struct Component {
    color: Color,
    pixels: Vec<(u32, u32)>,
}

/// Finds the background and the objects in `image`.
pub fn detect(image: &RgbImage) -> Detection {
    let (w, h) = image.dimensions();
    let background = detect_background(image);
    let labels: Vec<Option<Color>> = image.pixels().map(|p| classify_pixel(p.0, background.rgb())).collect();
    let (components, component_of) = connected_components(&labels, w, h);

    let size = (w as f64, h as f64);
    let min_area = (MIN_AREA_FRACTION * (w as f64) * (h as f64)).max(1.0) as usize;
    let rims = rim_components(&components, &component_of, w, h);
    let mut objects = Vec::new();
    let mut ignored = 0;
    for (i, component) in components.iter().enumerate() {
        if component.pixels.len() < min_area || rims[i] {
            ignored += 1;
            continue;
        }
        objects.push(measure(component, size));
    }
    objects.sort_by(|a, b| (a.position.cell().1, a.position.cell().0).cmp(&(b.position.cell().1, b.position.cell().0)));
    Detection { background, objects, ignored_components: ignored }
}

/// 8-connected components of equal labels; also returns each pixel's component.
fn connected_components(labels: &[Option<Color>], w: u32, h: u32) -> (Vec<Component>, Vec<Option<usize>>) {
    let mut component_of: Vec<Option<usize>> = vec![None; labels.len()];
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for start in 0..labels.len() {
        let Some(color) = labels[start] else { continue };
        if component_of[start].is_some() {
            continue;
        }
        let id = components.len();
        let mut pixels = Vec::new();
        component_of[start] = Some(id);
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i as u32) % w, (i as u32) / w);
            pixels.push((x, y));
            for (nx, ny) in neighbours(x, y, w, h) {
                let j = (ny * w + nx) as usize;
                if component_of[j].is_none() && labels[j] == Some(color) {
                    component_of[j] = Some(id);
                    stack.push(j);
                }
            }
        }
        components.push(Component { color, pixels });
    }
    (components, component_of)
}

fn neighbours(x: u32, y: u32, w: u32, h: u32) -> impl Iterator<Item = (u32, u32)> {
    (-1i64..=1).flat_map(move |dy| (-1i64..=1).map(move |dx| (dx, dy))).filter_map(move |(dx, dy)| {
        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
        ((dx, dy) != (0, 0) && nx >= 0 && ny >= 0 && nx < w as i64 && ny < h as i64).then_some((nx as u32, ny as u32))
    })
}

/// Marks components that are the blended rim of a larger neighbour.
fn rim_components(components: &[Component], component_of: &[Option<usize>], w: u32, h: u32) -> Vec<bool> {
    components
        .iter()
        .enumerate()
        .map(|(id, component)| {
            let touching = component
                .pixels
                .iter()
                .filter(|(x, y)| {
                    neighbours(*x, *y, w, h).any(|(nx, ny)| {
                        component_of[(ny * w + nx) as usize]
                            .is_some_and(|other| other != id && components[other].pixels.len() > component.pixels.len())
                    })
                })
                .count();
            touching as f64 > RIM_TOUCH_FRACTION * component.pixels.len() as f64
        })
        .collect()
}

/// Measures a component of an image of `size` (width, height) pixels.
fn measure(component: &Component, size: (f64, f64)) -> Detected {
    let area = component.pixels.len();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    let (mut sx, mut sy) = (0.0, 0.0);
    let mut centres = Vec::with_capacity(area);
    for &(x, y) in &component.pixels {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        centres.push((x as i64, y as i64));
    }
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let fill = area as f64 / (bw as f64 * bh as f64);
    // Against the pixels a convex shape with this hull would hold, so that
    // small, jagged but convex shapes still score about 1.
    let solidity = (area as f64 / convex_hull(&mut centres).lattice_points()).min(1.0);
    let (top_bottom, corner_fill) = box_profile(&component.pixels, (x0, y0), (bw, bh));

    let kind = if solidity < STAR_MAX_SOLIDITY {
        Kind::Star
    } else if top_bottom <= TRIANGLE_MAX_TOP_BOTTOM {
        Kind::Triangle
    } else if corner_fill >= SQUARE_MIN_CORNER_FILL {
        Kind::Square
    } else {
        Kind::Circle
    };
    let centroid = (sx / area as f64 / size.0, sy / area as f64 / size.1);
    // The side of the shape's box from its area: unlike the box measured on
    // the mask, it hardly changes when JPEG eats a star's thin points.
    let extent = (area as f64 / kind.box_fraction() / (size.0 * size.1)).sqrt();
    Detected {
        kind,
        color: component.color,
        size: Size::from_extent(extent),
        position: Position::at(centroid.0, centroid.1),
        area,
        centroid,
        bbox: (bw, bh),
        fill,
        solidity,
        top_bottom,
        corner_fill,
    }
}

/// How the pixels spread over their bounding box (origin and size given):
/// the top quarter's pixel count over the bottom quarter's, and the share
/// covered of the four corner triangles whose legs are a quarter of the
/// box's shorter side.
fn box_profile(pixels: &[(u32, u32)], origin: (u32, u32), size: (u32, u32)) -> (f64, f64) {
    let (bw, bh) = (size.0 as usize, size.1 as usize);
    let mut mask = vec![false; bw * bh];
    for &(x, y) in pixels {
        mask[(y - origin.1) as usize * bw + (x - origin.0) as usize] = true;
    }
    let (w, h) = (bw as f64, bh as f64);
    let quarter = (h / 4.0).max(1.0);
    let leg = (w.min(h) / 4.0).max(1.0);
    let (mut top, mut bottom, mut corner, mut corner_total) = (0usize, 0usize, 0usize, 0usize);
    for (i, inside) in mask.iter().enumerate() {
        // Pixel centre relative to the box.
        let (fx, fy) = ((i % bw) as f64 + 0.5, (i / bw) as f64 + 0.5);
        let inside = *inside as usize;
        if fy <= quarter {
            top += inside;
        }
        if h - fy <= quarter {
            bottom += inside;
        }
        if fx.min(w - fx) + fy.min(h - fy) <= leg {
            corner += inside;
            corner_total += 1;
        }
    }
    (top as f64 / bottom.max(1) as f64, corner as f64 / corner_total.max(1) as f64)
}
