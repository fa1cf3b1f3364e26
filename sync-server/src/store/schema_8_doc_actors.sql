-- Schema 8: which actors each case's history holds (docs/SECURITY.md, "Document shape").
-- Automerge applies a change only if every actor it names is already in the document: the
-- change's own actor unless this is its first change there (seq 1), and every other actor its
-- operations point at. A forged change that breaks this makes `apply_changes` panic on every
-- replica that pulls it, so the server checks it before storing, from this table. Filled from
-- the stored changes by `fill_doc_actors` when the store is upgraded.
CREATE TABLE doc_actors (
    doc_id TEXT NOT NULL,
    actor  TEXT NOT NULL,
    PRIMARY KEY (doc_id, actor)
) WITHOUT ROWID;
