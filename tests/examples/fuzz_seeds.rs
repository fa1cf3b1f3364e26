//! Writes the fuzz targets' seed inputs into `fuzz/seeds/NAME/` (see fuzz/README.md):
//!
//! ```sh
//! cargo run -p gridwork-tests --example fuzz_seeds
//! ```
//!
//! The change and record seeds are what a real device store writes: a simulated phone captures a
//! case with a photo, adds a note, and walks a patrol with a check-in; its outbox becomes the
//! sync request it would send. The rest are small files of each input kind. Phone stores take a
//! fresh Automerge actor when opened, so the change seeds differ from run to run; any valid
//! change does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use gridwork_core::clock::FixedClock;
use gridwork_core::evidence::synthetic::{camera_like_jpeg, camera_like_rgb, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::geo::Location;
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::model::wire::{DeviceState, PushedChange, PushedRecord, SyncRequest, PROTOCOL_VERSION};
use gridwork_core::store::{CheckInInput, OutboxKind};
use gridwork_tests::fuzz_targets::TARGETS;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// 2026-11-30 08:00 in Shanghai.
const NOW_MS: i64 = 1_796_083_200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("seeds"));
    let mut seeds: Vec<(&str, String, Vec<u8>)> = vec![];

    // A phone: a case with a photo and a note, a patrol with one check-in.
    let dir = tempfile::tempdir()?;
    let catalog = gridwork_tests::district(2);
    let identity = gridwork_tests::identity("w1", Role::Worker, None);
    let store = gridwork_tests::open_device(dir.path(), identity, &catalog, Some(Arc::new(FixedClock::new(NOW_MS))))?;
    let mut rng = gridwork_tests::Rng::new(7);
    let mut case = gridwork_tests::random_case(&mut rng, &catalog, 0, NOW_MS);
    let photo = camera_like_jpeg(64, 48, &ExifSpec::default(), 1);
    case.photos.push(photo);
    let id = store.capture_case(case)?.id;
    store.record_event(&id, EventKind::Note { text: "已联系物业 / called the manager".into() })?;
    let grid = &catalog.grids[0];
    let patrol = store.start_patrol(&grid.id)?;
    let point = &grid.points[0];
    store.check_in(CheckInInput {
        patrol,
        point: Some(point.id.clone()),
        location: Location::gps(point.lat, point.lon, 4.0, NOW_MS),
        note: "门已锁".into(),
        photo: None,
    })?;
    store.finish_patrol(&patrol)?;

    let items = store.outbox_page(usize::MAX)?;
    let (mut changes, mut records) = (vec![], vec![]);
    for (i, it) in items.iter().enumerate() {
        match it.kind {
            OutboxKind::Change => {
                seeds.push(("change", format!("device-change-{i}"), it.bytes.clone()));
                let change = automerge::Change::from_bytes(it.bytes.clone())?;
                let raw = change.raw_bytes().to_vec();
                if raw != it.bytes {
                    seeds.push(("change", format!("device-change-{i}-uncompressed"), raw.clone()));
                }
                let count = u16::try_from(change.len()).unwrap_or(u16::MAX);
                seeds.push(("change_columns", format!("device-change-{i}"), [&count.to_le_bytes()[..], &raw].concat()));
                changes.push(PushedChange {
                    doc: it.doc_id.clone().unwrap_or_default(),
                    bytes: B64.encode(&it.bytes),
                    receipt: None,
                    link: it.link.clone(),
                });
            }
            OutboxKind::Record => {
                seeds.push(("records", format!("device-record-{i}"), it.bytes.clone()));
                let body = serde_json::value::RawValue::from_string(String::from_utf8(it.bytes.clone())?)?;
                records.push(PushedRecord { id: it.key.clone(), body, link: it.link.clone() });
            }
        }
    }
    let mut request = SyncRequest {
        protocol: PROTOCOL_VERSION,
        app_version: "1.4.0".into(),
        doc_schema: gridwork_core::model::doc::SCHEMA_VERSION,
        cursor: Some("3f9a:41".into()),
        state: DeviceState {
            outbox_items: items.len() as u64,
            oldest_unsynced_age_ms: 5_000,
            photos_pending: 1,
            catalog_version: 1,
            device_time_ms: NOW_MS,
            boot_id: "3d1c9e52-6f0a-4d8e-9b7e-2a41f0c8e7d1".into(),
            since_boot_ms: 86_400_000,
            chain_head: 3,
        },
        changes,
        records,
        max_pull_bytes: 1 << 20,
        want_full: vec![id.to_string()],
        accept_compacted: true,
    };
    seeds.push(("sync_request", "device-push".into(), serde_json::to_vec(&request)?));
    request.changes.clear();
    request.records.clear();
    request.want_full.clear();
    request.cursor = None;
    seeds.push(("sync_request", "first-idle-sync".into(), serde_json::to_vec(&request)?));

    // A grid file: the simulated district's two grids and their patrol points.
    let mut features = vec![];
    for g in &catalog.grids {
        let mut ring: Vec<[f64; 2]> = g.boundary.ring.iter().map(|&(lat, lon)| [lon, lat]).collect();
        ring.push(ring[0]);
        features.push(serde_json::json!({
            "type": "Feature",
            "properties": { "id": g.id.0, "name": g.name, "community": g.community, "street": g.street },
            "geometry": { "type": "Polygon", "coordinates": [ring] }
        }));
        for p in &g.points {
            features.push(serde_json::json!({
                "type": "Feature",
                "properties": { "id": p.id.0, "name": p.name, "grid": g.id.0 },
                "geometry": { "type": "Point", "coordinates": [p.lon, p.lat] }
            }));
        }
    }
    let geojson = serde_json::json!({ "type": "FeatureCollection", "features": features }).to_string();
    seeds.push(("grids", "district.geojson".into(), geojson.clone().into_bytes()));
    let square = serde_json::json!({
        "type": "Feature", "properties": { "id": "g9" },
        "geometry": { "type": "Polygon", "coordinates": [[[121.4, 31.2], [121.41, 31.2], [121.41, 31.21], [121.4, 31.2]]] }
    });
    seeds.push(("grids", "one-feature.geojson".into(), square.to_string().into_bytes()));

    // Photos: camera JPEGs with and without EXIF, greyscale and CMYK JPEGs, a PNG and a WebP.
    let exif = ExifSpec {
        orientation: Some(6),
        time: Some("2026:11:30 08:00:00".into()),
        gps: Some((31.2304, 121.4737)),
        ..Default::default()
    };
    seeds.push(("photo", "camera-exif.jpg".into(), camera_like_jpeg(40, 30, &exif, 3)));
    seeds.push(("photo", "camera.jpg".into(), camera_like_jpeg(24, 16, &ExifSpec::default(), 4)));
    let rgb = camera_like_rgb(16, 12, 5);
    let grey: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
    let cmyk: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    for (name, pixels, color) in
        [("grey.jpg", &grey, jpeg_encoder::ColorType::Luma), ("cmyk.jpg", &cmyk, jpeg_encoder::ColorType::Cmyk)]
    {
        let mut out = vec![];
        jpeg_encoder::Encoder::new(&mut out, 90).encode(pixels, 16, 12, color)?;
        seeds.push(("photo", name.into(), out));
    }
    let img = image::RgbImage::from_raw(16, 12, rgb).ok_or("16×12 pixels")?;
    for (name, format) in [("small.png", image::ImageFormat::Png), ("small.webp", image::ImageFormat::WebP)] {
        let mut out = std::io::Cursor::new(vec![]);
        img.write_to(&mut out, format)?;
        seeds.push(("photo", name.into(), out.into_inner()));
    }

    // Enrolment codes as the console's QR codes carry them.
    let ca = "9f".repeat(32);
    seeds.push((
        "enrolment_uri",
        "https-with-ca".into(),
        format!("gridwork:enrol?server=https://sync.district.example:8443&code=K7M2QX&ca={ca}").into_bytes(),
    ));
    seeds.push((
        "enrolment_uri",
        "loopback".into(),
        b"gridwork:enrol?server=http://127.0.0.1:8080&code=Q4ZP7T".to_vec(),
    ));

    // Console form bodies and page queries.
    let csrf = "c".repeat(32);
    let forms = [
        ("login", format!("csrf={csrf}&user=s1&password=correct+horse")),
        (
            "dispatch",
            format!("csrf={csrf}&action=dispatch&dept_water=on&dept_roads=on&hours=48&note=%E5%B0%BD%E5%BF%AB"),
        ),
        ("reject", format!("csrf={csrf}&action=reject&reason=out_of_scope&note=")),
        ("keep", format!("csrf={csrf}&action=keep&field=title&index=1")),
        ("settle", format!("csrf={csrf}&action=settle&chosen=0193a0d4-7c1e-7000-8000-000000000001")),
        ("admin-person", format!("csrf={csrf}&id=w7&role=worker&department=&scopes=g0+g1&password=")),
        ("admin-category", format!("csrf={csrf}&id=c1&hours=72&retired=1")),
        ("queue-query", "status=reported&area=g0&category=&overdue=1&from=2026-11-01&page=2&lang=en".to_owned()),
    ];
    for (name, body) in forms {
        seeds.push(("console_form", name.into(), body.into_bytes()));
    }
    let grids_form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("datum", "gcj02")
        .append_pair("geojson", &square.to_string())
        .finish();
    seeds.push(("console_form", "admin-grids".into(), grids_form.into_bytes()));

    for (target, _) in TARGETS {
        std::fs::create_dir_all(out.join(target))?;
        assert!(seeds.iter().any(|(t, _, _)| t == target), "no seed for {target}");
    }
    for (target, name, bytes) in &seeds {
        std::fs::write(out.join(target).join(name), bytes)?;
    }
    println!("{} seeds written under {}", seeds.len(), out.display());
    Ok(())
}
