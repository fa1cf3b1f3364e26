//! Kill a writing process with SIGKILL at random moments and reopen its store: every action the
//! store acknowledged is there, and nothing is half there.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::store::{CaseQuery, OutboxKind};
use gridwork_tests::{district, identity, open_device, Rng};

#[derive(Default)]
struct Acked {
    cases: HashSet<CaseId>,
    notes: HashMap<CaseId, HashSet<String>>,
    photos: HashMap<CaseId, HashSet<String>>,
    titles: HashMap<CaseId, String>,
}

fn parse(line: &str, acked: &mut Acked) {
    let parts: Vec<&str> = line.split(' ').collect();
    let id = |s: &str| CaseId::parse(s).expect("case id");
    match parts.as_slice() {
        ["ACK", "case", c] => {
            acked.cases.insert(id(c));
        }
        ["ACK", "note", c, n] => {
            acked.notes.entry(id(c)).or_default().insert(format!("note {n}"));
        }
        ["ACK", "photo", c, sha] => {
            acked.photos.entry(id(c)).or_default().insert(sha.to_string());
        }
        ["ACK", "title", c, "title", n] => {
            acked.titles.insert(id(c), format!("title {n}"));
        }
        _ => panic!("unexpected line {line:?}"),
    }
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_action_and_leaves_no_half_action() {
    let seed = std::env::var("GRIDWORK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("crash test seed {seed} (replay with GRIDWORK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();

    for round in 0..4 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridwork-crash-writer"))
            .arg(dir.path())
            .arg((seed + round).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it write for a random while (after at least a few actions), then SIGKILL.
        let target = 10 + rng.below(40);
        let start = Instant::now();
        let mut lines = 0;
        while lines < target && start.elapsed() < Duration::from_secs(60) {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                parse(&l, &mut acked);
                lines += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(15) as u64));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the writer was killed, not finished");
        reader.join().expect("reader");
        // Lines printed before the kill still count: they were acknowledged.
        while let Ok(l) = rx.try_recv() {
            parse(&l, &mut acked);
        }
        assert!(lines >= 10, "round {round}: the writer produced only {lines} actions");
    }

    let store = open_device(dir.path(), identity("crash-w1", Role::Worker, None), &district(4), None).expect("reopen");
    let listed = store.list_cases(&CaseQuery { limit: 500, ..Default::default() }).expect("list");
    let indexed: HashSet<CaseId> = listed.items.iter().map(|c| c.id).collect();
    let documents: HashSet<CaseId> = store.document_ids().expect("ids").into_iter().collect();
    assert_eq!(indexed, documents, "every document has its index row and no index row lacks its document");
    for id in &acked.cases {
        assert!(documents.contains(id), "acknowledged case {id} was lost");
    }

    // Outbox: exactly one entry per change of every document (all local, none acknowledged).
    let outbox = store.outbox_page(usize::MAX).expect("outbox");
    let mut per_doc: HashMap<String, usize> = HashMap::new();
    for item in &outbox {
        assert_eq!(item.kind, OutboxKind::Change);
        *per_doc.entry(item.doc_id.clone().expect("doc id")).or_default() += 1;
    }
    for id in &documents {
        let detail = store.get_case(id).expect("every stored case opens");
        let changes = store.export_changes(id).expect("changes").len();
        assert_eq!(
            per_doc.get(&id.to_string()).copied().unwrap_or(0),
            changes,
            "case {id}: outbox and document disagree"
        );
        for note in acked.notes.get(id).into_iter().flatten() {
            assert!(
                detail
                    .case
                    .timeline
                    .entries
                    .iter()
                    .any(|e| matches!(&e.event.kind, EventKind::Note { text } if text == note)),
                "acknowledged {note} on {id} was lost"
            );
        }
        for sha in acked.photos.get(id).into_iter().flatten() {
            assert!(detail.case.evidence.iter().any(|e| &e.sha256 == sha), "acknowledged photo on {id} was lost");
        }
        // Every photo a case references can be read back: file before transaction.
        for ev in &detail.case.evidence {
            store.read_evidence(&ev.sha256).expect("referenced photo file is whole");
        }
        if let Some(title) = acked.titles.get(id) {
            // A later unacknowledged edit may have landed too, but never an older value.
            let n: u64 = title.trim_start_matches("title ").parse().expect("n");
            let got: u64 = detail.case.title.value.trim_start_matches("title ").parse().unwrap_or(0);
            assert!(got >= n, "case {id}: acknowledged title {n} replaced by older {got}");
        }
    }
    eprintln!(
        "acknowledged {} cases across 4 kills; {} documents, {} outbox entries",
        acked.cases.len(),
        documents.len(),
        outbox.len()
    );
}
