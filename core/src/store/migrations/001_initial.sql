-- Gridwork device store, schema 1.

-- Small settings: device counter for case codes, last known server offset, catalog version.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Reference data from the server, one JSON row per item.
CREATE TABLE catalog_items (
    kind TEXT NOT NULL CHECK (kind IN ('grid', 'category', 'department')),
    id   TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

-- Automerge actors this store has written with (a new one per opened store instance).
CREATE TABLE actors (
    actor_id   TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per Automerge document; its bytes are the concatenation of its chunks, in order:
-- a compacted save followed by the changes appended since.
CREATE TABLE documents (
    doc_id      TEXT PRIMARY KEY,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    heads       TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE TABLE doc_chunks (
    doc_id TEXT NOT NULL REFERENCES documents (doc_id),
    seq    INTEGER NOT NULL,
    bytes  BLOB NOT NULL,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;

-- The materialized case index: what lists read, never the documents.
CREATE TABLE cases (
    id            TEXT PRIMARY KEY REFERENCES documents (doc_id),
    code          TEXT NOT NULL,
    title         TEXT NOT NULL,
    status        TEXT NOT NULL,
    grid_id       TEXT NOT NULL,
    category_id   TEXT NOT NULL,
    reporter      TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    deadline_ms   INTEGER,
    -- The deadline while a department owes work; NULL otherwise. Overdue = due_ms < now.
    due_ms        INTEGER,
    has_conflicts INTEGER NOT NULL DEFAULT 0,
    flags         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX cases_by_updated ON cases (updated_ms DESC, id DESC);
CREATE INDEX cases_by_deadline ON cases (coalesce(deadline_ms, 9223372036854775807), id);
CREATE INDEX cases_by_status ON cases (status, updated_ms);
CREATE INDEX cases_by_grid ON cases (grid_id, updated_ms);
CREATE INDEX cases_by_due ON cases (due_ms) WHERE due_ms IS NOT NULL;

-- 'user:ID' or 'department:ID'.
CREATE TABLE case_assignees (
    assignee TEXT NOT NULL,
    case_id  TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    PRIMARY KEY (assignee, case_id)
) WITHOUT ROWID;

-- Evidence files on disk (encrypted), by the SHA-256 of their plaintext.
CREATE TABLE evidence_files (
    sha256           TEXT PRIMARY KEY,
    role             TEXT NOT NULL CHECK (role IN ('full', 'thumb')),
    size             INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    server_confirmed INTEGER NOT NULL DEFAULT 0,
    evicted          INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Which case or check-in references which file.
CREATE TABLE evidence_links (
    sha256     TEXT NOT NULL REFERENCES evidence_files (sha256),
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('case', 'check_in')),
    owner_id   TEXT NOT NULL,
    PRIMARY KEY (owner_id, sha256)
) WITHOUT ROWID;

-- Immutable records (patrol start/finish, check-ins), one JSON each.
CREATE TABLE records (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    grid_id    TEXT NOT NULL,
    patrol_id  TEXT NOT NULL,
    day        TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    json       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX records_by_grid_day ON records (grid_id, day, type);

CREATE TABLE patrols (
    id          TEXT PRIMARY KEY,
    grid_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER
) WITHOUT ROWID;

-- Local changes and records no server has acknowledged yet. Nothing leaves until acknowledged.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('change', 'record')),
    doc_id     TEXT,
    item_key   TEXT NOT NULL UNIQUE,
    bytes      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
