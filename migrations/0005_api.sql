-- What the api service reads and the one thing it may do.

-- scorecard's full output of the newest result of each scanned commit, for a retention period
-- (SINK_RAW_HISTORY_DAYS), so the api can answer `?commit=` with the full result, details and
-- all. One row per (repository, commit), not per result: `?commit=` answers with the newest
-- result of a commit, and most repositories' commit does not change between two scans, so
-- this keeps one row where a row per result would keep six. Its own table, not a column of
-- score_history: history stays narrow for charts and the retention is a plain DELETE.
-- Measured (dev/bench api): 4,282 bytes a row with its index, 4.3 GB per million rows.
CREATE TABLE score_raw (
    repo_id    bigint      NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    commit_sha text        NOT NULL,
    work_id    text        NOT NULL,
    scored_at  timestamptz NOT NULL,
    raw_json   text        COMPRESSION lz4 NOT NULL,
    PRIMARY KEY (repo_id, commit_sha)
);
ALTER TABLE score_raw ALTER COLUMN raw_json SET STORAGE MAIN;
-- For the retention DELETE; rows arrive in roughly scored_at order, so BRIN is enough.
CREATE INDEX score_raw_scored_brin ON score_raw USING brin (scored_at);

-- "Repositories by one check's score", a page at a time: the keyset (score, repo_id) must be
-- in the index, or every page sorts all repositories of that score. Replaces (name, score).
CREATE INDEX score_checks_name_score_repo_idx ON score_checks (name, score, repo_id);
DROP INDEX score_checks_name_score_idx;

-- A person's scan request (`producer enqueue`, the api's POST .../scan): unknown repositories
-- get a row, and every one's due time is pushed forward by the lease, so the scheduled lane does
-- not scan it meanwhile (never pulling a later due time closer). SECURITY DEFINER so the api's
-- read-only role can do exactly this and nothing else; the search_path is pinned to this
-- schema so the caller's cannot redirect the names.
CREATE FUNCTION request_scans(keys text[], owners text[], names text[], lease interval)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    INSERT INTO repos (repo_key, host, owner, name)
    SELECT k, 'github.com', o, n FROM UNNEST(keys, owners, names) AS u(k, o, n)
    ON CONFLICT (repo_key) DO NOTHING;
    UPDATE repos SET next_due_at = greatest(next_due_at, now() + lease), last_enqueued_at = now()
    WHERE id IN (SELECT id FROM repos WHERE repo_key = ANY(keys) ORDER BY id FOR UPDATE);
$$;
REVOKE ALL ON FUNCTION request_scans(text[], text[], text[], interval) FROM PUBLIC;

-- The api's role: read the scores, ask for scans. Roles belong to the whole server, so it is
-- created once; operators grant it to the api's login (deploy/base/fleet/api.yaml says how).
DO $$
BEGIN
    CREATE ROLE scorecard_api NOLOGIN;
EXCEPTION
    -- Another database of this server made it first (or at the same moment).
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
GRANT SELECT ON repos, scores, score_checks, score_history, score_raw, work_failures,
    _sqlx_migrations TO scorecard_api;
GRANT EXECUTE ON FUNCTION request_scans(text[], text[], text[], interval) TO scorecard_api;
