-- Schema 4: the supervisor console (ADR 12).

-- More of each case without loading its document: what the queue lists and filters on.
-- departments: ',police,housing,' (commas around each, for a LIKE filter).
ALTER TABLE docs ADD COLUMN code TEXT;
ALTER TABLE docs ADD COLUMN title TEXT;
ALTER TABLE docs ADD COLUMN reporter TEXT;
ALTER TABLE docs ADD COLUMN reported_ms INTEGER;
ALTER TABLE docs ADD COLUMN departments TEXT NOT NULL DEFAULT '';
-- Where the case is (WGS-84), for the console's map.
ALTER TABLE docs ADD COLUMN lat REAL;
ALTER TABLE docs ADD COLUMN lon REAL;
-- The queue's order as one sortable text (see console.rs `queue_key`): soonest deadline first,
-- then the newest report. A page is read from the index from where the last one ended (keyset
-- paging), never by skipping rows.
ALTER TABLE docs ADD COLUMN queue_key TEXT;
CREATE INDEX docs_queue_order ON docs (queue_key);
-- Counts per status (and overdue ones) from an index alone; the case columns a person's area
-- is counted over, reachable from the membership index. Every index here costs the sync path
-- a write per changed case: these are the ones the console's benchmark needs.
-- (status, queue_key) also finds the overdue cases: a key starts with the deadline.
CREATE INDEX docs_by_status ON docs (status, queue_key);
CREATE INDEX docs_by_category ON docs (category_id, status);
CREATE INDEX docs_cover ON docs (doc_id, status, category_id, deadline_ms, reported_ms);
-- Each membership row carries its case's status, so a person's counts per status come from one
-- index range per scope instead of a lookup per case.
ALTER TABLE membership ADD COLUMN status TEXT NOT NULL DEFAULT 'empty';
CREATE INDEX membership_scope_status ON membership (scope, status, doc_id);

-- Console sign-in: an argon2 hash (PHC string) per person, and lockout after repeated failures.
CREATE TABLE console_accounts (
    user_id         TEXT PRIMARY KEY REFERENCES users (id),
    password_hash   TEXT NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER NOT NULL DEFAULT 0,
    updated_ms      INTEGER NOT NULL
);

-- Signed-in browsers: the SHA-256 of the cookie's token (never the token), and the CSRF token
-- every form of the session carries.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);

-- Check-ins read out of their records, for patrol coverage and worker assessment. `day` is the
-- district's calendar day of the check-in's corrected time.
CREATE TABLE check_ins (
    id          TEXT PRIMARY KEY,
    grid_id     TEXT NOT NULL,
    point_id    TEXT,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    day         TEXT NOT NULL,
    inside_grid INTEGER NOT NULL,
    distance_m  REAL
);
CREATE INDEX check_ins_by_grid_day ON check_ins (grid_id, day);
CREATE INDEX check_ins_by_user ON check_ins (user_id, at_ms);
