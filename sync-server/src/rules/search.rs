//! The pass that follows the change log behind the sync path: for each changed case, its search
//! terms (schema 12, ADR 27), when the escalation rules next look at it (schema 13,
//! `rules::escalation`) and its overview facts (schema 14, `rules::overview`).
//!
//! A case's terms — the words, CJK
//! characters and bigrams of its title (every standing value), description, code, reporter,
//! official number and place names, split as the phone splits them (`gridwork_model::search`) —
//! and `=code` for the exact code.
//!
//! Both are filled behind the sync path, never inside a push: a description is an Automerge text
//! object the server's change reader does not follow, so indexing loads the case's document, and
//! a push storm must not pay for that. The index follows the change log by its own cursor (meta
//! `search_seq`): a batch reads the changes after it and loads their cases on a snapshot, then
//! writes their terms and moves the cursor in one short write transaction, which does nothing if
//! another instance (or the background task) moved the cursor meanwhile. Re-indexing a case is
//! idempotent, so a batch done twice costs time, never correctness.

use std::collections::{BTreeMap, BTreeSet};

use gridwork_model::catalog::Catalog;
use gridwork_model::doc::CaseDoc;
use gridwork_model::search::{code_term, index_terms};
use gridwork_model::time::DistrictCalendar;

use super::console::load_case;
use super::escalation::{first_due, pending, Policy, POLICY_KEY};
use super::overview::case_facts;
use crate::error::Result;
use crate::store::port::{read, write, Backend, ReadTx, WriteTx};

/// The meta key of the last change the index has seen.
pub const CURSOR_KEY: &str = "search_seq";

/// Changes one batch reads at most.
pub const BATCH_CHANGES: usize = 1000;

/// What a batch did, and how far the index still is behind the change log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexProgress {
    /// Cases (re)indexed.
    pub cases: usize,
    /// Applied changes the index has not seen yet.
    pub behind: i64,
}

/// Every term `case` is found by.
pub fn case_terms(case: &CaseDoc, catalog: &Catalog) -> BTreeSet<String> {
    let mut texts: Vec<&str> = vec![&case.title.value, &case.description, &case.code, &case.reporter.0];
    texts.extend(case.title.conflicts.iter().map(String::as_str));
    texts.extend(case.official_number.as_deref());
    // Its place by name, as a caller on the phone describes it ("幸福里 3 号楼").
    for grid_id in std::iter::once(&case.grid.value).chain(case.grid.conflicts.iter()) {
        texts.push(&grid_id.0);
        if let Some(g) = catalog.grids.iter().find(|g| &g.id == grid_id) {
            texts.extend([g.name.as_str(), g.community.as_str(), g.street.as_str()]);
        }
    }
    let mut terms = index_terms(texts);
    if !case.code.is_empty() {
        terms.insert(code_term(&case.code));
    }
    terms
}

fn cursor(tx: &dyn ReadTx) -> Result<i64> {
    Ok(tx.meta(CURSOR_KEY)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Indexes the cases of at most `max_changes` changes the index has not seen.
pub fn index_some(b: &(impl Backend + ?Sized), catalog: &Catalog, max_changes: usize) -> Result<IndexProgress> {
    let (from, upto, terms, last) = read(b, |tx| {
        let from = cursor(tx)?;
        let last = tx.last_seq()?;
        let changes = tx.changes_after(from, max_changes)?;
        // Sequence numbers are shared with other writes (memberships, records): with fewer changes
        // than asked for, the snapshot holds none up to its last number (a reader never sees a
        // number committed before a lower one), so the cursor moves to it.
        let upto = if changes.len() < max_changes { last } else { changes.last().map_or(from, |c| c.0) };
        let docs: BTreeSet<&str> = changes.iter().map(|(_, d)| d.as_str()).collect();
        let policy = Policy::from_meta(tx.meta(POLICY_KEY)?.as_deref())?;
        let calendar = DistrictCalendar::default();
        let mut terms = BTreeMap::new();
        for doc in docs {
            // A document not yet readable as a case (its report has not arrived) or damaged
            // (`ServerError::DamagedDocument`, shown on its page) is found by nothing yet, and
            // waits for no rule.
            let followed = load_case(tx, doc)
                .map(|(_, case)| {
                    let due = first_due(&pending(doc, &case, &policy, &calendar));
                    (case_terms(&case, catalog), due, case_facts(&case, &calendar))
                })
                .unwrap_or_default();
            terms.insert(doc.to_owned(), followed);
        }
        Ok((from, upto, terms, last))
    })?;
    if upto == from {
        return Ok(IndexProgress { cases: 0, behind: last - from });
    }
    let cases = write(b, |tx: &dyn WriteTx| {
        if cursor(tx)? != from {
            return Ok(0);
        }
        for (doc, (t, due, facts)) in &terms {
            tx.set_case_terms(doc, t)?;
            tx.set_escalation_due(doc, *due)?;
            tx.set_case_facts(doc, facts.as_ref())?;
        }
        tx.set_meta(CURSOR_KEY, &upto.to_string())?;
        Ok(terms.len())
    })?;
    Ok(IndexProgress { cases, behind: (last - upto).max(0) })
}

/// Indexes until the index has seen every change there was when it started, calling `progress`
/// after each batch (the bench's seeded server, a restored backup).
pub fn index_all(
    b: &(impl Backend + ?Sized),
    catalog: &Catalog,
    mut progress: impl FnMut(IndexProgress),
) -> Result<usize> {
    let mut total = 0;
    loop {
        let p = index_some(b, catalog, BATCH_CHANGES)?;
        total += p.cases;
        progress(p);
        if p.behind == 0 {
            return Ok(total);
        }
    }
}
