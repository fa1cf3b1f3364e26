//! Grids and patrol points from a district's GeoJSON file (`grids import FILE --datum …`).
//!
//! Polygon features are grids (properties `id`, `name`, `community`, `street`); Point features are
//! patrol points (`id`, `name`, and `grid`, or else the grid that contains them). Coordinates in
//! GCJ-02 — most Chinese base maps and district GIS exports — are converted to WGS-84, the only
//! datum Gridwork stores. The file is checked whole before anything is stored: one invalid or
//! self-intersecting polygon refuses the file, naming the feature, so a district never runs on
//! half a map. Overlapping grids are reported, not refused: real boundaries are drawn by hand and
//! a worker's scope is by grid id, not by geometry.

use std::collections::BTreeMap;

use geo::{BoundingRect, Relate, Validation};
use gridwork_model::catalog::{Catalog, Grid, PatrolPoint};
use gridwork_model::geo::{check_coordinates, gcj02_to_wgs84, Datum, Polygon};
use gridwork_model::ids::GridId;

/// Why a file was refused. Nothing was stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridFileError {
    #[error("not GeoJSON: {0}")]
    NotGeoJson(String),
    #[error("feature {feature}: {reason}")]
    Feature { feature: String, reason: String },
    #[error("the file has no Polygon features: nothing to import")]
    NoGrids,
}

/// What an import would store, and what it noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct GridFile {
    pub grids: Vec<Grid>,
    /// Pairs of grid ids whose areas overlap (sharing an edge is not overlapping).
    pub overlaps: Vec<(String, String)>,
}

/// How a feature is named in errors: its `id`, else its position in the file.
fn feature_name(index: usize, props: &serde_json::Map<String, serde_json::Value>) -> String {
    match props.get("id").and_then(|v| v.as_str()) {
        Some(id) => format!("#{index} ({id})"),
        None => format!("#{index}"),
    }
}

