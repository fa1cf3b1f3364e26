-- Schema 6: the district overview's facts (SQLite schema 14, ADR 29).
CREATE TABLE case_facts (
    reported_ms         BIGINT NOT NULL,
    doc_id              TEXT NOT NULL,
    day                 TEXT NOT NULL,
    grid_id             TEXT NOT NULL,
    category_id         TEXT NOT NULL,
    closed_hours        BIGINT,
    waiting_deadline_ms BIGINT,
    escalated_to        TEXT,
    satisfaction        INTEGER,
    PRIMARY KEY (reported_ms, doc_id)
);
CREATE INDEX case_facts_by_doc ON case_facts (doc_id);
CREATE INDEX case_facts_by_day ON case_facts (day, category_id, grid_id);
CREATE INDEX case_facts_by_grid ON case_facts (grid_id, day, category_id, closed_hours);
CREATE INDEX case_facts_waiting ON case_facts (waiting_deadline_ms, grid_id, escalated_to, day)
    WHERE waiting_deadline_ms IS NOT NULL;
CREATE INDEX case_facts_closed ON case_facts (category_id, closed_hours, day, grid_id) WHERE closed_hours IS NOT NULL;
CREATE INDEX case_facts_satisfied ON case_facts (grid_id, satisfaction, day) WHERE satisfaction IS NOT NULL;
CREATE TABLE department_facts (
    reported_ms BIGINT NOT NULL,
    doc_id      TEXT NOT NULL,
    department  TEXT NOT NULL,
    grid_id     TEXT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    done_ms     BIGINT,
    PRIMARY KEY (reported_ms, doc_id, department)
);
CREATE INDEX department_facts_by_doc ON department_facts (doc_id);
CREATE INDEX department_facts_open ON department_facts (department, deadline_ms) WHERE done_ms IS NULL;
CREATE INDEX department_facts_by_department ON department_facts (department, reported_ms, grid_id, deadline_ms, done_ms);
DELETE FROM meta WHERE key = 'search_seq';
