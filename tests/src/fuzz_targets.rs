//! Fuzz target bodies: one `pub fn NAME(data: &[u8])` for each decoder that reads bytes from
//! outside (a phone's request, a district's grid file, a camera, a scanned QR code, a browser's
//! form). `fuzz/fuzz_targets/NAME.rs` runs each under libFuzzer (`cargo +nightly fuzz run NAME`,
//! see fuzz/README.md); `tests/tests/fuzz_regressions.rs` replays `fuzz/seeds/NAME/` and
//! `fuzz/regressions/NAME/` through the same functions on stable.
//!
//! None of them may panic, whatever the input: a panic is a crash libFuzzer reports. Each also
//! asserts the decoder's own invariants where they are cheap to check (a parsed request
//! serializes and parses back to itself, the column reader agrees with `decode()`, a processed
//! photo is as large as its reference says), so a wrong answer is a crash too.

use std::collections::{BTreeSet, HashMap};

use automerge::Change;
use base64::Engine;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::doc::keys;
use gridwork_model::geo::{check_coordinates, Datum, Location};
use gridwork_model::ids::{DepartmentId, EventId};
use gridwork_model::time::{ClockStamp, DistrictCalendar};
use gridwork_model::wire::{EnrolmentCode, SyncRequest};
use gridwork_sync_server::limits::MAX_DECODED_BYTES_PER_REQUEST;
use gridwork_sync_server::store::RecordFacts;
use gridwork_sync_server::{change_ops, grids as grid_file, ingest};
use sha2::{Digest, Sha256};

/// A target's body: any bytes, no panic.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/NAME.rs`, seeds and regressions directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("sync_request", sync_request),
    ("change", change),
    ("change_columns", change_columns),
    ("records", records),
    ("grids", grids),
    ("photo", photo),
    ("enrolment_uri", enrolment_uri),
    ("console_form", console_form),
];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `POST /v1/sync`: the body as `http.rs` parses it (`serde_json::from_slice`), then what the
/// store reads of it before anything is stored: every change's base64 and bytes, through
/// `ingest::read_pushed` with the request's decoded-bytes budget, and every record body
/// (`RecordFacts::read`).
pub fn sync_request(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<SyncRequest>(data) else { return };
    let text = serde_json::to_string(&req).expect("a parsed request serializes");
    let again: SyncRequest = serde_json::from_str(&text).expect("a serialized request parses");
    assert_eq!(again, req, "parse → serialize → parse changed the request");
    let mut budget = MAX_DECODED_BYTES_PER_REQUEST;
    for c in &req.changes {
        let Ok(bytes) = B64.decode(&c.bytes) else { continue };
        past_open_panics(|| {
            if let Ok(facts) = ingest::read_pushed(&c.doc, &bytes, &mut budget) {
                server_reads_change(&bytes, Some(&facts));
            }
        });
    }
    for r in &req.records {
        record_body(r.body.get());
    }
}

/// One pushed change's bytes, as the server reads them: the inflation bound
/// (`ingest::inflated_len`), then `ingest::read_pushed` (for the document the change names, else
/// any case id), and the invariants of `read_change` on what it accepts — and on any
/// uncompressed change within `read_pushed`'s operation bound, which is what the store reads
/// again (parked and released changes). A change whose checksum is wrong must be refused; it is
/// then read once more with its checksum made right, so that mutations get past the checksum to
/// the columns.
pub fn change(data: &[u8]) {
    if let Ok(n) = ingest::inflated_len(data) {
        assert!(n >= data.len() && n <= ingest::MAX_CHANGE_BYTES, "inflated_len {n} for {} bytes", data.len());
    }
    past_open_panics(|| server_reads_pushed(data));
    if let Some(fixed) = with_valid_checksum(data) {
        past_open_panics(|| {
            if within_op_bound(data) {
                assert!(ingest::read_change(data).is_err(), "a change with a wrong checksum was read");
            }
            server_reads_pushed(&fixed);
        });
    }
}

