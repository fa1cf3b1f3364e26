-- Schema 7: a check-in's facts live in its record's row (ADR 15).
-- Until schema 6 a check-in was two rows: the record as the device sent it, and a check_ins row
-- of the facts the console counts. Two B-trees and two statements for each check-in, where the
-- storm sends two and a half check-ins for every case. Now they are nullable columns of the
-- record (NULL for records that are not check-ins), and `check_ins` is a view with the same
-- columns as the table it replaces, so the console's queries read it unchanged.
--
-- Records and events go back to rowid tables. ADR 13 made them WITHOUT ROWID (one B-tree instead
-- of two), but their rows are large (a check-in's body is about 550 bytes, an event's JSON about
-- 300): a WITHOUT ROWID table keeps whole rows in its one B-tree, a few to a page, and every
-- insert that fills a page rebalances it with its neighbours. A rowid table appends its rows
-- (SQLite splits the last page without touching the others) and keeps only the small key in the
-- second B-tree. SQLite's own advice is WITHOUT ROWID for rows under about a twentieth of a page.

CREATE TABLE records_7 (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    body        TEXT NOT NULL,
    grid_id     TEXT,
    point_id    TEXT,
    user_id     TEXT,
    at_ms       INTEGER,
    day         TEXT,
    inside_grid INTEGER,
    distance_m  REAL
);
INSERT INTO records_7
    SELECT r.id, r.device_id, r.received_ms, r.body,
           c.grid_id, c.point_id, c.user_id, c.at_ms, c.day, c.inside_grid, c.distance_m
    FROM records r LEFT JOIN check_ins c ON c.id = r.id;
DROP TABLE check_ins;
DROP TABLE records;
ALTER TABLE records_7 RENAME TO records;
-- Only check-ins are indexed (the other records have no grid).
CREATE INDEX check_ins_by_grid_day ON records (grid_id, day) WHERE grid_id IS NOT NULL;
CREATE INDEX check_ins_by_user ON records (user_id, at_ms) WHERE grid_id IS NOT NULL;
CREATE VIEW check_ins (id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m) AS
    SELECT id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m
    FROM records WHERE grid_id IS NOT NULL;

CREATE TABLE doc_events_7 (
    doc_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (doc_id, event_id)
);
INSERT INTO doc_events_7 (doc_id, event_id, json) SELECT doc_id, event_id, json FROM doc_events;
DROP TABLE doc_events;
ALTER TABLE doc_events_7 RENAME TO doc_events;
