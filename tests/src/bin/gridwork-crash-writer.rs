//! A child process for the crash test: writes to a store as fast as it can and prints a line
//! after every action the store acknowledged, until it is killed.
//!
//! Usage: gridwork-crash-writer DIR SEED

use std::io::Write;

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::doc::CasePatch;
use gridwork_core::model::lifecycle::EventKind;
use gridwork_tests::{district, identity, open_device, random_case, Rng};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(seed)) = (args.next(), args.next().and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("usage: gridwork-crash-writer DIR SEED");
        std::process::exit(2);
    };
    let catalog = district(4);
    let store = match open_device(std::path::Path::new(&dir), identity("crash-w1", Role::Worker, None), &catalog, None)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let photo = camera_like_jpeg(800, 600, &ExifSpec::default(), seed);
    let mut rng = Rng::new(seed);
    let mut cases = vec![];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0u64.. {
        let line = match (i % 4, cases.last()) {
            (1, Some(id)) => {
                let n = i;
                store
                    .record_event(id, EventKind::Note { text: format!("note {n}") })
                    .map(|_| format!("ACK note {id} {n}"))
            }
            (2, Some(id)) => store.attach_photo(id, &photo).map(|e| format!("ACK photo {id} {}", e.sha256)),
            (3, Some(id)) => store
                .edit_case(id, CasePatch { title: Some(format!("title {i}")), ..Default::default() })
                .map(|_| format!("ACK title {id} title {i}")),
            _ => {
                let grid = rng.below(4);
                let mut case = random_case(&mut rng, &catalog, grid, 0);
                if i % 8 == 0 {
                    case.photos = vec![photo.clone()];
                }
                store.capture_case(case).map(|s| {
                    cases.push(s.id);
                    format!("ACK case {}", s.id)
                })
            }
        };
        match line {
            // Only after the call returned (the transaction committed) is the action reported.
            Ok(l) => {
                if writeln!(out, "{l}").and_then(|_| out.flush()).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("action failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
