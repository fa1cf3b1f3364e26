-- Schema 12: the console's case search (ADR 27).
-- Each case's search terms (model::search: words, CJK characters and bigrams of its title,
-- description, code, reporter and place names; "=code" for the exact code), one row per term.
-- Filled behind the sync path by rules::search, never inside a push.
CREATE TABLE case_terms (
    term   TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (term, doc_id)
) WITHOUT ROWID;
-- The terms each case was last indexed with (space-separated), so that re-indexing deletes only
-- the terms it lost, by primary key.
CREATE TABLE search_docs (
    doc_id TEXT PRIMARY KEY,
    terms  TEXT NOT NULL
) WITHOUT ROWID;
