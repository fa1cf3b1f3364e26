//! The district's grids, found by id and by position without walking every grid — on the
//! server and on the phone alike.
//!
//! Every pushed case asks "which grid is this position in?" and "which community and street is
//! this grid in?". A district has thousands of grids; a walk over all of them per case made the
//! server's cost per case grow with the district (ADR 13). The positions go into an R-tree of
//! the grids' bounding boxes (`rstar`), the ids into a map, once per catalog version.
//!
//! On the phone the capture screen asks the same question with a fix's accuracy: inside one
//! grid, that grid; on a boundary or in a gap between grids, the nearest within the accuracy;
//! otherwise the person chooses among the nearest few (`Places::locate`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, Grid};
use crate::ids::GridId;
use rstar::{RTree, RTreeObject, AABB};

/// How far around a fix grids are offered to choose from when none is within its accuracy.
pub const CHOICE_RADIUS_M: f64 = 1_000.0;
/// How many grids are offered to choose from, nearest first.
pub const MAX_CHOICES: usize = 5;

/// Where a fix falls among the grids.
#[derive(Debug, Clone, PartialEq)]
pub enum GridMatch {
    /// Inside this grid's boundary, and no other's.
    Inside(GridId),
    /// Inside no boundary (or a grid it is in overlaps another), and this is the nearest grid
    /// within the fix's accuracy: a worker standing on a boundary, or a fix a few metres off.
    Nearest { grid: GridId, distance_m: f64 },
    /// No grid can be chosen for the person: these are the nearest within
    /// [`CHOICE_RADIUS_M`] (or the accuracy, when larger), nearest first; empty when none is.
    Choose(Vec<(GridId, f64)>),
}

/// A grid's bounding box in the tree, with its position in the catalog.
struct Bounds {
    index: usize,
    envelope: AABB<[f64; 2]>,
}

impl RTreeObject for Bounds {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// A catalog with its lookups, built once per catalog version.
pub struct Places {
    catalog: Arc<Catalog>,
    by_id: HashMap<String, usize>,
    tree: RTree<Bounds>,
}

impl std::fmt::Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places").field("version", &self.catalog.version).field("grids", &self.by_id.len()).finish()
    }
}

impl Places {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        let mut by_id = HashMap::with_capacity(catalog.grids.len());
        let mut boxes = Vec::with_capacity(catalog.grids.len());
        for (index, g) in catalog.grids.iter().enumerate() {
            // The first grid of an id wins, as a walk in catalog order would find it.
            by_id.entry(g.id.0.clone()).or_insert(index);
            let ring = &g.boundary.ring;
            if ring.len() < 3 {
                continue;
            }
            let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
            for &(lat, lon) in ring {
                lo = [lo[0].min(lat), lo[1].min(lon)];
                hi = [hi[0].max(lat), hi[1].max(lon)];
            }
            boxes.push(Bounds { index, envelope: AABB::from_corners(lo, hi) });
        }
        Places { catalog, by_id, tree: RTree::bulk_load(boxes) }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The grid with this id.
    pub fn grid(&self, id: &str) -> Option<&Grid> {
        self.by_id.get(id).and_then(|i| self.catalog.grids.get(*i))
    }

    /// Where a fix with this accuracy (metres) falls: see [`GridMatch`].
    pub fn locate(&self, lat: f64, lon: f64, accuracy_m: f64) -> GridMatch {
        let accuracy = if accuracy_m.is_finite() { accuracy_m.max(0.0) } else { 0.0 };
        let radius = accuracy.max(CHOICE_RADIUS_M);
        // Degrees of latitude and longitude that `radius` metres span here, for the box query.
        let dlat = radius / 110_574.0;
        let dlon = radius / (111_320.0 * lat.to_radians().cos().max(0.01));
        let search = AABB::from_corners([lat - dlat, lon - dlon], [lat + dlat, lon + dlon]);
        let mut near: Vec<(usize, f64)> = self
            .tree
            .locate_in_envelope_intersecting(&search)
            .filter_map(|b| {
                let g = self.catalog.grids.get(b.index)?;
                let d =
                    if g.boundary.contains(lat, lon) { 0.0 } else { boundary_distance_m(&g.boundary.ring, lat, lon) };
                (d <= radius).then_some((b.index, d))
            })
            .collect();
        near.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let id = |i: usize| self.catalog.grids[i].id.clone();
        let inside = near.iter().take_while(|(_, d)| *d == 0.0).count();
        match (inside, near.first()) {
            (1, Some(&(i, _))) => GridMatch::Inside(id(i)),
            // Inside none: the nearest within the accuracy, unless another is as near.
            (0, Some(&(i, d))) if d <= accuracy && near.get(1).is_none_or(|n| n.1 > d) => {
                GridMatch::Nearest { grid: id(i), distance_m: d }
            }
            _ => GridMatch::Choose(near.iter().take(MAX_CHOICES).map(|&(i, d)| (id(i), d)).collect()),
        }
    }

    /// The grid a position lies in; where grids overlap, the first in catalog order.
    pub fn grid_at(&self, lat: f64, lon: f64) -> Option<&Grid> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_point([lat, lon]))
            .map(|b| b.index)
            .filter(|i| self.catalog.grids.get(*i).is_some_and(|g| g.boundary.contains(lat, lon)))
            .min()
            .and_then(|i| self.catalog.grids.get(i))
    }
}

