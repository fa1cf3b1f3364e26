-- Schema 2: the supervisor console on PostgreSQL (ADR 12, 21): accounts and sessions, and the
-- indexes the console's queue, coverage and assessment read through, as the embedded store's
-- schemas 4 and 7 have them.

CREATE TABLE console_accounts (
    user_id         TEXT PRIMARY KEY REFERENCES users (id),
    password_hash   TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until_ms BIGINT NOT NULL DEFAULT 0,
    updated_ms      BIGINT NOT NULL
);

CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_ms);

-- Queue keys compare byte by byte whatever the database's locale (keyset paging depends on one
-- order); the indexes on the column are rebuilt with it.
ALTER TABLE docs ALTER COLUMN queue_key TYPE TEXT COLLATE "C";
CREATE INDEX docs_by_category ON docs (category_id, status);
CREATE INDEX docs_by_reporter ON docs (reporter, reported_ms);
CREATE INDEX membership_scope_status ON membership (scope, status, doc_id);
CREATE INDEX check_ins_by_user ON records (user_id, at_ms) WHERE grid_id IS NOT NULL;
