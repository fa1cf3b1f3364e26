//! `gridwork-bench device --year`, shortened, so the benchmark keeps working between full runs
//! and its accounting stays true: every case, check-in and photo of the year is counted, the
//! offline week's work goes up in the first sync after it with nothing refused, and that sync
//! takes one request per page.

use std::process::Command;

#[test]
fn a_short_year_runs_and_its_figures_add_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwork-bench"))
        .args(["device", "--year", "--weeks", "3", "--own-cases", "4", "--others-cases", "6"])
        .args(["--checkins", "6", "--case-photos", "2", "--checkin-photos", "1"])
        .output()
        .expect("run gridwork-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gridwork-bench failed: {stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |name: &str| {
        lines.iter().find(|l| l["bench"] == name).unwrap_or_else(|| panic!("no {name} line in {lines:?}")).clone()
    };
    let sync = find("device_year_week_offline_sync");
    assert_eq!(sync["refused"], 0, "{sync}");
    // The offline week: 6 check-ins and 4 cases, one patrol started and finished, and the
    // follow-up visits made that week; 3 photos, each a file and a thumbnail (thumbnails of
    // synthetic pictures may coincide, and are then one file).
    assert!(sync["pushed"].as_u64().unwrap_or(0) >= 12, "{sync}");
    let uploaded = sync["photos_uploaded"].as_u64().unwrap_or(0);
    assert!((4..=6).contains(&uploaded), "{sync}");
    let (trips, pages) = (sync["round_trips"].as_u64().unwrap_or(0), sync["pages_at_least"].as_u64().unwrap_or(0));
    assert!(trips >= 1 && trips <= pages.max(1) + 1, "{trips} round trips for {pages} pages: {sync}");
    let store = find("device_year_store");
    assert_eq!(store["cases_seen"], 30, "{store}");
    assert_eq!(store["checkins"], 18, "{store}");
    assert_eq!(store["photos"], 9, "{store}");
    // Three weeks: nothing finished long enough ago to leave; every case is still held.
    assert_eq!(store["cases_held"], 30, "{store}");
    let files = store["photo_files"].as_u64().unwrap_or(0);
    assert!((10..=18).contains(&files), "9 photos and their thumbnails: {store}");
    for name in ["device_year_list", "device_year_search"] {
        assert_eq!(find(name)["n"], 500, "{name}");
    }
}
