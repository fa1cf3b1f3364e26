-- Schema 4: closed cases leave the phone a number of days after the server confirmed them.

-- When this phone first saw the case finished (closed or rejected) with nothing of it left to
-- send: every change acknowledged, every photo confirmed. Any later change to the case clears
-- it, so the days count from the last time the server confirmed the case.
ALTER TABLE cases ADD COLUMN settled_ms INTEGER;
CREATE INDEX cases_by_settled ON cases (settled_ms) WHERE settled_ms IS NOT NULL;

-- 1 while some of the document's changes wait for dependencies this phone does not hold; the
-- next sync asks the server for the whole document.
ALTER TABLE documents ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;

-- Cases that left this phone by retention. The server holds them; should a change to one arrive
-- later (an edit made offline before the close was seen), the phone asks for the whole document
-- again and the case is back.
CREATE TABLE removed_cases (
    doc_id     TEXT PRIMARY KEY,
    code       TEXT NOT NULL,
    status     TEXT NOT NULL,
    settled_ms INTEGER NOT NULL,
    removed_ms INTEGER NOT NULL
) WITHOUT ROWID;
