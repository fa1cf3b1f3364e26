//! Maps drawn from the server's own data as inline SVG: grid polygons and case pins. No tile
//! server — a district's deployment may have no internet.

use std::fmt::Write;

use gridwork_model::geo::Polygon;

/// The pin colour of a status.
pub fn status_colour(status: &str) -> &'static str {
    match status {
        "reported" => "#0b5cad",
        "accepted" => "#6f42c1",
        "dispatched" | "in_progress" => "#d97706",
        "handled" | "followed_up" => "#1a7f37",
        "closed" => "#6b7280",
        "rejected" => "#9ca3af",
        "contested" => "#b42318",
        _ => "#111827",
    }
}

/// Projects (lat, lon) into a `size`-wide square around the given bounds, north up. Grids are
/// small, so an equirectangular projection with the latitude's cosine is exact enough.
struct Frame {
    min_lat: f64,
    min_lon: f64,
    scale: f64,
    cos: f64,
    size: f64,
    pad: f64,
}

impl Frame {
    fn around(points: &[(f64, f64)], size: f64) -> Frame {
        let (mut min_lat, mut max_lat, mut min_lon, mut max_lon) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (lat, lon) in points {
            min_lat = min_lat.min(*lat);
            max_lat = max_lat.max(*lat);
            min_lon = min_lon.min(*lon);
            max_lon = max_lon.max(*lon);
        }
        let cos = ((min_lat + max_lat) / 2.0).to_radians().cos().max(0.1);
        let span = ((max_lat - min_lat).max((max_lon - min_lon) * cos)).max(1e-5);
        let pad = size * 0.08;
        Frame { min_lat, min_lon, scale: (size - 2.0 * pad) / span, cos, size, pad }
    }

    fn xy(&self, lat: f64, lon: f64) -> (f64, f64) {
        let x = self.pad + (lon - self.min_lon) * self.cos * self.scale;
        let y = self.size - self.pad - (lat - self.min_lat) * self.scale;
        (x, y)
    }

