-- Schema 11: wiping a lost phone (docs/SECURITY.md "Wiping a lost phone", ADR 26). An
-- administrator orders it (the device is retired at the same moment: it may send what it holds
-- and receives nothing new); the server confirms when the phone reported nothing left and every
-- link of its chain is here; the phone reports once it destroyed its keys and files, and its
-- token stops working (kept as status 'revoked' with wiped_ms; read as 'wiped').
ALTER TABLE devices ADD COLUMN wipe_ordered_ms INTEGER;
ALTER TABLE devices ADD COLUMN wipe_confirmed_ms INTEGER;
ALTER TABLE devices ADD COLUMN wiped_ms INTEGER;
