//! A few seeds of the chaos harness (`gridwork_tests::chaos`, `gridwork-bench chaos` for a full
//! run): phones sync through a fault-injecting proxy while the server process and a phone process
//! are killed and restarted; afterwards nothing a phone acknowledged is lost or duplicated and every replica
//! holds the server's heads. A failing seed is printed with its first divergence; replay it with
//! `gridwork-bench chaos --seed S`.

use gridwork_tests::chaos::{run, ChaosConfig};

#[test]
fn seeded_network_faults_and_server_kills_lose_and_duplicate_nothing() {
    let mut failures = vec![];
    let mut faults_seen = std::collections::BTreeMap::new();
    let mut phone_kills = 0;
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ChaosConfig {
            seed,
            phones: 4,
            rounds: 6,
            server_kills: 2,
            process_phones: 1,
            server_exe: env!("CARGO_BIN_EXE_gridwork-bench").into(),
        };
        let report = run(&cfg, dir.path()).unwrap_or_else(|e| panic!("seed {seed}: the harness failed: {e}"));
        assert_eq!(report.server_kills, 2, "seed {seed}");
        phone_kills += report.phone_kills;
        assert!(report.photos_checked > 0, "seed {seed}: no photo was checked");
        for (k, v) in &report.faults {
            *faults_seen.entry(*k).or_insert(0u64) += v;
        }
        if !report.converged || report.lost > 0 || report.duplicated > 0 {
            failures.push(format!(
                "seed {seed}: lost {}, duplicated {}, converged {}: {}",
                report.lost,
                report.duplicated,
                report.converged,
                report.first_divergence.unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // One phone of each schedule ran as a process and was killed at least at the end.
    assert!(phone_kills >= 3, "{phone_kills} phone kills");
    // The faults really happened: every kind was drawn at least once over the seeds.
    for kind in ["drop_request", "drop_response", "cut_response", "dup", "delay"] {
        assert!(faults_seen.get(kind).copied().unwrap_or(0) > 0, "no {kind} fault in {faults_seen:?}");
    }
}
