-- The checks of a repository's latest result are its score_checks rows (name, score, reason),
-- and in full (details, documentation links) scores.raw_json. The third copy, as jsonb in
-- scores.checks, was parsed, compressed and written for every result and read by nothing.
-- The sink no longer writes it (and clears it on update). Expand, then contract: the column
-- only loses NOT NULL here, so sinks of the previous release, which still write it, keep
-- working through a rolling update; a later migration drops it once none runs.
ALTER TABLE scores ALTER COLUMN checks DROP NOT NULL;

-- scorecard's output compresses to ~2-3 KB. With the default EXTENDED storage a value that
-- size is moved out of line into the TOAST table (more rows and index entries per result, and
-- as many dead ones per update); MAIN keeps it compressed in the row.
ALTER TABLE scores ALTER COLUMN raw_json SET STORAGE MAIN;
