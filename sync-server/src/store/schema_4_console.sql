-- Schema 4: the supervisor console (ADR 12).

-- More of each case without loading its document: what the queue lists and filters on.
-- departments: ',police,housing,' (commas around each, for a LIKE filter).
ALTER TABLE docs ADD COLUMN code TEXT;
ALTER TABLE docs ADD COLUMN title TEXT;
ALTER TABLE docs ADD COLUMN reporter TEXT;
ALTER TABLE docs ADD COLUMN reported_ms INTEGER;
ALTER TABLE docs ADD COLUMN departments TEXT NOT NULL DEFAULT '';
-- The queue's order (soonest deadline first, then newest report), so a page is read from the
-- index instead of sorting every case; and counts per status.
CREATE INDEX docs_queue_order ON docs ((deadline_ms IS NULL), deadline_ms, reported_ms DESC, doc_id);
CREATE INDEX docs_by_status ON docs (status);

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
