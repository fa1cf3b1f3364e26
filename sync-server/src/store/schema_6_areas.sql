-- Schema 6: a case's community and street follow from its grid (ADR 14).
-- Until schema 5 every case had a membership row for its grid, its community and its street, and
-- each change to it a scope_changes row for each: two of every four rows a new case wrote, with
-- their indexes, said again what the catalog already says. Now a supervisor's community or street
-- is read as the grids placed in it, and a grid's placement has a history, so that a grid moved
-- to another community brings its cases to the new community's people (whole, as a scope granted
-- later does) and tells the old community's devices they left.

-- Which grids make up a community or street, and from when (to_seq NULL: still there).
CREATE TABLE grid_placements (
    scope    TEXT NOT NULL,
    grid_id  TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER,
    PRIMARY KEY (scope, grid_id, from_seq)
) WITHOUT ROWID;
INSERT INTO grid_placements (scope, grid_id, from_seq) SELECT 'community:' || community, id, 0 FROM grids WHERE community != '';
INSERT INTO grid_placements (scope, grid_id, from_seq) SELECT 'street:' || street, id, 0 FROM grids WHERE street != '';

-- Every scope a user's devices and console see, with the grids of their communities and streets
-- spelled out; a grid seen since it was placed there or since the user was given the area,
-- whichever came later.
CREATE VIEW user_areas (user_id, scope, granted_seq) AS
    SELECT user_id, scope, granted_seq FROM user_scopes
    UNION ALL
    SELECT s.user_id, 'grid:' || p.grid_id, max(s.granted_seq, p.from_seq)
    FROM user_scopes s JOIN grid_placements p ON p.scope = s.scope AND p.to_seq IS NULL;

-- The rows the grids' rows already imply. Derived data, not anything a device sent.
DELETE FROM membership WHERE scope LIKE 'community:%' OR scope LIKE 'street:%';
DELETE FROM scope_changes WHERE scope LIKE 'community:%' OR scope LIKE 'street:%';
