-- Schema 2: full-text search over case titles and descriptions.
-- The tokens column holds text pre-split by store::search (Chinese runs as overlapping
-- bigrams), so unicode61 only has to split on spaces.
CREATE VIRTUAL TABLE case_search USING fts5 (tokens, tokenize = 'unicode61');
