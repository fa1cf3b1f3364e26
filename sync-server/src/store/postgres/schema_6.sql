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
CREATE INDEX case_facts_waiting ON case_facts (waiting_deadline_ms, grid_id) WHERE waiting_deadline_ms IS NOT NULL;
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
DELETE FROM meta WHERE key = 'search_seq';
