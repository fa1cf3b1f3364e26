-- Schema 5: the console's case search (SQLite schema 12, ADR 27). Terms compare byte by byte
-- (a prefix is a range of them).
CREATE TABLE case_terms (
    term   TEXT COLLATE "C" NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (term, doc_id)
);
CREATE TABLE search_docs (
    doc_id TEXT PRIMARY KEY,
    terms  TEXT NOT NULL
);
