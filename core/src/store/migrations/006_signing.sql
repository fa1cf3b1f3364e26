-- The device's signed chain (core/src/signing.rs, gridwork_model::signing): one link per change
-- or record this phone made, kept after the server acknowledges it so that a re-offer (a server
-- restored from a backup) carries the same signatures. The device key itself is in `meta`.
CREATE TABLE chain (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    item_key TEXT NOT NULL UNIQUE,
    link_hash TEXT NOT NULL,
    prev TEXT NOT NULL,
    sig TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
