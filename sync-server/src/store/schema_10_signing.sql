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
