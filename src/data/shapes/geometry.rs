//! Plane geometry for the checker: convex hull area of pixel sets.

/// Area and perimeter of a convex polygon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hull {
    pub area: f64,
    pub perimeter: f64,
}

impl Hull {
    /// How many lattice points a convex shape with this hull holds, by
    /// Pick's theorem (area + boundary / 2 + 1), taking the perimeter as
    /// the boundary count: exact for axis-aligned rectangles, close for
    /// other convex pixel sets.
    pub fn lattice_points(&self) -> f64 {
        self.area + self.perimeter / 2.0 + 1.0
    }
}

/// The convex hull of `points` (monotone chain, then the shoelace formula).
/// Collinear or single points give a degenerate hull of area 0.
pub fn convex_hull(points: &mut [(i64, i64)]) -> Hull {
    points.sort_unstable();
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let ordered: Box<dyn Iterator<Item = &(i64, i64)>> =
            if pass == 0 { Box::new(points.iter()) } else { Box::new(points.iter().rev()) };
        for &p in ordered {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each half is the first of the other.
        hull.pop();
    }
    let edges = || (0..hull.len()).map(|i| (hull[i], hull[(i + 1) % hull.len()]));
    let twice: i64 = edges().map(|(a, b)| a.0 * b.1 - b.0 * a.1).sum();
    let perimeter = edges().map(|(a, b)| (((a.0 - b.0).pow(2) + (a.1 - b.1).pow(2)) as f64).sqrt()).sum();
    Hull { area: twice.abs() as f64 / 2.0, perimeter }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_square_with_interior_points() {
        let mut points = vec![(0, 0), (4, 0), (4, 4), (0, 4), (2, 2), (1, 3), (4, 2)];
        let hull = convex_hull(&mut points);
        assert_eq!((hull.area, hull.perimeter), (16.0, 16.0));
        // A 5x5 block of pixel centres.
        assert_eq!(hull.lattice_points(), 25.0);
    }

    #[test]
    fn hull_of_triangle_and_degenerate_sets() {
        let hull = convex_hull(&mut [(0, 0), (6, 0), (0, 8), (1, 1)]);
        assert_eq!((hull.area, hull.perimeter), (24.0, 24.0));
        // Degenerate hulls: the segment is walked out and back.
        assert_eq!(convex_hull(&mut [(0, 0), (3, 4), (6, 8)]).area, 0.0);
        assert_eq!(convex_hull(&mut [(0, 0), (3, 4), (6, 8)]).perimeter, 20.0);
        assert_eq!(convex_hull(&mut [(3, 3)]), Hull { area: 0.0, perimeter: 0.0 });
    }
}
