//! `gridwork-bench chaos`: many seeded schedules of `gridwork_tests::chaos` (network faults
//! through the proxy; server kills on timers, at named crash points and mid-backup, and a restore;
//! phone-process SIGKILLs; full disks; skewed clocks; a racing supervisor), one JSON line for the
//! whole run. `--seed S --schedules 1` replays one schedule; a failing schedule prints its seed
//! and first divergence. Full disks mount a tmpfs (root only): `--disk-mb 0` leaves them out.

use std::collections::BTreeMap;
use std::time::Instant;

use gridwork_tests::chaos::{run as run_schedule, ChaosConfig};

pub struct Args {
    seed: u64,
    schedules: u64,
    phones: usize,
    rounds: usize,
    server_kills: usize,
    process_phones: usize,
    disk_mb: u64,
    keep_failed: bool,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        seed: 1,
        schedules: 100,
        phones: 6,
        rounds: 8,
        server_kills: 1,
        process_phones: 2,
        disk_mb: 48,
        keep_failed: false,
    };
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} takes a number"))
        };
        match flag.as_str() {
            "--seed" => a.seed = num("--seed")?,
            "--schedules" => a.schedules = num("--schedules")?.max(1),
            "--phones" => a.phones = num("--phones")?.clamp(2, 64) as usize,
            "--rounds" => a.rounds = num("--rounds")?.clamp(1, 1000) as usize,
            "--server-kills" => a.server_kills = num("--server-kills")? as usize,
            "--process-phones" => a.process_phones = num("--process-phones")? as usize,
            "--disk-mb" => a.disk_mb = num("--disk-mb")?,
            "--keep-failed" => a.keep_failed = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

pub fn run(args: Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut kills, mut phone_kills, mut lost, mut duplicated, mut converged) = (0usize, 0usize, 0usize, 0usize, true);
    let (mut photos_checked, mut photos_bad) = (0usize, 0usize);
    let mut kills_at: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut phone_kills_at: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut tallies: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failing = vec![];
    for seed in args.seed..args.seed + args.schedules {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cfg = ChaosConfig {
            seed,
            phones: args.phones,
            rounds: args.rounds,
            server_kills: args.server_kills,
            process_phones: args.process_phones,
            server_exe: exe.clone(),
            disk_mb: args.disk_mb,
        };
        let r = run_schedule(&cfg, dir.path()).map_err(|e| format!("seed {seed}: {e}"))?;
        for (k, v) in r.faults {
            *faults.entry(k).or_default() += v;
        }
        kills += r.server_kills;
        for (k, v) in &r.kills_at {
            *kills_at.entry(k).or_default() += v;
        }
        for (k, v) in &r.phone_kills_at {
            *phone_kills_at.entry(k).or_default() += v;
        }
        for (k, v) in [
            ("disk_full_events", r.disk_full_events),
            ("disk_fills", r.disk_fills as u64),
            ("server_clock_steps", r.clock_steps as u64),
            ("backups", r.backups as u64),
            ("restores", r.restores as u64),
            ("restores_refused", r.restores_refused as u64),
            ("internal_errors", r.internal_errors),
            ("quarantined", r.quarantined),
            ("console_notes", r.console_notes as u64),
            ("console_rolled_back", r.console_rolled_back as u64),
            ("notes_checked", r.notes_checked as u64),
            ("checkins_checked", r.checkins_checked as u64),
            ("health_checks", r.health_checks as u64),
            ("health_failures", r.health_failures as u64),
        ] {
            *tallies.entry(k).or_default() += v;
        }
        phone_kills += r.phone_kills;
        photos_checked += r.photos_checked;
        photos_bad += r.photos_bad;
        lost += r.lost;
        duplicated += r.duplicated;
        if !r.converged {
            converged = false;
            eprintln!(
                "gridwork-bench: chaos: seed {seed} FAILED: lost {}, duplicated {}: {} (replay: gridwork-bench chaos --seed {seed} --schedules 1)",
                r.lost,
                r.duplicated,
                r.first_divergence.unwrap_or_default()
            );
            failing.push(seed);
            if args.keep_failed {
                // The server's and the phones' directories, for a post-mortem (`sqlite3`, or
                // the phone stores opened with the demo key).
                eprintln!("gridwork-bench: chaos: seed {seed}'s directories are kept in {}", dir.keep().display());
                continue;
            }
        }
        if (seed - args.seed + 1).is_multiple_of(10) {
            eprintln!("gridwork-bench: chaos: {} of {} schedules", seed - args.seed + 1, args.schedules);
        }
    }
    let mut line = serde_json::json!({
        "bench": "chaos",
        "schedules": args.schedules,
        "first_seed": args.seed,
        "phones": args.phones,
        "rounds": args.rounds,
        "faults": faults,
        "server_kills": kills,
        "server_kills_at": kills_at,
        "phone_kills": phone_kills,
        "phone_kills_at": phone_kills_at,
        "lost": lost,
        "duplicated": duplicated,
        "converged": converged,
        "photos_checked": photos_checked,
        "photos_bad": photos_bad,
        "failing_seeds": failing,
        "elapsed_s": crate::round3(started.elapsed().as_secs_f64()),
    });
    // The per-schedule tallies, summed, under their own names.
    if let Some(obj) = line.as_object_mut() {
        obj.extend(tallies.into_iter().map(|(k, v)| (k.to_owned(), v.into())));
    }
    println!("{line}");
    Ok(())
}
