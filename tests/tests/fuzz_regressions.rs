//! Replays the fuzz corpora on stable: every file under `fuzz/seeds/NAME/` and
//! `fuzz/regressions/NAME/` goes through `gridwork_tests::fuzz_targets::NAME`, the function the
//! cargo-fuzz target `fuzz/fuzz_targets/NAME.rs` runs. A target whose directories or target file
//! are missing fails the test, so no target is dropped without someone noticing.

use std::path::{Path, PathBuf};

use gridwork_tests::fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// Every file in `dir`, sorted; fails if `dir` is missing.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("read a directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_target_has_its_seeds_regressions_and_fuzz_target() {
    let fuzz = fuzz_dir();
    for (name, _) in TARGETS {
        assert!(
            !inputs(&fuzz.join("seeds").join(name)).is_empty(),
            "fuzz/seeds/{name}/ has no seed: run `cargo run -p gridwork-tests --example fuzz_seeds`"
        );
        inputs(&fuzz.join("regressions").join(name));
        let target = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(
            text.contains(&format!("fuzz_targets::{name}(")),
            "{} does not call fuzz_targets::{name}",
            target.display()
        );
    }
    // And no directory or target is left over from a target that is gone.
    for sub in ["seeds", "regressions"] {
        for dir in std::fs::read_dir(fuzz.join(sub)).expect("fuzz dir") {
            let name = dir.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(TARGETS.iter().any(|(n, _)| *n == name), "fuzz/{sub}/{name}/ belongs to no target in TARGETS");
        }
    }
}

/// Runs every input of every target; reports all that fail, not just the first.
///
/// A regression named `open-…` is a bug found and reported but not fixed yet (fuzz/README.md):
/// it must still fail, so that the fix is noticed and the file renamed to run as a plain
/// regression from then on.
#[test]
fn seeds_and_regressions_replay_without_a_panic() {
    let fuzz = fuzz_dir();
    let mut failed = vec![];
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for sub in ["seeds", "regressions"] {
            for path in inputs(&fuzz.join(sub).join(name)) {
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let open =
                    sub == "regressions" && path.file_name().is_some_and(|f| f.to_string_lossy().starts_with("open-"));
                replayed += 1;
                let panicked = std::panic::catch_unwind(|| target(&data)).is_err();
                match (panicked, open) {
                    (true, false) => failed.push(format!("{} panicked", path.display())),
                    (false, true) => failed.push(format!(
                        "{} no longer fails: its bug is fixed, so rename it without `open-`",
                        path.display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(failed.is_empty(), "{} of {replayed} inputs:\n{}", failed.len(), failed.join("\n"));
}