/// The column reader (`change_ops::map_ops_in`) on arbitrary bytes, not only on changes
/// `Change::from_bytes` verified: the first two bytes are the operation count (little endian, at
/// most 4,095: a longer run of one operation only repeats the same work and slows the fuzzer to a
/// few thousand runs a second), the rest the chunk.
pub fn change_columns(data: &[u8]) {
    let Some((count, chunk)) = data.split_first_chunk::<2>() else { return };
    let count = usize::from(u16::from_le_bytes(*count) & 0x0fff);
    if let Ok(ops) = change_ops::map_ops_in(chunk, count) {
        assert!(ops.len() <= count, "{} map operations from a chunk of {count}", ops.len());
    }
}

/// A pushed record's body (patrol start and finish, check-in), as the store reads it: the claim
/// of who made it, and a check-in's facts. The body is the request's raw JSON text, or a
/// quarantined body read back with `from_utf8_lossy`.
pub fn records(data: &[u8]) {
    record_body(&String::from_utf8_lossy(data));
}

/// `grids import FILE` and the console's grid form: a GeoJSON file, read in both datums.
pub fn grids(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for datum in [Datum::Wgs84, Datum::Gcj02] {
        let Ok(file) = grid_file::parse(text, datum) else { continue };
        assert!(!file.grids.is_empty(), "a file without grids was accepted");
        let mut ids = BTreeSet::new();
        for g in &file.grids {
            assert!(!g.id.0.trim().is_empty(), "a grid without an id");
            assert!(ids.insert(g.id.0.as_str()), "grid id {} twice", g.id.0);
            assert!(g.boundary.ring.len() >= 3, "grid {} has a boundary of {} points", g.id.0, g.boundary.ring.len());
            for &(lat, lon) in &g.boundary.ring {
                assert!(check_coordinates(lat, lon).is_ok(), "grid {} has a vertex at {lat}, {lon}", g.id.0);
            }
            for p in &g.points {
                assert!(check_coordinates(p.lat, p.lon).is_ok(), "point {} at {}, {}", p.id.0, p.lat, p.lon);
            }
        }
        for (a, b) in &file.overlaps {
            assert!(a != b && ids.contains(a.as_str()) && ids.contains(b.as_str()), "overlap {a} & {b}");
        }
        let merged = grid_file::merge(&Catalog::default(), &file);
        assert_eq!(merged.grids.len(), file.grids.len(), "merging into an empty catalogue lost grids");
    }
}

/// The pixel cap the `photo` target runs the pipeline with (`process_photo_within`): every
/// decoder path is the same, and images up to half a megapixel still reach the resize to the
/// stored size (a 1,700×290 panorama is over its 1,600-pixel long edge). Under the real
/// 50-megapixel cap, sub-kilobyte JPEGs declaring 34 megapixels each took 2 s and the first
/// campaign ran at a few executions a second; under 2 megapixels, a few hundred (fuzz/README.md).
/// Large images are covered by the evidence tests (`core/src/evidence/tests.rs`: decompression
/// bombs, 12 MP photos).
pub const PHOTO_FUZZ_MAX_PIXELS: u64 = 500_000;

/// The cap a run uses: [`PHOTO_FUZZ_MAX_PIXELS`], or `GRIDWORK_PHOTO_FUZZ_MAX_PIXELS` when a
/// campaign sets it (a smaller cap runs several times faster and still reaches every decoder
/// path and the resize of panoramas; fuzz/README.md says which cap each run used).
pub fn photo_fuzz_max_pixels() -> u64 {
    static CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("GRIDWORK_PHOTO_FUZZ_MAX_PIXELS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&cap| cap > 0)
            .unwrap_or(PHOTO_FUZZ_MAX_PIXELS)
    })
}

