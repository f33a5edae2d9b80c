-- The export writes a day of history at a time and, each run, only the scan dates with results
-- recorded since its last run. Rows arrive in roughly recorded_at order, and so roughly in
-- scored_at order: BRIN finds both ranges for a few pages of index at any size.
CREATE INDEX score_history_scored_brin ON score_history USING brin (scored_at);
CREATE INDEX score_history_recorded_brin ON score_history USING brin (recorded_at);
