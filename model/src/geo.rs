//! Locations and geometry.
//!
//! Phones report WGS-84; Chinese base maps and many district GIS files use GCJ-02, which is
//! offset by 100–700 m — about the size of a grid. Everything Gridwork stores is WGS-84: a
//! location that arrives in another datum is converted on the way in ([`Location::normalized`])
//! and remembers which datum it came in, so an auditor can tell a converted fix from a raw one.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The geodetic datum a coordinate pair is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Datum {
    /// What GNSS receivers report, and what Gridwork stores.
    #[default]
    Wgs84,
    /// China's obfuscated datum used by AMap, Tencent maps and many district GIS exports.
    Gcj02,
}

/// A position fix as a phone reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    /// Horizontal accuracy radius in metres (68% confidence, as Android and iOS report it).
    pub accuracy_m: f64,
    /// Where the fix came from: "gps", "network", "fused", "manual"…
    pub provider: String,
    /// The OS said this fix came from a mock-location provider. Kept, never refused: a
    /// supervisor decides what it means.
    pub mock: bool,
    /// When the fix was taken (Unix milliseconds, device clock).
    pub fix_time_ms: i64,
    /// The datum `lat`/`lon` are in. After [`Location::normalized`] this is always WGS-84.
    pub datum: Datum,
    /// The datum the fix arrived in, when it was converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<Datum>,
}

impl Location {
    /// A WGS-84 GPS fix; convenient for tests and simulations.
    pub fn gps(lat: f64, lon: f64, accuracy_m: f64, fix_time_ms: i64) -> Self {
        Location {
            lat,
            lon,
            accuracy_m,
            provider: "gps".into(),
            mock: false,
            fix_time_ms,
            datum: Datum::Wgs84,
            converted_from: None,
        }
    }

    /// Validates the fix and converts it to WGS-84.
    pub fn normalized(mut self) -> Result<Self, ModelError> {
        check_coordinates(self.lat, self.lon)?;
        if !self.accuracy_m.is_finite() || self.accuracy_m < 0.0 {
            return Err(ModelError::InvalidAccuracy { accuracy_m: self.accuracy_m });
        }
        if self.datum == Datum::Gcj02 {
            let (lat, lon) = gcj02_to_wgs84(self.lat, self.lon);
            self.lat = lat;
            self.lon = lon;
            self.datum = Datum::Wgs84;
            self.converted_from = Some(Datum::Gcj02);
        }
        Ok(self)
    }
}

/// Rejects NaN, infinities and out-of-range values.
pub fn check_coordinates(lat: f64, lon: f64) -> Result<(), ModelError> {
    let ok = lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidCoordinates { lat, lon })
    }
}

// The GCJ-02 forward transform is a published polynomial-plus-sine formula on the Krasovsky
// ellipsoid; only its forward direction exists, so the inverse is found by fixed-point iteration.
const KRASOVSKY_A: f64 = 6_378_245.0;
const KRASOVSKY_EE: f64 = 0.006_693_421_622_965_943;

/// GCJ-02 applies only inside mainland China's rough bounding box.
fn outside_china(lat: f64, lon: f64) -> bool {
    !(72.004..=137.8347).contains(&lon) || !(0.8293..=55.8271).contains(&lat)
}

fn transform_lat(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    r
}

fn transform_lon(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    r
}

/// WGS-84 → GCJ-02 (lat, lon).
pub fn wgs84_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    use std::f64::consts::PI;
    if outside_china(lat, lon) {
        return (lat, lon);
    }
    let mut d_lat = transform_lat(lon - 105.0, lat - 35.0);
    let mut d_lon = transform_lon(lon - 105.0, lat - 35.0);
    let rad_lat = lat / 180.0 * PI;
    let magic = 1.0 - KRASOVSKY_EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    d_lat = (d_lat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * PI);
    d_lon = (d_lon * 180.0) / (KRASOVSKY_A / sqrt_magic * rad_lat.cos() * PI);
    (lat + d_lat, lon + d_lon)
}

