-- Schema 5: the server's receipts for the changes this phone holds (wire::Receipt). A server
-- restored from a backup lost what it received after the backup; the phone offers every change
-- it holds again, and another device's change goes with its receipt, which proves the server
-- once accepted it from its owner.
CREATE TABLE receipts (
    hash    TEXT PRIMARY KEY,
    receipt TEXT NOT NULL
) WITHOUT ROWID;