/// The phone's photo pipeline (`gridwork_core::evidence::process_photo`): camera or gallery
/// bytes in, the stored JPEG, its thumbnail and its evidence reference out.
pub fn photo(data: &[u8]) {
    use gridwork_core::evidence::{
        jpeg_dimensions, process_photo_within, sha256_hex, STORED_LONG_EDGE, THUMB_LONG_EDGE,
    };
    let Ok(p) = process_photo_within(data, photo_fuzz_max_pixels()) else { return };
    let e = &p.evidence;
    assert!(
        e.width > 0 && e.height > 0 && e.width.max(e.height) <= STORED_LONG_EDGE,
        "stored {}×{}",
        e.width,
        e.height
    );
    assert_eq!(jpeg_dimensions(&p.stored), Some((e.width, e.height)), "the stored JPEG's size is not the reference's");
    let (tw, th) = jpeg_dimensions(&p.thumb).expect("the thumbnail is a JPEG");
    assert!(tw > 0 && th > 0 && tw.max(th) <= THUMB_LONG_EDGE, "thumbnail {tw}×{th}");
    assert_eq!(e.size, p.stored.len() as u64);
    assert_eq!(e.sha256, sha256_hex(&p.stored));
    assert_eq!(e.thumb_sha256.as_deref(), Some(sha256_hex(&p.thumb).as_str()));
    assert_eq!(e.original_sha256, sha256_hex(data));
    if let Some((lat, lon)) = e.exif_gps {
        assert!(check_coordinates(lat, lon).is_ok(), "EXIF GPS {lat}, {lon} kept");
    }
}

/// The text of a scanned enrolment QR code (`gridwork:enrol?server=…&code=…&ca=…`), as the
/// app passes it to `gridwork_model::wire::EnrolmentCode::parse`.
pub fn enrolment_uri(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(code) = EnrolmentCode::parse(&text) else { return };
    assert!(!code.server.is_empty() && !code.code.is_empty(), "{code:?}");
    if let Some(ca) = &code.ca_fingerprint {
        assert!(ca.len() == 64 && ca.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "ca {ca:?}");
    }
    if code.server.starts_with("https://") {
        assert!(code.ca_fingerprint.is_some(), "https without a CA pin: {code:?}");
    }
    // Every value comes back as it was (each is trimmed when read: a code that ended in a space
    // once lost it in `to_uri`, fuzz/regressions/enrolment_uri/).
    assert_eq!(EnrolmentCode::parse(&code.to_uri()), Ok(code.clone()), "to_uri does not parse back");
}

/// A console form body (`RawForm`), parsed as the handlers in `console/mod.rs` do
/// (`form_urlencoded::parse` into a map), with the fields they read decoded the same way; and
/// the same bytes as the query string of a console page, through axum's `Query` extractor.
pub fn console_form(data: &[u8]) {
    let form: HashMap<String, String> = form_urlencoded::parse(data).into_owned().collect();
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(form.iter());
    let back: HashMap<String, String> = form_urlencoded::parse(out.finish().as_bytes()).into_owned().collect();
    assert_eq!(back, form, "serialize → parse changed the form");

    // What `parse_action` and `admin_change` read, decoded the same way.
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let _ = get("note").chars().count();
    let _ = EventId::parse(&get("chosen"));
    let _ = Role::parse(get("role").trim());
    let _ = get("hours").parse::<i64>().ok().filter(|h| (1..=2160).contains(h)).map(|h| h * 3_600_000);
    let _ = get("hours").trim().parse::<u32>();
    let _ = get("index").parse::<usize>();
    let departments: BTreeSet<DepartmentId> =
        form.keys().filter_map(|k| k.strip_prefix("dept_")).map(DepartmentId::from).collect();
    assert!(departments.len() <= form.len());
    let _ = get("scopes").split_whitespace().count();

    // GET pages read their query through axum's `Query<HashMap<String, String>>`: it must read
    // what `form_urlencoded` reads.
    let Ok(uri) = format!("/console/cases?{}", String::from_utf8_lossy(data)).parse::<axum::http::Uri>() else {
        return;
    };
    if let Ok(axum::extract::Query(q)) = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri) {
        let direct: HashMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        assert_eq!(q, direct, "axum's Query and form_urlencoded read the query differently");
    }
}

