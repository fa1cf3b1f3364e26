//! The evidence bundle: one file with a case's whole history, every signature, every signing
//! device's public key and the photos, which anyone can check without the server
//! (`gridwork-verify`, ADR 25).
//!
//! The file is the bundle as pretty JSON, a newline, and a digest line:
//! `gridwork-bundle-digest {"payload": SHA256, "sections": {NAME: SHA256, …}}` — the SHA-256 of
//! the JSON's bytes, and of each section's compact JSON (`case`, `devices`, `changes/N`,
//! `chains/DEVICE`, `photos/N`). The signatures say who made what and that it was not altered;
//! the digests say *where* anything else in the file changed after export.
//!
//! [`verify`] is the whole check, here so that the verifier, the server's tests and the console
//! run the same code.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::signing::{
    decode_b64, link_hash, sha256_hex, statement_for_digest, verify as verify_sig, ChainFlag, Link, LinkKind,
};

pub const BUNDLE_FORMAT: &str = "gridwork-evidence-bundle-v1";
const DIGEST_PREFIX: &str = "gridwork-bundle-digest ";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub case: BundleCase,
    /// Every device that made a change of the case, by id.
    pub devices: BTreeMap<String, BundleDevice>,
    /// The case's changes in the order the server stored them (each after what it builds on).
    pub changes: Vec<BundleChange>,
    /// For each signing device, its chain from the first to the last place holding a change of
    /// this case: the links between (other cases' changes, its records) prove nothing was taken
    /// out of its history.
    pub chains: BTreeMap<String, Vec<BundleLink>>,
    pub photos: Vec<BundlePhoto>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleCase {
    pub id: String,
    pub code: String,
    pub exported_ms: i64,
    /// Who exported it (an administrator's id, or `admin` for the command line).
    pub exported_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleDevice {
    pub user: String,
    pub code: String,
    /// Ed25519, base64 of 32 bytes; None for an app older than signing (its changes unsigned).
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleChange {
    pub hash: String,
    pub device: String,
    /// The Automerge change, base64.
    pub bytes: String,
    pub link: Option<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleLink {
    pub seq: u64,
    pub prev: String,
    pub sig: String,
    pub kind: LinkKind,
    pub key: String,
    /// SHA-256 of the item's bytes as sent (what the statement names).
    pub sha256: String,
    /// What the server flagged when it received the link.
    pub flag: Option<ChainFlag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlePhoto {
    pub sha256: String,
    /// The file, base64.
    pub bytes: String,
}

/// Writes the bundle's file: JSON, then the digest line.
pub fn write(bundle: &Bundle) -> Result<Vec<u8>, serde_json::Error> {
    let payload = serde_json::to_vec_pretty(bundle)?;
    let digest = serde_json::json!({ "payload": sha256_hex(&payload), "sections": sections(bundle)? });
    let mut out = payload;
    out.push(b'\n');
    out.extend_from_slice(DIGEST_PREFIX.as_bytes());
    out.extend_from_slice(&serde_json::to_vec(&digest)?);
    out.push(b'\n');
    Ok(out)
}

/// The case code a bundle file names (for its file name), without checking anything.
pub fn case_code(file: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        case: BundleCase,
    }
    let body = file.strip_suffix(b"\n").unwrap_or(file);
    let payload = &body[..body.iter().rposition(|b| *b == b'\n')?];
    serde_json::from_slice::<Head>(payload).ok().map(|h| h.case.code)
}

/// Each section's compact JSON, hashed.
fn sections(b: &Bundle) -> Result<BTreeMap<String, String>, serde_json::Error> {
    let h = |v: &dyn erased::Ser| v.digest();
    let mut out = BTreeMap::new();
    out.insert("case".to_owned(), h(&(&b.format, &b.case))?);
    out.insert("devices".to_owned(), h(&b.devices)?);
    for (i, c) in b.changes.iter().enumerate() {
        out.insert(format!("changes/{i}"), h(c)?);
    }
    for (d, links) in &b.chains {
        out.insert(format!("chains/{d}"), h(links)?);
    }
    for (i, p) in b.photos.iter().enumerate() {
        out.insert(format!("photos/{i}"), h(p)?);
    }
    Ok(out)
}

mod erased {
    /// A serializable value's compact JSON SHA-256 (object-safe, for a closure over sections).
    pub trait Ser {
        fn digest(&self) -> Result<String, serde_json::Error>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn digest(&self) -> Result<String, serde_json::Error> {
            Ok(super::sha256_hex(&serde_json::to_vec(self)?))
        }
    }
}

/// What checking a bundle found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub case_code: String,
    /// Who did what, when, from which device, and whether it verified: one line per event.
    pub timeline: Vec<String>,
    /// Per photo: its hash and whether it verified.
    pub photos: Vec<String>,
    /// Facts worth knowing that do not make the bundle fail (unsigned old apps, holes, forks the
    /// server flagged, photos not in the bundle).
    pub notes: Vec<String>,
    /// What failed, each naming where.
    pub problems: Vec<String>,
}

impl Report {
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a bundle file: every change is the bytes its hash names, every signature verifies with
/// its device's key, each device's chain runs unbroken across the case's changes, every photo is
/// the file its hash names and belongs to the case, and nothing else in the file changed after
/// export. Never panics on any input.
pub fn verify(file: &[u8]) -> Report {
    let mut r = Report::default();
    let body = file.strip_suffix(b"\n").unwrap_or(file);
    let Some(split) = body.iter().rposition(|b| *b == b'\n') else {
        r.problems.push("not a Gridwork evidence bundle: no digest line".into());
        return r;
    };
    let (payload, trailer) = (&body[..split], &body[split + 1..]);
    let digest: Option<serde_json::Value> = std::str::from_utf8(trailer)
        .ok()
        .and_then(|t| t.strip_prefix(DIGEST_PREFIX))
        .and_then(|t| serde_json::from_str(t).ok());
    let bundle: Bundle = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => {
            r.problems.push(format!("the bundle cannot be read at line {} column {}: {e}", e.line(), e.column()));
            return r;
        }
    };
    r.case_code = bundle.case.code.clone();
    if bundle.format != BUNDLE_FORMAT {
        r.problems.push(format!("format {:?}: this verifier reads {BUNDLE_FORMAT}", bundle.format));
    }
    let verified_changes = check_changes(&bundle, &mut r);
    check_chains(&bundle, &mut r);
    let case = rebuild(&bundle, &verified_changes, &mut r);
    check_photos(&bundle, case.as_ref(), &mut r);
    check_digests(&bundle, payload, digest.as_ref(), &mut r);
    r
}

/// How a change stands: verified (signed, signature good), unsigned (an old app), or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Verified,
    Unsigned,
    Failed,
}

fn check_changes(b: &Bundle, r: &mut Report) -> Vec<(automerge::Change, Standing)> {
    let mut out = vec![];
    for (i, c) in b.changes.iter().enumerate() {
        let at = format!("changes[{i}] ({})", short(&c.hash));
        let Some(bytes) = decode_b64(&c.bytes) else {
            r.problems.push(format!("{at}: its bytes are not base64"));
            continue;
        };
        let change = match crate::fence::fenced(|| automerge::Change::from_bytes(bytes.clone())) {
            Ok(Ok(ch)) => ch,
            _ => {
                r.problems.push(format!("{at}: its bytes are not an intact change (altered or damaged)"));
                continue;
            }
        };
        if change.hash().to_string() != c.hash {
            r.problems
                .push(format!("{at}: its bytes are change {}, not the one named", short(&change.hash().to_string())));
            out.push((change, Standing::Failed));
            continue;
        }
        let Some(device) = b.devices.get(&c.device) else {
            r.problems.push(format!("{at}: made by device {}, which the bundle does not describe", c.device));
            out.push((change, Standing::Failed));
            continue;
        };
        let standing = match (&device.public_key, &c.link) {
            (None, _) => Standing::Unsigned,
            (Some(_), None) => {
                r.problems.push(format!("{at}: unsigned, though device {} signs everything it makes", c.device));
                Standing::Failed
            }
            (Some(key), Some(link)) => {
                let st = crate::signing::statement(&c.device, link.seq, &link.prev, LinkKind::Change, &c.hash, &bytes);
                match verify_sig(key, &st, &link.sig) {
                    Ok(()) => {
                        let in_chain = b
                            .chains
                            .get(&c.device)
                            .is_some_and(|ls| ls.iter().any(|l| l.seq == link.seq && l.sig == link.sig));
                        if !in_chain {
                            r.problems.push(format!(
                                "{at}: its link (place {}) is missing from {}'s chain",
                                link.seq, c.device
                            ));
                        }
                        Standing::Verified
                    }
                    Err(e) => {
                        r.problems.push(format!("{at}: the signature of device {} does not hold: {e}", c.device));
                        Standing::Failed
                    }
                }
            }
        };
        if standing == Standing::Unsigned {
            r.notes.push(format!("{at}: unsigned (device {} runs an app older than signing)", c.device));
        }
        out.push((change, standing));
    }
    out
}

fn check_chains(b: &Bundle, r: &mut Report) {
    for (device, links) in &b.chains {
        let Some(key) = b.devices.get(device).and_then(|d| d.public_key.as_ref()) else {
            r.problems.push(format!("chains/{device}: a chain for a device without a public key"));
            continue;
        };
        let mut hashes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for l in links {
            let st = statement_for_digest(device, l.seq, &l.prev, l.kind, &l.key, &l.sha256);
            if let Err(e) = verify_sig(key, &st, &l.sig) {
                r.problems.push(format!("chains/{device} place {}: the signature does not hold: {e}", l.seq));
                continue;
            }
            hashes.entry(l.seq).or_default().push(link_hash(&st));
            if l.flag == Some(ChainFlag::Fork) {
                r.notes.push(format!(
                    "chains/{device} place {}: the server flagged a fork here (a cloned or restored phone)",
                    l.seq
                ));
            }
        }
        for l in links {
            if let Some(before) = l.seq.checked_sub(1).and_then(|s| hashes.get(&s)) {
                if !before.contains(&l.prev) && l.flag.is_none() {
                    r.problems.push(format!(
                        "chains/{device} place {}: does not follow place {} (the chain was altered)",
                        l.seq,
                        l.seq - 1
                    ));
                }
            }
        }
        let (Some(first), Some(last)) = (hashes.keys().next(), hashes.keys().next_back()) else { continue };
        let missing: Vec<u64> = (*first..=*last).filter(|s| !hashes.contains_key(s)).collect();
        if !missing.is_empty() {
            r.notes.push(format!(
                "chains/{device}: {} place(s) between {first} and {last} the server never received ({})",
                missing.len(),
                missing.iter().take(5).map(u64::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
    }
}

/// The case rebuilt from its changes, and the timeline: each event with the change that wrote it.
fn rebuild(b: &Bundle, changes: &[(automerge::Change, Standing)], r: &mut Report) -> Option<crate::doc::CaseDoc> {
    let mut doc = automerge::Automerge::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut standing_of_event: BTreeMap<String, Standing> = BTreeMap::new();
    for (change, standing) in changes {
        let c = change.clone();
        let applied = crate::fence::fenced(move || {
            let mut d = doc;
            d.apply_changes([c]).map(|()| d)
        });
        doc = match applied {
            Ok(Ok(d)) => d,
            _ => {
                r.problems.push(format!("change {} cannot be applied to the case", short(&change.hash().to_string())));
                return None;
            }
        };
        if let Ok(case) = crate::doc::read_case(&doc) {
            for e in &case.timeline.entries {
                if seen.insert(e.event.id.to_string()) {
                    standing_of_event.insert(e.event.id.to_string(), *standing);
                }
            }
        }
    }
    let case = match crate::doc::read_case(&doc) {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(format!("the case cannot be read from its changes: {e}"));
            return None;
        }
    };
    if case.id.to_string() != b.case.id {
        r.problems.push(format!("case: the changes are of case {}, not {}", case.id, b.case.id));
    }
    let calendar = crate::time::DistrictCalendar::default();
    for e in &case.timeline.entries {
        let ev = &e.event;
        let standing = match standing_of_event.get(&ev.id.to_string()) {
            Some(Standing::Verified) => "verified",
            Some(Standing::Unsigned) => "unsigned",
            _ => "NOT VERIFIED",
        };
        r.timeline.push(format!(
            "{}  {:<14} {} ({}) on device {}  [{standing}]",
            calendar.minute_of(ev.clock.estimated_ms()),
            ev.kind.tag().map(|t| t.name()).unwrap_or("unknown"),
            ev.actor.user,
            ev.actor.role.as_str(),
            ev.actor.device,
        ));
    }
    Some(case)
}

fn check_photos(b: &Bundle, case: Option<&crate::doc::CaseDoc>, r: &mut Report) {
    let named: BTreeSet<&str> = case
        .map(|c| {
            c.evidence
                .iter()
                .flat_map(|e| std::iter::once(e.sha256.as_str()).chain(e.thumb_sha256.as_deref()))
                .collect()
        })
        .unwrap_or_default();
    let mut present = BTreeSet::new();
    for (i, p) in b.photos.iter().enumerate() {
        let at = format!("photos[{i}] ({})", short(&p.sha256));
        let Some(bytes) = decode_b64(&p.bytes) else {
            r.problems.push(format!("{at}: its bytes are not base64"));
            continue;
        };
        if sha256_hex(&bytes) != p.sha256 {
            r.problems.push(format!("{at}: the file is not the one its hash names (altered)"));
            continue;
        }
        if !named.contains(p.sha256.as_str()) {
            r.problems.push(format!("{at}: no change of the case names this photo"));
            continue;
        }
        present.insert(p.sha256.as_str());
        r.photos.push(format!("{}  {} bytes  [verified]", p.sha256, bytes.len()));
    }
    if let Some(c) = case {
        for e in &c.evidence {
            if !present.contains(e.sha256.as_str()) {
                r.notes.push(format!(
                    "photo {} (original {}) is not in the bundle: the server never received it",
                    short(&e.sha256),
                    short(&e.original_sha256)
                ));
            }
        }
    }
}

fn check_digests(b: &Bundle, payload: &[u8], digest: Option<&serde_json::Value>, r: &mut Report) {
    let Some(digest) = digest else {
        r.problems.push("the digest line is missing or damaged".into());
        return;
    };
    let Ok(now) = sections(b) else {
        r.problems.push("the bundle's sections cannot be written again".into());
        return;
    };
    let stated = digest.get("sections").and_then(|s| s.as_object());
    let mut changed = vec![];
    for (name, h) in &now {
        if stated.and_then(|s| s.get(name)).and_then(|v| v.as_str()) != Some(h.as_str()) {
            changed.push(name.clone());
        }
    }
    if let Some(s) = stated {
        changed.extend(s.keys().filter(|k| !now.contains_key(*k)).map(|k| format!("{k} (removed)")));
    }
    if !changed.is_empty() {
        r.problems.push(format!("changed after export: {}", changed.join(", ")));
    }
    if digest.get("payload").and_then(|v| v.as_str()) != Some(sha256_hex(payload).as_str()) && changed.is_empty() {
        // Every section as exported: the bytes between them changed. Say where.
        let again = serde_json::to_vec_pretty(b).unwrap_or_default();
        let at = payload.iter().zip(&again).position(|(x, y)| x != y).unwrap_or(payload.len().min(again.len()));
        let line = payload[..at].iter().filter(|c| **c == b'\n').count() + 1;
        let column = at - payload[..at].iter().rposition(|c| *c == b'\n').map_or(0, |p| p + 1) + 1;
        r.problems
            .push(format!("the file changed after export at line {line} column {column} (outside any signed item)"));
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
