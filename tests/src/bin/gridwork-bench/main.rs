//! gridwork-bench: Gridwork's benchmarks. Each suite prints one JSON object per line.
//!
//!   gridwork-bench device [--cases N] [--photo PATH] [--photo-runs N]
//!   gridwork-bench device --year [--weeks 52] [--own-cases 30] [--others-cases 70] [--checkins 240]
//!                               [--case-photos 15] [--checkin-photos 5]
//!   gridwork-bench idle-sync [--cases N]
//!   gridwork-bench ffi [--captures 200] [--warmup 50]
//!   gridwork-bench weak-link [--rate-bps 64000] [--rtt-ms 500] [--cut-every-s 30]
//!   gridwork-bench chaos [--seed 1] [--schedules 100] [--phones 6] [--rounds 8] [--server-kills 1]
//!   gridwork-bench console [--cases 100000] [--grids 100] [--samples 300]
//!   gridwork-bench storm [--devices 5000] [--cases 20] [--checkins 50] [--concurrency 32] [--phones-dir /dev/shm]
//!   gridwork-bench abuse [--seconds 30] [--quiet-seconds 8] [--honest 8] [--think-ms 200] [--only KIND,...] [--threads N]
//!
//! Benchmarks are not tests: nothing here asserts a timing. Quote medians and ratios measured in
//! the same run; this machine is shared.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use gridwork_core::clock::FixedClock;
use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::evidence::{process_photo, STORED_LONG_EDGE, STORED_QUALITY, THUMB_LONG_EDGE};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::{CategoryId, GridId};
use gridwork_core::model::lifecycle::Status;
use gridwork_core::store::{CaseQuery, SortOrder};
use gridwork_tests::{district, identity, open_device, random_case, Rng};

mod abuse;
mod chaos;
mod console;
mod ffi;
mod storm;
mod weak_link;
mod year;

#[allow(unsafe_code)]
mod counting_alloc {
    //! Counts live heap bytes and their peak, so the photo pipeline's memory is measured
    //! exactly rather than guessed from RSS. Wrapping the allocator needs `unsafe`.
    //!
    //! Underneath is the server's allocator, mimalloc (ADR 14): the storm's server child runs
    //! from this binary and must run what `gridwork-sync-server serve` runs, and it stops the
    //! counting (shared counters every thread updates on every allocation would be measured as
    //! the server's own cost).
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use mimalloc::MiMalloc;

    pub static CURRENT: AtomicUsize = AtomicUsize::new(0);
    pub static PEAK: AtomicUsize = AtomicUsize::new(0);
    static COUNTING: AtomicBool = AtomicBool::new(true);

    pub struct Counting;

    /// Stops counting for the rest of the process (the counters are not read after).
    pub fn stop() {
        COUNTING.store(false, Ordering::Relaxed);
    }

    // SAFETY: every call is forwarded unchanged to mimalloc; only counters are added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { MiMalloc.alloc(layout) };
            if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
                let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { MiMalloc.dealloc(ptr, layout) };
            if COUNTING.load(Ordering::Relaxed) {
                CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
            if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
                if new_size >= layout.size() {
                    let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                    PEAK.fetch_max(now, Ordering::Relaxed);
                } else {
                    CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
                }
            }
            p
        }
    }

    /// Starts a measurement; returns the baseline.
    pub fn reset() -> usize {
        let now = CURRENT.load(Ordering::Relaxed);
        PEAK.store(now, Ordering::Relaxed);
        now
    }

    pub fn peak_since(baseline: usize) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
    }
}

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
}

fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(|a, b| a.total_cmp(b));
    Stats { n: samples.len(), p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn line(name: &str, s: &Stats, extra: &[(&str, serde_json::Value)]) {
    let mut obj = serde_json::json!({ "bench": name, "n": s.n, "p50_ms": round3(s.p50), "p99_ms": round3(s.p99) });
    if let Some(map) = obj.as_object_mut() {
        for (k, v) in extra {
            map.insert((*k).to_owned(), v.clone());
        }
    }
    println!("{obj}");
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn progress(msg: &str) {
    eprintln!("gridwork-bench: {msg}");
}

struct Args {
    cases: usize,
    photo: Option<PathBuf>,
    photo_runs: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { cases: 10_000, photo: None, photo_runs: 15 };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--cases" => a.cases = value()?.parse().map_err(|_| "--cases takes a number".to_owned())?,
            "--photo" => a.photo = Some(PathBuf::from(value()?)),
            "--photo-runs" => a.photo_runs = value()?.parse().map_err(|_| "--photo-runs takes a number".to_owned())?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn device(args: Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let catalog = district(100);
    let now = 1_795_658_400_000;
    let clock = Arc::new(FixedClock::new(now));
    let who = identity("bench-w1", Role::Worker, None);
    let store = open_device(dir.path(), who.clone(), &catalog, Some(clock.clone())).map_err(|e| e.to_string())?;

    // capture_case: document + index + outbox in one transaction, encrypted, synchronous=FULL.
    progress(&format!("capturing {} cases", args.cases));
    let mut rng = Rng::new(42);
    let mut samples = Vec::with_capacity(args.cases);
    for i in 0..args.cases {
        clock.advance(1_000);
        let grid = rng.below(100);
        let case = random_case(&mut rng, &catalog, grid, now);
        let t = Instant::now();
        store.capture_case(case).map_err(|e| e.to_string())?;
        samples.push(ms_since(t));
        if (i + 1) % 2_000 == 0 {
            progress(&format!("  {} / {}", i + 1, args.cases));
        }
    }
    line("capture_case", &stats(samples), &[("encrypted", true.into())]);

    // list_cases: a page of 50 with filters, rotating through the shapes the app uses.
    progress("listing");
    let shape_names =
        ["status_grid", "category_by_deadline", "text_漏水", "assigned_to_me", "overdue", "all_by_updated"];
    let shapes: Vec<CaseQuery> = vec![
        CaseQuery { statuses: vec![Status::Reported], grid: Some(GridId::from("g7")), limit: 50, ..Default::default() },
        CaseQuery {
            category: Some(CategoryId::from("hazard")),
            sort: SortOrder::Deadline,
            limit: 50,
            ..Default::default()
        },
        CaseQuery { text: Some("漏水".into()), limit: 50, ..Default::default() },
        CaseQuery { assigned_to_me: true, limit: 50, ..Default::default() },
        CaseQuery { overdue: true, limit: 50, ..Default::default() },
        CaseQuery { limit: 50, ..Default::default() },
    ];
    let mut samples = vec![];
    let mut by_shape: Vec<Vec<f64>> = vec![vec![]; shapes.len()];
    for round in 0..100 {
        for (si, q) in shapes.iter().enumerate() {
            let mut q = q.clone();
            // Second pages too: keyset paging must cost the same as the first page.
            if round % 2 == 1 {
                q.after = store.list_cases(&q).map_err(|e| e.to_string())?.next;
            }
            let t = Instant::now();
            let page = store.list_cases(&q).map_err(|e| e.to_string())?;
            let ms = ms_since(t);
            samples.push(ms);
            by_shape[si].push(ms);
            std::hint::black_box(page);
        }
    }
    let p99_by_shape: serde_json::Map<String, serde_json::Value> = shape_names
        .iter()
        .zip(by_shape)
        .map(|(name, v)| {
            let st = stats(v);
            ((*name).to_owned(), serde_json::json!([round3(st.p50), round3(st.p99)]))
        })
        .collect();
    line(
        "list_cases",
        &stats(samples),
        &[("cases", args.cases.into()), ("page", 50.into()), ("p50_p99_ms_by_shape", p99_by_shape.into())],
    );

    // open_store: a store of N cases, reopened.
    progress("reopening");
    drop(store);
    let mut samples = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let s = open_device(dir.path(), who.clone(), &catalog, Some(clock.clone())).map_err(|e| e.to_string())?;
        samples.push(ms_since(t));
        drop(s);
    }
    line("open_store", &stats(samples), &[("cases", args.cases.into())]);

    photo_pipeline(&args)
}

/// The alternatives measured against the chosen pipeline, doing the same work: stored JPEG at
/// 1600 px quality 80 plus a 320 px thumbnail.
fn alternative(name: &str, original: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use fast_image_resize as fir;
    let fit = |w: u32, h: u32, edge: u32| {
        let s = f64::from(edge) / f64::from(w.max(h));
        (((f64::from(w) * s).round() as u32).max(1), ((f64::from(h) * s).round() as u32).max(1))
    };
    match name {
        // image's decoder (zune-jpeg, full size) + fast_image_resize + jpeg-encoder.
        "full_decode_fir" => {
            let img = image::load_from_memory(original).map_err(|e| e.to_string())?.into_rgb8();
            let (w, h) = (img.width(), img.height());
            let src = fir::images::Image::from_vec_u8(w, h, img.into_raw(), fir::PixelType::U8x3)
                .map_err(|e| e.to_string())?;
            let (tw, th) = fit(w, h, STORED_LONG_EDGE);
            let mut dst = fir::images::Image::new(tw, th, fir::PixelType::U8x3);
            let opts = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
            let mut resizer = fir::Resizer::new();
            resizer.resize(&src, &mut dst, &opts).map_err(|e| e.to_string())?;
            let (thw, thh) = fit(tw, th, THUMB_LONG_EDGE);
            let mut thumb = fir::images::Image::new(thw, thh, fir::PixelType::U8x3);
            resizer.resize(&dst, &mut thumb, &opts).map_err(|e| e.to_string())?;
            let enc = |px: &[u8], w: u32, h: u32, q: u8| -> Result<Vec<u8>, String> {
                let mut out = vec![];
                jpeg_encoder::Encoder::new(&mut out, q)
                    .encode(px, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            };
            Ok((enc(dst.buffer(), tw, th, STORED_QUALITY)?, enc(thumb.buffer(), thw, thh, 70)?))
        }
        // The image crate's default path: decode, resize (Lanczos3), its own JPEG encoder.
        _ => {
            let img = image::load_from_memory(original).map_err(|e| e.to_string())?;
            let stored = img.resize(STORED_LONG_EDGE, STORED_LONG_EDGE, image::imageops::FilterType::Lanczos3);
            let thumb = stored.resize(THUMB_LONG_EDGE, THUMB_LONG_EDGE, image::imageops::FilterType::Lanczos3);
            let enc = |i: &image::DynamicImage, q: u8| -> Result<Vec<u8>, String> {
                let mut out = vec![];
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                    .encode_image(i)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            };
            Ok((enc(&stored, STORED_QUALITY)?, enc(&thumb, 70)?))
        }
    }
}

fn photo_pipeline(args: &Args) -> Result<(), String> {
    let (original, input) = match &args.photo {
        Some(p) => {
            (std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?, p.display().to_string())
        }
        None => {
            progress("generating a 12-megapixel camera-like JPEG");
            let spec = ExifSpec {
                orientation: Some(1),
                time: Some("2026:11:26 10:00:00".into()),
                gps: Some((31.2, 121.4)),
                ..Default::default()
            };
            (camera_like_jpeg(4000, 3000, &spec, 12), "generated 4000x3000".to_owned())
        }
    };
    progress(&format!("photo pipeline on {input} ({} KB), {} runs per path", original.len() / 1024, args.photo_runs));
    let paths = ["dct_scaled", "full_decode_fir", "image_default"];
    let mut samples: Vec<Vec<f64>> = vec![vec![]; paths.len()];
    let mut peak = 0usize;
    // Warm up each path once, then interleave runs so machine noise hits every path alike.
    process_photo(&original).map_err(|e| e.to_string())?;
    for run in 0..args.photo_runs {
        for (i, path) in paths.iter().enumerate() {
            // The slow default path needs fewer runs to give a stable median.
            if i == 2 && run >= args.photo_runs.div_ceil(3) {
                continue;
            }
            let baseline = counting_alloc::reset();
            let t = Instant::now();
            let out = if i == 0 {
                process_photo(&original).map(|p| p.stored.len()).map_err(|e| e.to_string())?
            } else {
                alternative(path, &original)?.0.len()
            };
            samples[i].push(ms_since(t));
            if i == 0 {
                peak = peak.max(counting_alloc::peak_since(baseline));
            }
            std::hint::black_box(out);
        }
    }
    let stats: Vec<Stats> = samples.into_iter().map(stats).collect();
    let best = stats.iter().map(|s| s.p50).fold(f64::INFINITY, f64::min);
    line(
        "photo_pipeline",
        &stats[0],
        &[
            ("path", paths[0].into()),
            ("peak_mb", round3(peak as f64 / (1024.0 * 1024.0)).into()),
            ("ratio_to_best", round3(stats[0].p50 / best).into()),
            ("input", input.clone().into()),
        ],
    );
    for (i, path) in paths.iter().enumerate().skip(1) {
        line(
            "photo_pipeline_alternative",
            &stats[i],
            &[("path", (*path).into()), ("ratio_to_best", round3(stats[i].p50 / best).into())],
        );
    }
    Ok(())
}

/// One sync of a device holding N documents when nothing is new: round trips and body bytes.
fn idle_sync(args: Args) -> Result<(), String> {
    use gridwork_sync_server::{SqliteStore, SyncStore};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let catalog = district(4);
    let server = Arc::new(SqliteStore::open(&dir.path().join("server")).map_err(|e| e.to_string())?);
    server.import_catalog(&catalog).map_err(|e| e.to_string())?;
    server.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).map_err(|e| e.to_string())?;
    let running =
        gridwork_sync_server::start(server.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().map_err(|_| "addr")?)
            .map_err(|e| e.to_string())?;
    let (_, code) = server.enrol_device("w1", 0).map_err(|e| e.to_string())?;
    let e = gridwork_core::sync::enrol(&running.url(), &code, None, "0.1.0").map_err(|e| e.to_string())?;
    let store = open_device(&dir.path().join("phone"), gridwork_tests::identity_from_enrolment(&e), &catalog, None)
        .map_err(|e| e.to_string())?;
    progress(&format!("capturing {} cases on the device", args.cases));
    let mut rng = Rng::new(7);
    for i in 0..args.cases {
        store.capture_case(random_case(&mut rng, &catalog, 0, 0)).map_err(|e| e.to_string())?;
        if (i + 1) % 2_000 == 0 {
            progress(&format!("  {} / {}", i + 1, args.cases));
        }
    }
    let config = gridwork_core::sync::SyncConfig::new(running.url(), e.token);
    progress("first sync (pushes everything)");
    let first = store.sync(&config, &mut |_| {}).map_err(|e| e.to_string())?;
    progress(&format!("  {} round trips, {} KB up", first.round_trips, first.bytes_up / 1024));
    let mut samples = vec![];
    let mut last = None;
    for _ in 0..50 {
        let t = Instant::now();
        let r = store.sync(&config, &mut |_| {}).map_err(|e| e.to_string())?;
        samples.push(ms_since(t));
        last = Some(r);
    }
    let r = last.ok_or("no sync ran")?;
    line(
        "idle_sync",
        &stats(samples),
        &[
            ("docs", store.document_ids().map_err(|e| e.to_string())?.len().into()),
            ("round_trips", r.round_trips.into()),
            ("body_bytes", (r.bytes_up + r.bytes_down).into()),
        ],
    );
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let suite = args.next().unwrap_or_default();
    let result = match suite.as_str() {
        "device" => {
            let args: Vec<String> = args.collect();
            if args.iter().any(|a| a == "--year") {
                year::parse(args.into_iter()).and_then(year::run)
            } else {
                parse_args(args.into_iter()).and_then(device)
            }
        }
        "device-year-phone" => year::phone_child(args),
        "idle-sync" => parse_args(args).and_then(idle_sync),
        "ffi" => ffi::parse(args).and_then(ffi::run),
        "console" => console::parse(args).and_then(console::run),
        "weak-link" => weak_link::parse(args).and_then(weak_link::run),
        "chaos" => chaos::parse(args).and_then(chaos::run),
        "chaos-phone" => gridwork_tests::chaos::phone_child(args),
        "storm" => storm::parse(args).and_then(|a| storm::run(a, &|v| println!("{v}"))),
        "abuse" => abuse::parse(args).and_then(|a| abuse::run(a, &|v| println!("{v}"))),
        "storm-server" => match args.next() {
            Some(dir) => {
                counting_alloc::stop();
                gridwork_sync_server::allocator::return_freed_memory_at_once();
                let url = args.next();
                storm::serve_child(&dir, url.as_deref())
            }
            None => Err("storm-server DIR [POSTGRES_URL]".to_owned()),
        },
        _ => Err("usage: gridwork-bench device|idle-sync [--cases N] [--photo PATH] [--photo-runs N]
       gridwork-bench device --year [--weeks N] [--own-cases N] [--others-cases N] [--checkins N] [--case-photos N] [--checkin-photos N]
       gridwork-bench ffi [--captures N] [--warmup N]
       gridwork-bench weak-link [--rate-bps N] [--rtt-ms N] [--cut-every-s N]
       gridwork-bench chaos [--seed S] [--schedules N] [--phones N] [--rounds N] [--server-kills N] [--process-phones N]
       gridwork-bench storm [--devices N] [--cases N] [--checkins N] [--concurrency N] [--store sqlite|postgres] [--instances N] [--kill-after-s S] [--unsigned]
       gridwork-bench abuse [--seconds N] [--quiet-seconds N] [--honest N] [--think-ms N] [--only KIND,...] [--threads N]
       gridwork-bench console [--cases 100000] [--grids 100] [--samples 300]"
            .to_owned()),
    };
    if let Err(e) = result {
        eprintln!("gridwork-bench: {e}");
        std::process::exit(2);
    }
}
