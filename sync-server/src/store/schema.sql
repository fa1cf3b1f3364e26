-- Gridwork sync server, schema 1. Portable SQL: a PostgreSQL store will follow.

CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Reference data.
CREATE TABLE grids (id TEXT PRIMARY KEY, community TEXT NOT NULL, street TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE categories (id TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE departments (id TEXT PRIMARY KEY, json TEXT NOT NULL);

-- People and what they may see: 'grid:ID', 'community:NAME', 'street:NAME', 'department:ID'.
CREATE TABLE users (id TEXT PRIMARY KEY, role TEXT NOT NULL, department TEXT);
-- granted_seq: the sequence number when the scope was given, so documents already in it reach
-- the user's devices on their next sync. Removed scopes are remembered to tell devices.
CREATE TABLE user_scopes (
    user_id     TEXT NOT NULL REFERENCES users (id),
    scope       TEXT NOT NULL,
    granted_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, scope)
);
CREATE TABLE user_scopes_removed (user_id TEXT NOT NULL, scope TEXT NOT NULL, removed_seq INTEGER NOT NULL);

-- Devices: a one-time enrolment code (hash), then a token (hash). Never the secrets themselves.
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users (id),
    enrol_hash  TEXT UNIQUE,
    token_hash  TEXT UNIQUE,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    created_ms  INTEGER NOT NULL,
    last_seen_ms INTEGER,
    last_state  TEXT
);

-- Every Automerge actor belongs to one device (and through it to a user and role).
CREATE TABLE actors (actor TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices (id), first_seen_ms INTEGER NOT NULL);

-- Applied changes, in the order one writer assigned their sequence numbers.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    bytes       BLOB NOT NULL
);
CREATE INDEX changes_by_doc ON changes (doc_id, seq);

-- Changes whose dependencies have not arrived: stored, not yet applied, never dropped.
CREATE TABLE parked (
    hash        TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    deps        TEXT NOT NULL,
    bytes       BLOB NOT NULL
);

-- Changes a sender was not allowed to make: kept, out of every scope, for an administrator.
CREATE TABLE quarantine (
    hash        TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'released', 'rejected')),
    bytes       BLOB NOT NULL
);

-- What the server knows of each case without loading its document.
CREATE TABLE docs (
    doc_id      TEXT PRIMARY KEY,
    events_obj  TEXT,
    grid_id     TEXT,
    category_id TEXT,
    status      TEXT NOT NULL DEFAULT 'empty',
    deadline_ms INTEGER,
    flags       TEXT NOT NULL DEFAULT '',
    updated_seq INTEGER NOT NULL
);
CREATE TABLE doc_events (doc_id TEXT NOT NULL, event_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (doc_id, event_id));

-- Grow-only: a document enters a scope at a sequence number and never leaves it.
CREATE TABLE membership (doc_id TEXT NOT NULL, scope TEXT NOT NULL, joined_seq INTEGER NOT NULL, PRIMARY KEY (doc_id, scope));
CREATE INDEX membership_by_scope ON membership (scope, joined_seq);
-- Which scopes each applied change was visible in, for cursor pulls without loading documents.
CREATE TABLE scope_changes (scope TEXT NOT NULL, seq INTEGER NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (scope, seq, doc_id));

-- Immutable records, idempotent by id.
CREATE TABLE records (id TEXT PRIMARY KEY, device_id TEXT NOT NULL, received_ms INTEGER NOT NULL, body TEXT NOT NULL);