/// Metres from a position to the nearest edge of a ring, on a plane tangent at the position
/// (grids are a few hundred metres across: the flattening is far inside GPS accuracy).
fn boundary_distance_m(ring: &[(f64, f64)], lat: f64, lon: f64) -> f64 {
    let kx = 111_320.0 * lat.to_radians().cos();
    let ky = 110_574.0;
    let at = |p: (f64, f64)| ((p.1 - lon) * kx, (p.0 - lat) * ky);
    let mut best = f64::INFINITY;
    for (i, &a) in ring.iter().enumerate() {
        let b = ring[(i + 1) % ring.len()];
        let ((ax, ay), (bx, by)) = (at(a), at(b));
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        // The point of the segment nearest the position (the origin).
        let t = if len2 == 0.0 { 0.0 } else { (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0) };
        let (px, py) = (ax + t * dx, ay + t * dy);
        best = best.min((px * px + py * py).sqrt());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Grid;
    use crate::geo::Polygon;

    fn square(id: &str, lat: f64, lon: f64, size: f64) -> Grid {
        Grid {
            id: GridId(id.into()),
            name: id.into(),
            community: format!("c-{id}"),
            street: "s".into(),
            boundary: Polygon {
                ring: vec![(lat, lon), (lat + size, lon), (lat + size, lon + size), (lat, lon + size)],
            },
            points: vec![],
        }
    }

    #[test]
    fn finds_the_same_grid_as_a_walk_in_catalog_order() {
        // A 40 x 40 district of 0.005° grids, one big grid overlapping many of them, and a
        // degenerate one; positions on, between and outside the grids.
        let mut grids = vec![];
        for r in 0..40 {
            for c in 0..40 {
                grids.push(square(&format!("g{r}-{c}"), 31.0 + r as f64 * 0.005, 121.0 + c as f64 * 0.005, 0.005));
            }
        }
        grids.insert(700, square("big", 31.02, 121.02, 0.05));
        grids.push(Grid { boundary: Polygon { ring: vec![(31.0, 121.0)] }, ..square("line", 0.0, 0.0, 1.0) });
        let catalog = Arc::new(Catalog { version: 1, grids, categories: vec![], departments: vec![] });
        let places = Places::new(Arc::clone(&catalog));
        let mut found = 0;
        for i in 0..3000 {
            let lat = 30.99 + (i as f64 * 0.000_731) % 0.23;
            let lon = 120.99 + (i as f64 * 0.000_377) % 0.23;
            let walked = catalog.grids.iter().find(|g| g.boundary.contains(lat, lon)).map(|g| &g.id);
            assert_eq!(places.grid_at(lat, lon).map(|g| &g.id), walked, "at {lat},{lon}");
            found += usize::from(walked.is_some());
        }
        assert!(found > 1000 && found < 3000, "the positions should fall both inside and outside: {found}");
        assert_eq!(places.grid("g3-4").map(|g| g.community.as_str()), Some("c-g3-4"));
        assert_eq!(places.grid("nowhere").map(|g| &g.id), None);
    }

    #[test]
    fn a_fix_is_placed_in_its_grid_on_a_boundary_by_accuracy_and_otherwise_offered() {
        // Two 0.005° (about 480 m × 550 m) grids side by side, east of a gap of about 190 m to a third.
        let grids = vec![
            square("west", 31.0, 121.0, 0.005),
            square("east", 31.0, 121.005, 0.005),
            square("far", 31.0, 121.012, 0.005),
        ];
        let places = Places::new(Arc::new(Catalog { version: 1, grids, categories: vec![], departments: vec![] }));
        let gid = |s: &str| GridId(s.into());
        assert_eq!(places.locate(31.0025, 121.0025, 10.0), GridMatch::Inside(gid("west")));
        // In the gap between "east" and "far", 30 m from "east": the nearest within 50 m.
        let lon = 121.010 + 30.0 / (111_320.0 * 31.0025f64.to_radians().cos());
        match places.locate(31.0025, lon, 50.0) {
            GridMatch::Nearest { grid, distance_m } => {
                assert_eq!(grid, gid("east"));
                assert!((distance_m - 30.0).abs() < 1.0, "{distance_m}");
            }
            other => panic!("expected the nearest grid, got {other:?}"),
        }
        // The same place with a 10 m fix: not within its accuracy, so every grid within a
        // kilometre is offered, nearest first ("far" about 160 m off, "west" about 510 m).
        match places.locate(31.0025, lon, 10.0) {
            GridMatch::Choose(c) => {
                assert_eq!(c.iter().map(|(g, _)| g.0.as_str()).collect::<Vec<_>>(), ["east", "far", "west"])
            }
            other => panic!("expected a choice, got {other:?}"),
        }
        // Far from everything: nothing to offer.
        assert_eq!(places.locate(31.5, 121.5, 20.0), GridMatch::Choose(vec![]));
        // Where two grids overlap, the person chooses.
        let overlapping = vec![square("a", 31.0, 121.0, 0.005), square("b", 31.002, 121.002, 0.005)];
        let places =
            Places::new(Arc::new(Catalog { version: 1, grids: overlapping, categories: vec![], departments: vec![] }));
        assert!(matches!(places.locate(31.003, 121.003, 5.0), GridMatch::Choose(c) if c.len() == 2));
    }
}