fn text(props: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    props.get(key).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A GeoJSON position `[lon, lat]` as WGS-84 `(lat, lon)`.
fn position(p: &[f64], datum: Datum, feature: &str) -> Result<(f64, f64), GridFileError> {
    let bad = |reason: String| GridFileError::Feature { feature: feature.to_owned(), reason };
    let (lon, lat) = match p {
        [lon, lat, ..] => (*lon, *lat),
        _ => return Err(bad("a position needs longitude and latitude".into())),
    };
    check_coordinates(lat, lon).map_err(|e| bad(e.to_string()))?;
    Ok(match datum {
        Datum::Gcj02 => gcj02_to_wgs84(lat, lon),
        Datum::Wgs84 => (lat, lon),
    })
}

fn to_geo(ring: &[(f64, f64)]) -> geo::Polygon<f64> {
    let coords: Vec<geo::Coord<f64>> = ring.iter().map(|&(lat, lon)| geo::Coord { x: lon, y: lat }).collect();
    geo::Polygon::new(geo::LineString::new(coords), vec![])
}

/// Reads and checks a grid file. Nothing is stored here.
pub fn parse(text_in: &str, datum: Datum) -> Result<GridFile, GridFileError> {
    let geojson: geojson::GeoJson =
        text_in.parse().map_err(|e: geojson::Error| GridFileError::NotGeoJson(e.to_string()))?;
    let features = match geojson {
        geojson::GeoJson::FeatureCollection(fc) => fc.features,
        geojson::GeoJson::Feature(f) => vec![f],
        geojson::GeoJson::Geometry(_) => {
            return Err(GridFileError::NotGeoJson("a bare geometry: grids need Features with properties".into()))
        }
    };
    let empty = serde_json::Map::new();
    let mut grids: Vec<Grid> = vec![];
    let mut shapes: Vec<geo::Polygon<f64>> = vec![];
    let mut points: Vec<(Option<String>, PatrolPoint, String)> = vec![];
    for (index, f) in features.iter().enumerate() {
        let props = f.properties.as_ref().unwrap_or(&empty);
        let name = feature_name(index, props);
        let bad = |reason: &str| GridFileError::Feature { feature: name.clone(), reason: reason.to_owned() };
        let Some(geometry) = &f.geometry else { return Err(bad("no geometry")) };
        match &geometry.value {
            geojson::Value::Polygon(rings) => {
                let id = text(props, "id").ok_or_else(|| bad("a grid needs an \"id\" property"))?;
                if rings.len() > 1 {
                    return Err(bad("holes are not supported: a grid is one outer boundary"));
                }
                let outer = rings.first().ok_or_else(|| bad("a polygon without a ring"))?;
                let mut ring =
                    outer.iter().map(|p| position(p, datum, &name)).collect::<Result<Vec<(f64, f64)>, _>>()?;
                // GeoJSON closes rings by repeating the first position; Gridwork's rings are open.
                if ring.len() > 1 && ring.first() == ring.last() {
                    ring.pop();
                }
                // geo's validation accepts an empty ring (an empty polygon is valid to it), and a
                // case can never be inside a grid without area (found by fuzzing, fuzz/README.md).
                if ring.len() < 3 {
                    return Err(bad(&format!(
                        "a grid's boundary needs at least 3 corners; this one has {}",
                        ring.len()
                    )));
                }
                let shape = to_geo(&ring);
                if let Err(e) = shape.check_validation() {
                    return Err(bad(&format!("invalid polygon: {e}")));
                }
                if geo::Area::unsigned_area(&shape) <= 0.0 {
                    return Err(bad("a grid's boundary encloses no area (its corners are on one line)"));
                }
                if grids.iter().any(|g| g.id.0 == id) {
                    return Err(bad(&format!("grid id {id} appears twice")));
                }
                grids.push(Grid {
                    id: GridId(id.clone()),
                    name: text(props, "name").unwrap_or_else(|| id.clone()),
                    community: text(props, "community").unwrap_or_default(),
                    street: text(props, "street").unwrap_or_default(),
                    boundary: Polygon { ring },
                    points: vec![],
                });
                shapes.push(shape);
            }
            geojson::Value::Point(p) => {
                let (lat, lon) = position(p, datum, &name)?;
                let id = text(props, "id").ok_or_else(|| bad("a patrol point needs an \"id\" property"))?;
                let point = PatrolPoint {
                    id: id.as_str().into(),
                    name: text(props, "name").unwrap_or_else(|| id.clone()),
                    lat,
                    lon,
                };
                points.push((text(props, "grid"), point, name.clone()));
            }
            other => {
                return Err(bad(&format!(
                    "a {} feature: grids are Polygons, patrol points are Points",
                    other.type_name()
                )))
            }
        }
    }
    if grids.is_empty() {
        return Err(GridFileError::NoGrids);
    }
    for (grid, point, name) in points {
        let owner = match grid {
            Some(g) => grids.iter().position(|x| x.id.0 == g).ok_or_else(|| GridFileError::Feature {
                feature: name.clone(),
                reason: format!("grid {g} is not in the file"),
            })?,
            None => grids.iter().position(|x| x.boundary.contains(point.lat, point.lon)).ok_or_else(|| {
                GridFileError::Feature {
                    feature: name.clone(),
                    reason: "inside no grid, and no \"grid\" property".into(),
                }
            })?,
        };
        grids[owner].points.push(point);
    }
    Ok(GridFile { overlaps: overlaps(&grids, &shapes), grids })
}

/// Grid pairs whose interiors intersect. Bounding boxes first: a district has thousands of grids.
fn overlaps(grids: &[Grid], shapes: &[geo::Polygon<f64>]) -> Vec<(String, String)> {
    let boxes: Vec<Option<geo::Rect<f64>>> = shapes.iter().map(|s| s.bounding_rect()).collect();
    let mut out = vec![];
    for i in 0..shapes.len() {
        for j in i + 1..shapes.len() {
            let (Some(a), Some(b)) = (boxes[i], boxes[j]) else { continue };
            let apart =
                a.max().x <= b.min().x || b.max().x <= a.min().x || a.max().y <= b.min().y || b.max().y <= a.min().y;
            if apart {
                continue;
            }
            let m = shapes[i].relate(&shapes[j]);
            // Interiors meet (not merely a shared edge or corner).
            if m.is_intersects() && !m.is_touches() {
                out.push((grids[i].id.0.clone(), grids[j].id.0.clone()));
            }
        }
    }
    out
}

/// The catalogue with the file's grids put in (replacing grids of the same id, keeping others).
pub fn merge(current: &Catalog, file: &GridFile) -> Catalog {
    let mut by_id: BTreeMap<String, Grid> = current.grids.iter().map(|g| (g.id.0.clone(), g.clone())).collect();
    for g in &file.grids {
        by_id.insert(g.id.0.clone(), g.clone());
    }
    Catalog { grids: by_id.into_values().collect(), ..current.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(id: &str, lat: f64, lon: f64, d: f64) -> serde_json::Value {
        serde_json::json!({
            "type": "Feature",
            "properties": { "id": id, "name": format!("{id}网格"), "community": "东湖社区", "street": "东湖街道" },
            "geometry": { "type": "Polygon", "coordinates": [[
                [lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]
            ]] }
        })
    }

    fn collection(features: Vec<serde_json::Value>) -> String {
        serde_json::json!({ "type": "FeatureCollection", "features": features }).to_string()
    }

    #[test]
    fn a_boundary_without_area_is_refused_with_the_feature_named() {
        let ring = |coords: serde_json::Value| {
            collection(vec![serde_json::json!({
                "type": "Feature", "properties": { "id": "g9" },
                "geometry": { "type": "Polygon", "coordinates": coords }
            })])
        };
        for coords in [
            serde_json::json!([[]]),
            serde_json::json!([[[116.4, 39.9], [116.41, 39.9], [116.4, 39.9]]]),
            serde_json::json!([[[116.4, 39.9], [116.41, 39.9], [116.42, 39.9], [116.4, 39.9]]]),
        ] {
            match parse(&ring(coords.clone()), Datum::Wgs84) {
                Err(GridFileError::Feature { feature, .. }) => assert!(feature.contains("g9"), "{feature}"),
                other => panic!("{coords} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_gcj02_file_is_stored_in_wgs84() {
        // Tiananmen: the reference pair of the GCJ-02 formula (model::geo tests).
        let (gcj_lat, gcj_lon) = (39.916_404_281_501_64, 116.410_244_499_169_38);
        let point = serde_json::json!({
            "type": "Feature", "properties": { "id": "p1", "name": "东门" },
            "geometry": { "type": "Point", "coordinates": [gcj_lon, gcj_lat] }
        });
        let file = collection(vec![square("g1", gcj_lat - 0.001, gcj_lon - 0.001, 0.002), point]);
        let parsed = parse(&file, Datum::Gcj02).expect("valid file");
        let p = &parsed.grids[0].points[0];
        assert!((p.lat - 39.915).abs() < 1e-5 && (p.lon - 116.404).abs() < 1e-5, "{p:?}");
        // The ring moved by the same offset (about 600 m), and lost its closing repeat.
        assert_eq!(parsed.grids[0].boundary.ring.len(), 4);
        assert!((parsed.grids[0].boundary.ring[0].1 - (116.404 - 0.001)).abs() < 1e-4);
        let wgs = parse(&file, Datum::Wgs84).expect("valid file");
        assert!((wgs.grids[0].points[0].lon - gcj_lon).abs() < 1e-12, "wgs84 is taken as is");
    }

    #[test]
    fn a_self_intersecting_polygon_refuses_the_file_naming_it() {
        let bow_tie = serde_json::json!({
            "type": "Feature", "properties": { "id": "g2" },
            "geometry": { "type": "Polygon", "coordinates": [[
                [121.40, 31.20], [121.41, 31.21], [121.41, 31.20], [121.40, 31.21], [121.40, 31.20]
            ]] }
        });
        let err =
            parse(&collection(vec![square("g1", 31.2, 121.39, 0.005), bow_tie]), Datum::Wgs84).expect_err("refused");
        match err {
            GridFileError::Feature { feature, reason } => {
                assert_eq!(feature, "#1 (g2)");
                assert!(reason.contains("invalid polygon"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlapping_grids_are_reported_and_shared_edges_are_not() {
        let file = collection(vec![
            square("a", 31.20, 121.40, 0.01),
            square("b", 31.20, 121.41, 0.01),   // shares a's east edge
            square("c", 31.205, 121.405, 0.01), // overlaps a and b
        ]);
        let parsed = parse(&file, Datum::Wgs84).expect("valid");
        assert_eq!(parsed.overlaps, vec![("a".into(), "c".into()), ("b".into(), "c".into())]);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(matches!(parse("not json", Datum::Wgs84), Err(GridFileError::NotGeoJson(_))));
        let no_id = serde_json::json!({
            "type": "Feature", "properties": {},
            "geometry": { "type": "Polygon", "coordinates": [[[121.4, 31.2], [121.41, 31.2], [121.41, 31.21], [121.4, 31.2]]] }
        });
        let err = parse(&collection(vec![no_id]), Datum::Wgs84).expect_err("no id");
        assert!(err.to_string().contains("#0") && err.to_string().contains("\"id\""), "{err}");
        let orphan = serde_json::json!({
            "type": "Feature", "properties": { "id": "p9" },
            "geometry": { "type": "Point", "coordinates": [120.0, 30.0] }
        });
        let err = parse(&collection(vec![square("g1", 31.2, 121.4, 0.01), orphan]), Datum::Wgs84).expect_err("orphan");
        assert!(err.to_string().contains("inside no grid"), "{err}");
        assert_eq!(parse(&collection(vec![]), Datum::Wgs84), Err(GridFileError::NoGrids));
    }
}
