-- Schema 5: the console's case search (SQLite schema 12, ADR 27) and escalation rules (13, ADR 28).
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

-- Escalation rules (SQLite schema 13): when each waiting case is next to be looked at.
CREATE TABLE escalation_due (
    doc_id TEXT PRIMARY KEY,
    due_ms BIGINT NOT NULL
);
CREATE INDEX escalation_due_by_time ON escalation_due (due_ms);
