-- Schema 14: the district overview's facts (ADR 29), one row per reported case and one per
-- department it was dispatched to, written by the log-following pass (rules::search) next to the
-- search terms.
CREATE TABLE case_facts (
    reported_ms        INTEGER NOT NULL,
    doc_id             TEXT NOT NULL,
    day                TEXT NOT NULL,
    grid_id            TEXT NOT NULL,
    category_id        TEXT NOT NULL,
    closed_hours       INTEGER,
    waiting_deadline_ms INTEGER,
    escalated_to       TEXT,
    satisfaction       INTEGER,
    PRIMARY KEY (reported_ms, doc_id)
) WITHOUT ROWID;
CREATE INDEX case_facts_by_doc ON case_facts (doc_id);
-- What is overdue now, for "needs you": only cases waiting on a department, by deadline.
-- Covering indexes, one per grouping the overview reads, so each groups in index order without
-- touching the table or sorting (`gridwork-bench console`, `overview`: 45 ms → 9 ms for 100,000
-- facts grouped by day). What is overdue now, for the overview and for "needs you", is the
-- partial index of cases waiting on a department, by deadline.
CREATE INDEX case_facts_by_day ON case_facts (day, category_id, grid_id);
CREATE INDEX case_facts_by_grid ON case_facts (grid_id, day, category_id, closed_hours);
CREATE INDEX case_facts_waiting ON case_facts (waiting_deadline_ms, grid_id, escalated_to, day)
    WHERE waiting_deadline_ms IS NOT NULL;
CREATE INDEX case_facts_closed ON case_facts (category_id, closed_hours, day, grid_id) WHERE closed_hours IS NOT NULL;
CREATE INDEX case_facts_satisfied ON case_facts (grid_id, satisfaction, day) WHERE satisfaction IS NOT NULL;
CREATE TABLE department_facts (
    reported_ms INTEGER NOT NULL,
    doc_id      TEXT NOT NULL,
    department  TEXT NOT NULL,
    grid_id     TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    done_ms     INTEGER,
    PRIMARY KEY (reported_ms, doc_id, department)
) WITHOUT ROWID;
CREATE INDEX department_facts_by_doc ON department_facts (doc_id);
CREATE INDEX department_facts_open ON department_facts (department, deadline_ms) WHERE done_ms IS NULL;
CREATE INDEX department_facts_by_department ON department_facts (department, reported_ms, grid_id, deadline_ms, done_ms);
-- Every case already stored gets its facts (and its terms again) from the start of the log.
DELETE FROM meta WHERE key = 'search_seq';
