-- Schema 10: device signatures (docs/PROTOCOL.md "Signatures", gridwork_model::signing). A device
-- enrolled by an app that signs registers its Ed25519 public key; each change and record it
-- sends is a link of its chain, kept here with its signature for the evidence bundle, and
-- flagged `fork` when it does not continue the history the server holds (a cloned or restored
-- phone). Places below a device's highest that hold nothing are its chain's holes.
ALTER TABLE devices ADD COLUMN public_key TEXT;
CREATE TABLE chain_links (
    device_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    link_hash  TEXT NOT NULL,
    prev       TEXT NOT NULL,
    sig        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    item_key   TEXT NOT NULL,
    -- SHA-256 of the item's bytes as sent: what the signed statement names (ADR 24).
    sha256     TEXT NOT NULL,
    flag       TEXT,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (device_id, seq, link_hash)
);
CREATE INDEX chain_links_by_item ON chain_links (item_key);
CREATE INDEX chain_links_flagged ON chain_links (flag) WHERE flag IS NOT NULL;

-- Mock fixes (issue 18): a check-in whose fix the phone's OS marked as coming from a mock-location
-- provider is kept and counted apart by coverage. Filled from the stored bodies.
ALTER TABLE records ADD COLUMN mock INTEGER;
UPDATE records SET mock = coalesce(json_extract(body, '$.location.mock'), 0)
    WHERE grid_id IS NOT NULL AND json_valid(body);
DROP VIEW check_ins;
CREATE VIEW check_ins (id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m, mock) AS
    SELECT id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m, coalesce(mock, 0)
    FROM records WHERE grid_id IS NOT NULL;

-- Clock flags (issue 18): an event or check-in whose wall clock was more than 10 minutes from the
-- true time of its moment — told from the boot it was made in, whose true start the server learns
-- at a sync (its own clock minus the phone's time since boot). Kept, never refused.
CREATE TABLE clock_flags (
    item      TEXT PRIMARY KEY,
    doc_id    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    off_ms    INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX clock_flags_by_doc ON clock_flags (doc_id) WHERE doc_id != '';
CREATE INDEX clock_flags_by_user ON clock_flags (user_id, at_ms);
