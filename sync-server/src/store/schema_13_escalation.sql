-- Schema 13: escalation rules (rules::escalation). When each waiting case is next to be looked at
-- by the rules: written by the pass that follows the change log and by each run of the rules, so
-- a run reads only the cases whose time has come.
CREATE TABLE escalation_due (
    doc_id TEXT PRIMARY KEY,
    due_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX escalation_due_by_time ON escalation_due (due_ms);