/// `read_pushed` on one change, then [`server_reads_change`] on what it accepts and on any
/// uncompressed change within its operation bound.
fn server_reads_pushed(bytes: &[u8]) {
    let mut budget = MAX_DECODED_BYTES_PER_REQUEST;
    let mut pushed = ingest::read_pushed(ANY_CASE_ID, bytes, &mut budget);
    // A change that creates a case names it: push it again for that document.
    let named = pushed.as_ref().err().and_then(|e| {
        e.strip_prefix("change creates document ")?.split_once(", filed under ").map(|(doc, _)| doc.to_owned())
    });
    if let Some(doc) = named {
        let mut budget = MAX_DECODED_BYTES_PER_REQUEST;
        pushed = ingest::read_pushed(&doc, bytes, &mut budget);
    }
    match pushed {
        Ok(facts) => server_reads_change(bytes, Some(&facts)),
        Err(_) if within_op_bound(bytes) => server_reads_change(bytes, None),
        Err(_) => {}
    }
}

/// An uncompressed change chunk whose columns claim no more operations than `read_pushed`
/// accepts: `read_change` (`Change::from_bytes`) may be given it without walking an operation
/// bomb (or an Automerge bundle chunk, which `from_bytes` parses before refusing).
fn within_op_bound(bytes: &[u8]) -> bool {
    change_ops::op_bound(bytes, ingest::MAX_CHANGE_BYTES).is_ok_and(|n| n <= ingest::MAX_CHANGE_OPS)
}

/// What the server reads of one change (`pushed`: what `read_pushed` read, if it accepted it),
/// and the invariants of its two readers.
fn server_reads_change(bytes: &[u8], pushed: Option<&ingest::ChangeFacts>) {
    let read = ingest::read_change(bytes);
    if let Some(pushed) = pushed {
        let (_, facts) = read.as_ref().expect("read_pushed accepted it, read_change refuses it");
        assert_eq!(facts, pushed, "read_pushed and read_change read different facts");
    }
    let Ok((change, facts)) = read else { return };
    let Ok(decoded) = ingest::facts_by_decoding(&change) else {
        // `decode()` panicked (fenced): `read_change` read it, so the column reader did.
        assert!(ingest::facts_from_columns(&change).is_some(), "read_change read a change neither reader reads");
        return;
    };
    if let Some(by_columns) = ingest::facts_from_columns(&change) {
        assert_eq!(by_columns, decoded, "the column reader disagrees with decode()");
    }
    assert_eq!(facts, decoded, "read_change disagrees with decode()");
    assert_eq!(facts.hash, change.hash().to_string());
    // The lifecycle events in every map the change puts strings into (the server knows which
    // map is the case's `events` from an earlier change), and the location on the root.
    let mut objs: BTreeSet<&str> = facts.map_puts.iter().map(|(o, _, _)| o.as_str()).collect();
    objs.extend(facts.events_obj_created.as_deref());
    for obj in objs {
        for (event, _) in facts.events(obj).into_iter().flatten() {
            let _ = event.clock.estimated_ms();
        }
    }
    for (k, v) in &facts.root_puts {
        if k == keys::LOCATION {
            let _ = serde_json::from_str::<Location>(v);
        }
    }
    // A verified change's own (uncompressed) bytes are the same change.
    let again = Change::from_bytes(change.raw_bytes().to_vec()).expect("a verified change's bytes parse");
    assert_eq!(again.hash(), change.hash());
    // What the server stores, phones apply (and `ingest::compact` too): a change it accepts with
    // no dependencies, whose actors pass the store's check against an empty document, applies to
    // an empty document, or is refused, without a panic (unfenced here: a panic is a finding).
    let stored =
        pushed.is_some_and(|f| f.deps.is_empty() && ingest::unknown_actor(f, |_| Ok::<_, ()>(false)) == Ok(None));
    if stored {
        let _ = automerge::Automerge::new().apply_changes([change]);
    }
}

