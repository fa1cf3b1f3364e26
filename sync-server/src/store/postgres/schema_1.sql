-- Gridwork sync server on PostgreSQL, schema 1: the embedded store's schema 9 in PostgreSQL's
-- dialect (docs/adr/0021). Same tables, same keys, same meaning; see store/schema*.sql for why
-- each exists.

CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- The last sequence number committed. Every write transaction locks this row first, so writers
-- of every instance take turns and numbers commit in order (ADR 21).
CREATE TABLE seq_counter (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
INSERT INTO seq_counter (id, last) VALUES (1, 0);

CREATE TABLE grids (id TEXT PRIMARY KEY, community TEXT NOT NULL, street TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE categories (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE departments (id TEXT PRIMARY KEY, json TEXT NOT NULL);

CREATE TABLE users (id TEXT PRIMARY KEY, role TEXT NOT NULL, department TEXT);
CREATE TABLE user_scopes (
    user_id     TEXT NOT NULL REFERENCES users (id),
    scope       TEXT NOT NULL,
    granted_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, scope)
);
CREATE TABLE user_scopes_removed (user_id TEXT NOT NULL, scope TEXT NOT NULL, removed_seq BIGINT NOT NULL);
CREATE INDEX user_scopes_removed_by_user ON user_scopes_removed (user_id, removed_seq);

CREATE TABLE grid_placements (
    scope    TEXT NOT NULL,
    grid_id  TEXT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq   BIGINT,
    PRIMARY KEY (scope, grid_id, from_seq)
);
CREATE VIEW user_areas (user_id, scope, granted_seq) AS
    SELECT user_id, scope, granted_seq FROM user_scopes
    UNION ALL
    SELECT s.user_id, 'grid:' || p.grid_id, greatest(s.granted_seq, p.from_seq)
    FROM user_scopes s JOIN grid_placements p ON p.scope = s.scope AND p.to_seq IS NULL;

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    code         TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id),
    enrol_hash   TEXT UNIQUE,
    token_hash   TEXT UNIQUE,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    created_ms   BIGINT NOT NULL,
    last_seen_ms BIGINT,
    last_state   TEXT,
    retired_ms   BIGINT,
    drained_ms   BIGINT
);

CREATE TABLE actors (actor TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices (id), first_seen_ms BIGINT NOT NULL);

CREATE TABLE changes (
    seq         BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    bytes       BYTEA NOT NULL
);
CREATE INDEX changes_by_doc ON changes (doc_id, seq);

CREATE TABLE parked (
    hash        TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    deps        TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    vouched     BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX parked_by_doc ON parked (doc_id);

CREATE TABLE quarantine (
    hash        TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'released', 'rejected')),
    bytes       BYTEA NOT NULL
);

CREATE TABLE docs (
    doc_id      TEXT PRIMARY KEY,
    events_obj  TEXT,
    grid_id     TEXT,
    category_id TEXT,
    status      TEXT NOT NULL DEFAULT 'empty',
    deadline_ms BIGINT,
    flags       TEXT NOT NULL DEFAULT '',
    updated_seq BIGINT NOT NULL,
    code        TEXT,
    title       TEXT,
    reporter    TEXT,
    reported_ms BIGINT,
    departments TEXT NOT NULL DEFAULT '',
    lat         DOUBLE PRECISION,
    lon         DOUBLE PRECISION,
    queue_key   TEXT
);
CREATE INDEX docs_queue_order ON docs (queue_key);
CREATE INDEX docs_by_status ON docs (status, queue_key);

CREATE TABLE doc_events (doc_id TEXT NOT NULL, event_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (doc_id, event_id));

CREATE TABLE doc_actors (doc_id TEXT NOT NULL, actor TEXT NOT NULL, last_seq BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (doc_id, actor));

CREATE TABLE membership (
    doc_id     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    joined_seq BIGINT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'empty',
    PRIMARY KEY (doc_id, scope)
);
CREATE INDEX membership_by_scope ON membership (scope, joined_seq);
CREATE TABLE scope_changes (scope TEXT NOT NULL, seq BIGINT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (scope, seq, doc_id));

CREATE TABLE records (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    body        TEXT NOT NULL,
    grid_id     TEXT,
    point_id    TEXT,
    user_id     TEXT,
    at_ms       BIGINT,
    day         TEXT,
    inside_grid BOOLEAN,
    distance_m  DOUBLE PRECISION
);
CREATE INDEX check_ins_by_grid_day ON records (grid_id, day) WHERE grid_id IS NOT NULL;

CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, first_device TEXT NOT NULL, received_ms BIGINT NOT NULL);
CREATE TABLE blob_links (
    sha256     TEXT NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('case', 'check_in')),
    owner_id   TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    linked_ms  BIGINT NOT NULL,
    PRIMARY KEY (sha256, owner_kind, owner_id)
);
CREATE INDEX blob_links_by_owner ON blob_links (owner_kind, owner_id);
