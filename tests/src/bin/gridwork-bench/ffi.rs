//! `gridwork-bench ffi`: the cost of capturing a case through the Kotlin binding (JNA, the
//! generated code, the JVM) against the same call made in Rust, measured in the same run on
//! stores prepared the same way. Three lines: `ffi_capture` (a case with one camera-sized photo,
//! what the app does), `ffi_capture_text` (no photo, where the crossing's share is largest) and
//! `ffi_call` (a near-empty call: the crossing alone). A fourth, `ffi_photo_from_file`: a photo
//! the camera wrote to a file, handed over as a `ByteArray` or as its path — the JVM heap the
//! app allocates per capture and the process's peak memory each way.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_ffi::{Enrolment, GeoFix, GridworkStore, NewCase};
use gridwork_tests::{district, identity, open_device, DEMO_KEY};

use crate::{progress, round3};

pub struct Args {
    captures: usize,
    warmup: usize,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { captures: 200, warmup: 50 };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--captures" => a.captures = value()?.parse().map_err(|_| "--captures takes a number".to_owned())?,
            "--warmup" => a.warmup = value()?.parse().map_err(|_| "--warmup takes a number".to_owned())?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.captures == 0 {
        return Err("--captures must be at least 1".to_owned());
    }
    Ok(a)
}

const USER: &str = "w-bench";

