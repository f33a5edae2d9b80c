-- The checks of a repository's latest result are its score_checks rows (name, score, reason),
-- and in full (details, documentation links) scores.raw_json. A third copy as jsonb in
-- scores.checks was parsed, compressed and written for every result and read by nothing.
ALTER TABLE scores DROP COLUMN checks;

-- scorecard's output compresses to ~2-3 KB. With the default EXTENDED storage a value that
-- size is moved out of line into the TOAST table (two more rows and an index entry per
-- result, and as many dead ones per update); MAIN keeps it compressed in the row.
ALTER TABLE scores ALTER COLUMN raw_json SET STORAGE MAIN;
