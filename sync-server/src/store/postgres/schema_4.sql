-- Schema 4: wiping a lost phone (SQLite schema 11; docs/SECURITY.md, ADR 26).
ALTER TABLE devices ADD COLUMN wipe_ordered_ms BIGINT;
ALTER TABLE devices ADD COLUMN wipe_confirmed_ms BIGINT;
ALTER TABLE devices ADD COLUMN wiped_ms BIGINT;
