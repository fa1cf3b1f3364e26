//! The district's grids, found by id and by position without walking every grid.
//!
//! Every pushed case asks "which grid is this position in?" and "which community and street is
//! this grid in?". A district has thousands of grids; a walk over all of them per case made the
//! server's cost per case grow with the district (ADR 13). The positions go into an R-tree of
//! the grids' bounding boxes (`rstar`, already in the build through `geo`), the ids into a map.

use std::collections::HashMap;
use std::sync::Arc;

use gridwork_model::catalog::{Catalog, Grid};
use rstar::{RTree, RTreeObject, AABB};

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

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_model::catalog::Grid;
    use gridwork_model::geo::Polygon;
    use gridwork_model::ids::GridId;

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
}