/// A store with the district catalogue, as a phone has after its first sync.
fn prepare(dir: &Path) -> Result<(), String> {
    open_device(dir, identity(USER, Role::Worker, None), &district(4), None)
        .map(drop)
        .map_err(|e| format!("preparing {}: {e}", dir.display()))
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// The same calls as CaptureBench.kt, through gridwork-ffi's Rust API (no FFI crossing).
/// (capture without a photo, with one, a near-empty call) in ms.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

fn rust_round(dir: &Path, photo: &[u8], args: &Args) -> Result<Samples, String> {
    let enrolment = Enrolment {
        server: "http://127.0.0.1:1".into(),
        ca_fingerprint: None,
        device_id: format!("{USER}-phone"),
        device_code: "BENCH".into(),
        token: "t".into(),
        user: USER.into(),
        role: "worker".into(),
        department: None,
        alternates: vec![],
        // Unsigned, as the Kotlin side's enrolment: the two captures do the same work.
        device_key: None,
    };
    let store = GridworkStore::open(dir.display().to_string(), DEMO_KEY.to_vec(), enrolment)
        .map_err(|e| format!("opening the bench store: {e}"))?;
    let capture = |i: usize, photos: Vec<Vec<u8>>| -> Result<f64, String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let fix = GeoFix {
            lat: 31.2005,
            lon: 121.4005,
            accuracy_m: 8.0,
            provider: "gps".into(),
            mock: false,
            fix_time_ms: now_ms,
        };
        let start = Instant::now();
        store
            .capture_case(NewCase {
                title: format!("楼道堆物 {i}"),
                description: format!("三楼楼道堆满纸箱 {i}"),
                category_id: "hazard".into(),
                grid_id: Some("g0".into()),
                location: fix,
                photos,
            })
            .map_err(|e| format!("capture: {e}"))?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    for i in 0..args.warmup {
        capture(i, Vec::new())?;
    }
    let text = (0..args.captures).map(|i| capture(i, Vec::new())).collect::<Result<Vec<_>, _>>()?;
    for i in 0..args.warmup / 4 + 1 {
        capture(i, vec![photo.to_vec()])?;
    }
    let with_photo = (0..args.captures).map(|i| capture(i, vec![photo.to_vec()])).collect::<Result<Vec<_>, _>>()?;
    let mut call = Vec::with_capacity(args.captures);
    for _ in 0..args.captures {
        let start = Instant::now();
        store.outbox_len().map_err(|e| format!("outbox_len: {e}"))?;
        call.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((text, with_photo, call))
}

#[derive(serde::Deserialize)]
struct KotlinResult {
    text_p50_ms: f64,
    photo_p50_ms: f64,
    call_p50_ms: f64,
    /// The photo from the camera's file, read into a `ByteArray` by the app and passed …
    bytes_heap_per_capture: f64,
    bytes_peak_rss_mb: f64,
    bytes_p50_ms: f64,
    /// … or passed as its path (`capture_case_from_files`).
    file_heap_per_capture: f64,
    file_peak_rss_mb: f64,
    file_p50_ms: f64,
    rounds: usize,
}

fn kotlin_round(dir: &Path, photo_path: &Path, photo_12mp: &Path, args: &Args) -> Result<KotlinResult, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bindings/kotlin/bench.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(hex::encode(DEMO_KEY))
        .arg(USER)
        .arg(format!("{USER}-phone"))
        .arg(photo_path)
        .arg(args.warmup.to_string())
        .arg(args.captures.to_string())
        .arg(photo_12mp)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({}); its output is above", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("the Kotlin bench printed {last:?}: {e}"))
}

pub fn run(args: Args) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let (rust_dir, rust_dir2, kotlin_dir) =
        (tmp.path().join("rust"), tmp.path().join("rust2"), tmp.path().join("kotlin"));
    for d in [&rust_dir, &rust_dir2, &kotlin_dir] {
        prepare(d)?;
    }
    // A 12-megapixel phone photo takes ~1 s to process here; 1600×1200 keeps 200 runs short.
    let photo = camera_like_jpeg(1600, 1200, &ExifSpec::default(), 7);
    let photo_path = tmp.path().join("photo.jpg");
    std::fs::write(&photo_path, &photo).map_err(|e| format!("writing the photo: {e}"))?;
    // What a phone camera writes: 12 MP, for the file-or-bytes comparison (a few captures).
    let photo_12mp = camera_like_jpeg(4000, 3000, &ExifSpec::default(), 8);
    let photo_12mp_path = tmp.path().join("photo-12mp.jpg");
    std::fs::write(&photo_12mp_path, &photo_12mp).map_err(|e| format!("writing the photo: {e}"))?;

    // Rust, Kotlin, Rust again: the machine is shared, so Rust is measured on both sides of the
    // Kotlin run and its samples pooled.
    progress(&format!("rust: {} captures without and with a photo", args.captures));
    let (mut rust_text, mut rust_photo, mut rust_call) = rust_round(&rust_dir, &photo, &args)?;
    progress("kotlin: the same through the binding");
    let kotlin = kotlin_round(&kotlin_dir, &photo_path, &photo_12mp_path, &args)?;
    progress("rust: again");
    let (text2, photo2, call2) = rust_round(&rust_dir2, &photo, &args)?;
    rust_text.extend(text2);
    rust_photo.extend(photo2);
    rust_call.extend(call2);

    let (rust_text, rust_photo, rust_call) = (median(rust_text), median(rust_photo), median(rust_call));
    for (bench, rust, kotlin, extra) in [
        ("ffi_capture", rust_photo, kotlin.photo_p50_ms, Some(photo.len())),
        ("ffi_capture_text", rust_text, kotlin.text_p50_ms, None),
        // outbox_len: what one crossing costs when the Rust side does almost nothing.
        ("ffi_call", rust_call, kotlin.call_p50_ms, None),
    ] {
        let mut line = serde_json::json!({
            "bench": bench,
            "rust_p50_ms": round3(rust),
            "kotlin_p50_ms": round3(kotlin),
            "ratio": round3(kotlin / rust),
            "n": args.captures,
        });
        if let (Some(bytes), Some(map)) = (extra, line.as_object_mut()) {
            map.insert("photo_bytes".into(), bytes.into());
        }
        println!("{line}");
    }
    // The camera's file handed over both ways: the JVM heap the app allocates per capture and the
    // process's peak resident memory (JVM and native together) over the captures.
    println!(
        "{}",
        serde_json::json!({
            "bench": "ffi_photo_from_file",
            "photo_bytes": photo_12mp.len(),
            "megapixels": 12,
            "bytes_jvm_heap_per_capture_kb": round3(kotlin.bytes_heap_per_capture / 1024.0),
            "file_jvm_heap_per_capture_kb": round3(kotlin.file_heap_per_capture / 1024.0),
            "bytes_peak_rss_mb": round3(kotlin.bytes_peak_rss_mb),
            "file_peak_rss_mb": round3(kotlin.file_peak_rss_mb),
            "bytes_p50_ms": round3(kotlin.bytes_p50_ms),
            "file_p50_ms": round3(kotlin.file_p50_ms),
            "n": kotlin.rounds,
        })
    );
    Ok(())
}