/// GCJ-02 → WGS-84 (lat, lon), accurate to well under a centimetre.
pub fn gcj02_to_wgs84(lat: f64, lon: f64) -> (f64, f64) {
    if outside_china(lat, lon) {
        return (lat, lon);
    }
    let (mut w_lat, mut w_lon) = (lat, lon);
    for _ in 0..30 {
        let (g_lat, g_lon) = wgs84_to_gcj02(w_lat, w_lon);
        let (e_lat, e_lon) = (lat - g_lat, lon - g_lon);
        w_lat += e_lat;
        w_lon += e_lon;
        if e_lat.abs() < 1e-10 && e_lon.abs() < 1e-10 {
            break;
        }
    }
    (w_lat, w_lon)
}

/// A closed ring of (lat, lon) vertices in WGS-84; the last vertex need not repeat the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Polygon {
    pub ring: Vec<(f64, f64)>,
}

impl Polygon {
    /// Even-odd ray casting. Grids are a few hundred metres across, so treating lat/lon as planar
    /// is far inside GPS accuracy.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let n = self.ring.len();
        if n < 3 {
            return false;
        }
        let mut inside = false;
        let mut j = n - 1;
        for i in 0..n {
            let (yi, xi) = self.ring[i];
            let (yj, xj) = self.ring[j];
            if (yi > lat) != (yj > lat) {
                let x_cross = (xj - xi) * (lat - yi) / (yj - yi) + xi;
                if lon < x_cross {
                    inside = !inside;
                }
            }
            j = i;
        }
        inside
    }
}

/// Great-circle distance in metres (haversine), for "how far from the patrol point".
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_008.8;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tiananmen, the reference pair published with the GCJ-02 formula.
    const WGS: (f64, f64) = (39.915, 116.404);
    const GCJ: (f64, f64) = (39.916_404_281_501_64, 116.410_244_499_169_38);

    #[test]
    fn known_point_converts_wgs84_to_gcj02() {
        let (lat, lon) = wgs84_to_gcj02(WGS.0, WGS.1);
        assert!((lat - GCJ.0).abs() < 1e-9, "{lat}");
        assert!((lon - GCJ.1).abs() < 1e-9, "{lon}");
    }

    #[test]
    fn gcj02_location_is_stored_as_wgs84() {
        let mut fix = Location::gps(GCJ.0, GCJ.1, 8.0, 0);
        fix.datum = Datum::Gcj02;
        let stored = fix.normalized().expect("valid");
        assert_eq!(stored.datum, Datum::Wgs84);
        assert_eq!(stored.converted_from, Some(Datum::Gcj02));
        // Within 1 cm of the true WGS-84 point, and the raw GCJ-02 pair was ~570 m away.
        assert!(distance_m((stored.lat, stored.lon), WGS) < 0.01);
        assert!(distance_m(GCJ, WGS) > 500.0);
    }

    #[test]
    fn bad_coordinates_are_refused() {
        for (lat, lon) in [(f64::NAN, 0.0), (0.0, f64::INFINITY), (91.0, 0.0), (0.0, -180.5)] {
            assert!(matches!(check_coordinates(lat, lon), Err(ModelError::InvalidCoordinates { .. })));
        }
        let fix = Location::gps(30.0, 120.0, -1.0, 0);
        assert!(matches!(fix.normalized(), Err(ModelError::InvalidAccuracy { .. })));
    }

    #[test]
    fn point_in_polygon() {
        let square = Polygon { ring: vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)] };
        assert!(square.contains(0.5, 0.5));
        assert!(!square.contains(1.5, 0.5));
        assert!(!square.contains(0.5, -0.1));
        let concave = Polygon {
            ring: vec![(0.0, 0.0), (0.0, 3.0), (3.0, 3.0), (3.0, 2.0), (1.0, 2.0), (1.0, 1.0), (3.0, 1.0), (3.0, 0.0)],
        };
        assert!(concave.contains(0.5, 1.5));
        assert!(!concave.contains(2.0, 1.5), "inside the notch");
    }
}
