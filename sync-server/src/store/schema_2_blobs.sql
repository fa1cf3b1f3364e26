-- Schema 2: evidence blobs. The bytes live in DATA_DIR/blobs/ (see blobs.rs); these tables say
-- which blobs are complete and what each belongs to, which decides who may download it.
CREATE TABLE blobs (
    sha256       TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    first_device TEXT NOT NULL,
    received_ms  INTEGER NOT NULL
);
-- owner_kind 'case' (owner_id a case id) or 'check_in' (a check-in record id). Grow-only.
CREATE TABLE blob_links (
    sha256     TEXT NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('case', 'check_in')),
    owner_id   TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    linked_ms  INTEGER NOT NULL,
    PRIMARY KEY (sha256, owner_kind, owner_id)
);
CREATE INDEX blob_links_by_owner ON blob_links (owner_kind, owner_id);
