-- Schema 11: wiping a lost phone (docs/SECURITY.md "Wiping a lost phone", ADR 26). An
-- administrator orders it (the device is retired at the same moment: it may send what it holds
-- and receives nothing new); the server confirms when the phone reported nothing left and every
-- link of its chain is here; the phone reports once it destroyed its keys and files, and its
-- token stops working (kept as status 'revoked' with wiped_ms; read as 'wiped').
ALTER TABLE devices ADD COLUMN wipe_ordered_ms INTEGER;
ALTER TABLE devices ADD COLUMN wipe_confirmed_ms INTEGER;
ALTER TABLE devices ADD COLUMN wiped_ms INTEGER;

-- Boots the server learnt of (issue 18's clock flags across boots): a sync in a boot gives its true
-- start (the server's clock minus the phone's time since boot; the smallest estimate is kept, as
-- it carries the least network delay). A boot never synced in has no true start: the first of its
-- stamps the server sees gives `implied_ms` (its wall clock minus its time since boot), and a
-- later stamp of that boot implying another start by more than the threshold had its wall clock
-- changed within the boot.
CREATE TABLE device_boots (
    device_id  TEXT NOT NULL,
    boot_id    TEXT NOT NULL,
    start_ms   INTEGER,
    implied_ms INTEGER,
    PRIMARY KEY (device_id, boot_id)
);