/// A record body as `store/sqlite/records.rs` reads it.
fn record_body(body: &str) {
    let facts = RecordFacts::read(body);
    if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() {
        // Not JSON: nothing is read, so the record claims no one and is quarantined.
        assert_eq!(format!("{facts:?}"), format!("{:?}", RecordFacts::default()), "facts read from non-JSON");
        return;
    }
    // JSON, but maybe not a tree `Value` holds (a number past f64's range is still JSON to the
    // fields the reader skips: fuzz/regressions/records/).
    let Ok(tree) = serde_json::from_str::<serde_json::Value>(body) else { return };
    // `claims` is exact: the claimed device and user, and nothing else.
    let actor = tree.get("actor");
    let claimed = actor.and_then(|a| Some((a.get("device")?.as_str()?, a.get("user")?.as_str()?)));
    if let Some((device, user)) = claimed {
        assert!(!facts.claims(&format!("{device}\u{0}"), user), "claims another device");
        assert!(!facts.claims(device, &format!("{user}\u{0}")), "claims another user");
    }
    // A check-in's facts: its clock, and the district day it falls on (`RecordFacts::check_in`).
    if tree.get("type").and_then(|t| t.as_str()) == Some("check_in") {
        if let Some(clock) = tree.get("clock").and_then(|c| serde_json::from_value::<ClockStamp>(c.clone()).ok()) {
            let _ = calendar().day_of(clock.estimated_ms());
        }
    }
}

fn calendar() -> &'static DistrictCalendar {
    static CALENDAR: std::sync::OnceLock<DistrictCalendar> = std::sync::OnceLock::new();
    CALENDAR.get_or_init(DistrictCalendar::default)
}

/// Reported, unfixed bugs that panic (fuzz/README.md), by where they panic or what they say: a
/// file of a dependency, or an assertion message of this module. Empty: every panic found so far
/// is fixed or refused before it is reached (the fixes are listed in fuzz/README.md).
pub const OPEN_PANICS: &[&str] = &[];

/// Runs `f`. In a fuzzing campaign (feature `fuzz-campaign`, which fuzz/Cargo.toml turns on) a
/// panic listed in [`OPEN_PANICS`] is swallowed, so the fuzzer keeps looking for new bugs
/// instead of finding the same one in most runs; any other panic still aborts the run. The
/// stable replay has no such feature: it runs every `open-…` regression and requires that it
/// still fails.
#[cfg(feature = "fuzz-campaign")]
fn past_open_panics(f: impl FnOnce()) {
    use std::cell::Cell;
    thread_local!(static OPEN: Cell<bool> = const { Cell::new(false) });
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // libFuzzer's hook (installed first) reports the panic and aborts: keep it for the rest.
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or("");
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if OPEN_PANICS.iter().any(|p| file.contains(p) || message.contains(p)) {
                OPEN.with(|o| o.set(true));
            } else {
                next(info)
            }
        }));
    });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    // Only an open bug unwinds this far: libFuzzer's hook aborted on any other panic.
    assert!(!caught || OPEN.with(|o| o.replace(false)), "a panic that is not an open bug unwound");
}

#[cfg(not(feature = "fuzz-campaign"))]
fn past_open_panics(f: impl FnOnce()) {
    f()
}

/// A case id for changes that do not name their document.
const ANY_CASE_ID: &str = "01a22be4-943d-71e0-ad1d-9988f9baf333";

/// Automerge's chunk magic and the type of an uncompressed change chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_CHANGE: u8 = 1;

/// `data` with the checksum of its uncompressed change chunk made right (the first four bytes of
/// the SHA-256 of chunk type, length and body), or None when it is not one or its checksum is
/// right already. Nothing is parsed.
pub fn with_valid_checksum(data: &[u8]) -> Option<Vec<u8>> {
    if data.get(..4) != Some(&MAGIC[..]) || data.get(8) != Some(&CHUNK_CHANGE) {
        return None;
    }
    let mut rest = &data[9..];
    let len = leb128::read::unsigned(&mut rest).ok()?;
    let body = rest.get(..usize::try_from(len).ok()?)?;
    let mut header = vec![CHUNK_CHANGE];
    leb128::write::unsigned(&mut header, len).ok()?;
    let hash = Sha256::new().chain_update(&header).chain_update(body).finalize();
    if data[4..8] == hash[..4] {
        return None;
    }
    let mut fixed = data.to_vec();
    fixed[4..8].copy_from_slice(&hash[..4]);
    Some(fixed)
}
