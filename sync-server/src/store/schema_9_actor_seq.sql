-- Schema 9: the last sequence number each actor used in each case. Automerge refuses a document
-- holding two changes with one actor and number ("duplicate seq"), so a change that reuses one
-- — a forged change, or a writer that lost its own history, as the console's actor did after a
-- restore — would make the case unloadable on every replica that pulls it. The server checks it
-- before storing (quarantined as a damaged change). Filled from the stored changes by
-- `fill_doc_actors` when the store is upgraded.
-- And whether a parked change came with the server's receipt (a relay after a restore), which
-- it keeps when its dependencies arrive (ADR 18).
ALTER TABLE doc_actors ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE parked ADD COLUMN vouched INTEGER NOT NULL DEFAULT 0;
