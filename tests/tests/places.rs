//! The grid found from a fix on the phone, over boundaries a district imports in GCJ-02 (the
//! datum of most Chinese base maps and GIS exports) and the server stores in WGS-84.

use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::geo::{wgs84_to_gcj02, Datum, Location};
use gridwork_core::model::places::GridMatch;
use gridwork_core::store::NewCase;
use gridwork_sync_server::grids;
use gridwork_tests::{identity, open_device};

/// A square grid in GCJ-02, `d` degrees across, from its south-west corner.
fn square(id: &str, lat: f64, lon: f64, d: f64) -> serde_json::Value {
    serde_json::json!({
        "type": "Feature",
        "properties": { "id": id, "name": format!("{id}网格"), "community": "东湖社区", "street": "东湖街道" },
        "geometry": { "type": "Polygon", "coordinates": [[
            [lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]
        ]] }
    })
}

/// Metres east, in degrees of longitude at this latitude.
fn east(lat: f64, m: f64) -> f64 {
    m / (111_320.0 * lat.to_radians().cos())
}

#[test]
fn a_phone_finds_the_grid_of_a_fix_on_boundaries_imported_in_gcj02() {
    // "a" and "b" side by side, "c" beyond a gap of about 190 m; 0.004° is about 380 m × 440 m.
    let features = vec![
        square("a", 31.20, 121.400, 0.004),
        square("b", 31.20, 121.404, 0.004),
        square("c", 31.20, 121.410, 0.004),
    ];
    let text = serde_json::json!({ "type": "FeatureCollection", "features": features }).to_string();
    let file = grids::parse(&text, Datum::Gcj02).expect("the GCJ-02 file imports");
    let catalog = grids::merge(&Catalog { version: 2, grids: vec![], ..gridwork_tests::district(1) }, &file);
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = open_device(dir.path(), identity("w1", Role::Worker, None), &catalog, None).expect("phone");

    // A phone's fix is WGS-84; the boundaries were drawn in GCJ-02, some 500 m apart here. The
    // middle of "a" in the file's datum is inside "a" once both are in WGS-84.
    let (lat, lon) = gridwork_core::model::geo::gcj02_to_wgs84(31.202, 121.402);
    let at =
        |lat: f64, lon: f64, accuracy: f64| phone.grid_at(&Location::gps(lat, lon, accuracy, 0)).expect("a valid fix");
    assert_eq!(at(lat, lon, 10.0), GridMatch::Inside("a".into()));
    // The same place, reported by an app in GCJ-02 (converted on the way in).
    let (g_lat, g_lon) = wgs84_to_gcj02(lat, lon);
    let gcj = Location { datum: Datum::Gcj02, ..Location::gps(g_lat, g_lon, 10.0, 0) };
    assert_eq!(phone.grid_at(&gcj).expect("a GCJ-02 fix"), GridMatch::Inside("a".into()));
    // Read naively as WGS-84, the GCJ-02 coordinates fall some 500 m off, outside "a".
    assert_ne!(at(g_lat, g_lon, 10.0), GridMatch::Inside("a".into()));

    // In the gap, 40 m east of "b": the nearest within a 60 m fix; with a 15 m fix, a choice.
    let (gap_lat, b_east) = gridwork_core::model::geo::gcj02_to_wgs84(31.202, 121.408);
    let gap_lon = b_east + east(gap_lat, 40.0);
    match at(gap_lat, gap_lon, 60.0) {
        GridMatch::Nearest { grid, distance_m } => {
            assert_eq!(grid.0, "b");
            assert!((distance_m - 40.0).abs() < 3.0, "{distance_m}");
        }
        other => panic!("expected the nearest grid, got {other:?}"),
    }
    match at(gap_lat, gap_lon, 15.0) {
        // Every grid within a kilometre, nearest first: "c" beyond the gap, "a" beyond "b".
        GridMatch::Choose(c) => assert_eq!(c.iter().map(|(g, _)| g.0.as_str()).collect::<Vec<_>>(), ["b", "c", "a"]),
        other => panic!("expected a choice, got {other:?}"),
    }

    // A case captured from the fix lands in the grid the fix settles.
    let case = phone
        .capture_case(NewCase {
            grid: match at(lat, lon, 10.0) {
                GridMatch::Inside(g) => g,
                other => panic!("{other:?}"),
            },
            location: Location::gps(lat, lon, 10.0, 0),
            ..gridwork_tests::random_case(&mut gridwork_tests::Rng::new(1), &catalog, 0, 0)
        })
        .expect("capture");
    assert_eq!(phone.get_case(&case.id).expect("case").case.grid.value.0, "a");
}