    /// A polygon's ring as an SVG `points` attribute.
    fn points(&self, polygon: &Polygon) -> String {
        let pts: Vec<String> = polygon
            .ring
            .iter()
            .map(|(la, lo)| {
                let (x, y) = self.xy(*la, *lo);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        pts.join(" ")
    }
}

/// One case's grid with its pin.
pub fn case_map(grid: Option<&Polygon>, lat: f64, lon: f64, status: &str) -> String {
    let mut points: Vec<(f64, f64)> = grid.map(|g| g.ring.clone()).unwrap_or_default();
    points.push((lat, lon));
    let frame = Frame::around(&points, 300.0);
    let mut svg = String::from(
        r#"<svg class="map" id="case-map" viewBox="0 0 300 300" xmlns="http://www.w3.org/2000/svg" role="img">"#,
    );
    if let Some(g) = grid {
        let _ = write!(
            svg,
            r##"<polygon points="{}" fill="#e7edf4" stroke="#0b5cad" stroke-width="2"/>"##,
            frame.points(g)
        );
    }
    let (x, y) = frame.xy(lat, lon);
    let _ = write!(
        svg,
        r##"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="{}" stroke="#fff" stroke-width="2"/></svg>"##,
        status_colour(status)
    );
    svg
}

/// The statuses in the legend, in lifecycle order.
pub const LEGEND: [&str; 9] =
    ["reported", "accepted", "dispatched", "in_progress", "handled", "followed_up", "closed", "rejected", "contested"];

/// A drawn district map, and how many of the cases lie outside what it shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistrictMap {
    pub svg: String,
    /// Cases whose position lies outside the drawn grids' frame (a fix taken outside every grid,
    /// a case seen through another scope): counted, not drawn, so that one stray fix cannot
    /// shrink the person's grids into a corner.
    pub outside: usize,
}

/// A map of the person's grids (the ones given: their area, or the filter's), fitted to those
/// grids, each with its name, and a pin per case inside that frame, linked to the case. Without
/// grids, the frame fits the pins.
pub fn district_map(grids: &[(&str, &Polygon)], pins: &[crate::store::console::MapPin]) -> DistrictMap {
    let mut points: Vec<(f64, f64)> = grids.iter().flat_map(|(_, p)| p.ring.iter().copied()).collect();
    if points.is_empty() {
        points.extend(pins.iter().map(|p| (p.lat, p.lon)));
    }
    if points.is_empty() {
        return DistrictMap::default();
    }
    const SIZE: f64 = 800.0;
    let frame = Frame::around(&points, SIZE);
    let mut svg = String::from(
        r#"<svg class="map" id="district-map" viewBox="0 0 800 800" xmlns="http://www.w3.org/2000/svg" role="img">"#,
    );
    for (name, g) in grids {
        let _ = write!(
            svg,
            r##"<polygon points="{}" fill="#eef2f7" stroke="#0b5cad" stroke-width="1"><title>{}</title></polygon>"##,
            frame.points(g),
            escape(name)
        );
    }
    // Names over the polygons, sized to the drawn grid so ten grids and a thousand both read.
    for (name, g) in grids {
        let drawn: Vec<(f64, f64)> = g.ring.iter().map(|(la, lo)| frame.xy(*la, *lo)).collect();
        let n = drawn.len().max(1) as f64;
        let (cx, cy) = drawn.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
        let width =
            drawn.iter().map(|p| p.0).fold(f64::MIN, f64::max) - drawn.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let font = (width / (name.chars().count().max(1) as f64 + 1.0)).clamp(6.0, 16.0);
        let _ = write!(
            svg,
            r##"<text class="grid-name" x="{cx:.1}" y="{cy:.1}" font-size="{font:.1}" text-anchor="middle" fill="#3a4a5c">{}</text>"##,
            escape(name)
        );
    }
    let mut outside = 0;
    for p in pins {
        let (x, y) = frame.xy(p.lat, p.lon);
        if !(0.0..=SIZE).contains(&x) || !(0.0..=SIZE).contains(&y) {
            outside += 1;
            continue;
        }
        let _ = write!(
            svg,
            r##"<a href="/console/cases/{}"><circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{}" data-status="{}"><title>{}</title></circle></a>"##,
            escape(&p.id),
            status_colour(&p.status),
            escape(&p.status),
            escape(&p.code)
        );
    }
    svg.push_str("</svg>");
    DistrictMap { svg, outside }
}

/// The overview's heat map: the area's grids, fitted and named, each filled by how many cases
/// were reported in it (white to deep red, relative to the busiest grid), the count in its title.
pub fn heat_map(grids: &[(&str, &Polygon, i64)]) -> String {
    let points: Vec<(f64, f64)> = grids.iter().flat_map(|(_, p, _)| p.ring.iter().copied()).collect();
    if points.is_empty() {
        return String::new();
    }
    const SIZE: f64 = 600.0;
    let frame = Frame::around(&points, SIZE);
    let max = grids.iter().map(|(_, _, n)| *n).max().unwrap_or(0).max(1) as f64;
    let mut svg = String::from(
        r#"<svg class="map" id="heat-map" viewBox="0 0 600 600" xmlns="http://www.w3.org/2000/svg" role="img">"#,
    );
    for (name, g, n) in grids {
        // Square root, so a grid with a quarter of the busiest one's cases is still half-dark.
        let t = (*n as f64 / max).sqrt();
        let (r, gr, b) = (255.0 - t * 75.0, 247.0 - t * 212.0, 237.0 - t * 213.0);
        let _ = write!(
            svg,
            r##"<polygon points="{}" fill="rgb({r:.0},{gr:.0},{b:.0})" stroke="#7a8899" stroke-width="1" data-cases="{n}"><title>{}: {n}</title></polygon>"##,
            frame.points(g),
            escape(name)
        );
    }
    if grids.len() <= 60 {
        for (name, g, _) in grids {
            let drawn: Vec<(f64, f64)> = g.ring.iter().map(|(la, lo)| frame.xy(*la, *lo)).collect();
            let k = drawn.len().max(1) as f64;
            let (cx, cy) = drawn.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a / k, y + b / k));
            let _ = write!(
                svg,
                r##"<text class="grid-name" x="{cx:.1}" y="{cy:.1}" font-size="10" text-anchor="middle" fill="#1f2937">{}</text>"##,
                escape(name)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Text inside SVG markup the server writes by hand (the templates escape everything else).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_lies_inside_the_drawn_grid_and_north_is_up() {
        let g = Polygon { ring: vec![(31.20, 121.40), (31.20, 121.41), (31.21, 121.41), (31.21, 121.40)] };
        let frame = Frame::around(&g.ring, 300.0);
        let (_, y_south) = frame.xy(31.20, 121.40);
        let (_, y_north) = frame.xy(31.21, 121.40);
        assert!(y_north < y_south, "north is drawn above south");
        let svg = case_map(Some(&g), 31.205, 121.405, "reported");
        assert!(svg.contains("<polygon") && svg.contains("#0b5cad"));
        let (x, y) = frame.xy(31.205, 121.405);
        assert!((24.0..=276.0).contains(&x) && (24.0..=276.0).contains(&y), "{x},{y}");
    }

    #[test]
    fn the_district_map_links_each_pin_and_escapes_names() {
        let g = Polygon { ring: vec![(31.20, 121.40), (31.20, 121.41), (31.21, 121.41), (31.21, 121.40)] };
        let pin = crate::store::console::MapPin {
            id: "c1".into(),
            code: "A<1>".into(),
            status: "dispatched".into(),
            lat: 31.205,
            lon: 121.405,
        };
        let svg = district_map(&[("Grid \"1\"", &g)], &[pin]).svg;
        assert!(svg.contains(r#"href="/console/cases/c1""#));
        assert!(svg.contains("A&lt;1&gt;") && svg.contains("Grid &quot;1&quot;"));
        assert!(svg.contains(status_colour("dispatched")));
    }

    #[test]
    fn a_map_fits_the_persons_grids_names_them_and_counts_a_stray_pin_apart() {
        // Ten grids in one corner of a district ten times wider, and a case whose fix lies at the
        // district's far end: the grids fill the map, the stray case is counted, not drawn.
        let square = |i: usize| Polygon {
            ring: vec![
                (31.20, 121.40 + i as f64 * 0.005),
                (31.20, 121.405 + i as f64 * 0.005),
                (31.205, 121.405 + i as f64 * 0.005),
                (31.205, 121.40 + i as f64 * 0.005),
            ],
        };
        let grids: Vec<(String, Polygon)> = (0..10).map(|i| (format!("东湖{i}号网格"), square(i))).collect();
        let refs: Vec<(&str, &Polygon)> = grids.iter().map(|(n, p)| (n.as_str(), p)).collect();
        let pin = |id: &str, lat: f64, lon: f64| crate::store::console::MapPin {
            id: id.into(),
            code: id.into(),
            status: "reported".into(),
            lat,
            lon,
        };
        let map = district_map(&refs, &[pin("inside", 31.2025, 121.4025), pin("far", 31.30, 121.90)]);
        assert_eq!(map.outside, 1, "the stray case is counted apart");
        assert!(map.svg.contains("/console/cases/inside") && !map.svg.contains("/console/cases/far"));
        for (name, _) in &grids {
            assert!(map.svg.contains(&format!(">{name}</text>")), "{name} is written on its grid");
        }
        // The ten grids span the map's width (less its margins), not a corner of it.
        let frame = Frame::around(&refs.iter().flat_map(|(_, p)| p.ring.clone()).collect::<Vec<_>>(), 800.0);
        let (x0, _) = frame.xy(31.20, 121.40);
        let (x1, _) = frame.xy(31.20, 121.45);
        assert!(x1 - x0 > 600.0, "{x0}..{x1}");
    }
}
