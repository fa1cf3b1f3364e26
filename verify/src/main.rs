//! `gridwork-verify BUNDLE`: checks a case's evidence bundle (written by
//! `gridwork-sync-server admin export-case` or the console) with no server and no network, and
//! prints who did what, when, from which device, and whether anything was altered.
//!
//! Exit status: 0 verified, 1 something does not verify (each problem says where), 2 the file
//! cannot be read. The checks are `gridwork_model::bundle::verify`, the code the server's tests
//! run too; this binary only reads the file and prints.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: gridwork-verify BUNDLE");
        return ExitCode::from(2);
    };
    let file = match std::fs::read(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gridwork-verify: cannot read {}: {e}", path.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let report = gridwork_model::bundle::verify(&file);
    println!("case {}", if report.case_code.is_empty() { "?" } else { &report.case_code });
    println!("\ntimeline (district time, who, role, device):");
    for line in &report.timeline {
        println!("  {line}");
    }
    if !report.photos.is_empty() {
        println!("\nphotos:");
        for line in &report.photos {
            println!("  {line}");
        }
    }
    if !report.notes.is_empty() {
        println!("\nnotes:");
        for line in &report.notes {
            println!("  {line}");
        }
    }
    if report.verified() {
        println!("\nVERIFIED: every change and photo is as its device signed it, and the file is as exported");
        ExitCode::SUCCESS
    } else {
        println!("\nNOT VERIFIED:");
        for line in &report.problems {
            println!("  {line}");
        }
        ExitCode::from(1)
    }
}
