-- Schema 4: wiping a lost phone (SQLite schema 11; docs/SECURITY.md, ADR 26).
ALTER TABLE devices ADD COLUMN wipe_ordered_ms BIGINT;
ALTER TABLE devices ADD COLUMN wipe_confirmed_ms BIGINT;
ALTER TABLE devices ADD COLUMN wiped_ms BIGINT;

-- Boots the server learnt of (SQLite schema 11; clock flags across boots).
CREATE TABLE device_boots (
    device_id  TEXT NOT NULL,
    boot_id    TEXT NOT NULL,
    start_ms   BIGINT,
    implied_ms BIGINT,
    PRIMARY KEY (device_id, boot_id)
);
