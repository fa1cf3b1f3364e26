-- Schema 5: the tables every push writes, keyed by their primary key alone (WITHOUT ROWID).
-- A rowid table with a text primary key is two B-trees, the rows and the key's index; each push
-- wrote both for every membership, scope change, event, record and check-in. Same columns, same
-- keys, same indexes: only the storage changes (ADR 13).

CREATE TABLE membership_5 (
    doc_id     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    joined_seq INTEGER NOT NULL,
    status     TEXT NOT NULL DEFAULT 'empty',
    PRIMARY KEY (doc_id, scope)
) WITHOUT ROWID;
INSERT INTO membership_5 (doc_id, scope, joined_seq, status) SELECT doc_id, scope, joined_seq, status FROM membership;
DROP TABLE membership;
ALTER TABLE membership_5 RENAME TO membership;
CREATE INDEX membership_by_scope ON membership (scope, joined_seq);
CREATE INDEX membership_scope_status ON membership (scope, status, doc_id);

CREATE TABLE scope_changes_5 (
    scope  TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (scope, seq, doc_id)
) WITHOUT ROWID;
INSERT INTO scope_changes_5 (scope, seq, doc_id) SELECT scope, seq, doc_id FROM scope_changes;
DROP TABLE scope_changes;
ALTER TABLE scope_changes_5 RENAME TO scope_changes;

CREATE TABLE doc_events_5 (
    doc_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (doc_id, event_id)
) WITHOUT ROWID;
INSERT INTO doc_events_5 (doc_id, event_id, json) SELECT doc_id, event_id, json FROM doc_events;
DROP TABLE doc_events;
ALTER TABLE doc_events_5 RENAME TO doc_events;

CREATE TABLE records_5 (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    body        TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO records_5 (id, device_id, received_ms, body) SELECT id, device_id, received_ms, body FROM records;
DROP TABLE records;
ALTER TABLE records_5 RENAME TO records;

CREATE TABLE check_ins_5 (
    id          TEXT PRIMARY KEY,
    grid_id     TEXT NOT NULL,
    point_id    TEXT,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    day         TEXT NOT NULL,
    inside_grid INTEGER NOT NULL,
    distance_m  REAL
) WITHOUT ROWID;
INSERT INTO check_ins_5 SELECT id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m FROM check_ins;
DROP TABLE check_ins;
ALTER TABLE check_ins_5 RENAME TO check_ins;
CREATE INDEX check_ins_by_grid_day ON check_ins (grid_id, day);
CREATE INDEX check_ins_by_user ON check_ins (user_id, at_ms);

-- Parked changes are looked up by the document whose changes just arrived.
CREATE INDEX parked_by_doc ON parked (doc_id);
-- A pull asks which of the user's scopes were taken away since its cursor.
CREATE INDEX user_scopes_removed_by_user ON user_scopes_removed (user_id, removed_seq);
