-- scorecard-fleet schema. Only the producer applies migrations; the worker and the sink
-- refuse to start unless the database is at exactly the version they were built for.

-- Every repository the fleet keeps scored. One row per repository, millions of rows.
CREATE TABLE repos (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Identity: lower-cased 'github.com/owner/name'. GitHub resolves names case-insensitively,
    -- so 'OSSF/Scorecard' and 'ossf/scorecard' must be one row.
    repo_key         text        NOT NULL UNIQUE,
    -- The spelling people gave, for display and for scorecard's --repo.
    host             text        NOT NULL,
    owner            text        NOT NULL,
    name             text        NOT NULL,
    -- Disabled repos stay (with their scores) but are never scheduled.
    enabled          boolean     NOT NULL DEFAULT true,
    priority         integer     NOT NULL DEFAULT 0,
    -- When the producer should next enqueue it. The producer bumps it by a lease when it
    -- enqueues, so an item whose result never arrives is scheduled again; the sink sets it
    -- from the result (scored time + interval + jitter) or the failure class.
    next_due_at      timestamptz NOT NULL DEFAULT now(),
    last_enqueued_at timestamptz,
    last_scored_at   timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT repos_key_matches_name CHECK (repo_key = lower(host || '/' || owner || '/' || name))
);

-- The due scan (enabled AND next_due_at <= now() ORDER BY next_due_at) must walk an index,
-- not the table: partial, because disabled repos are never due.
CREATE INDEX repos_due_idx ON repos (next_due_at) WHERE enabled;

-- The latest result per repository: what users read.
CREATE TABLE scores (
    repo_id           bigint      PRIMARY KEY REFERENCES repos (id) ON DELETE CASCADE,
    work_id           text        NOT NULL,
    -- 0.0..10.0; NULL when scorecard reported -1 (inconclusive). NULL and 0 are different.
    score             numeric(3, 1) CHECK (score BETWEEN 0 AND 10),
    commit_sha        text        NOT NULL,
    scorecard_version text        NOT NULL,
    scorecard_commit  text        NOT NULL,
    -- The run's own date: decides which of two results is newer, so a late old result
    -- never overwrites a new one.
    scored_at         timestamptz NOT NULL,
    exit_code         integer     NOT NULL,
    -- Checks as the fleet reads them: [{name, score, reason, details, doc_url}].
    -- lz4, not the default pglz: compressing ~10 KB a row with pglz made it the sink's
    -- dominant cost (measured: 5x slower inserts).
    checks            jsonb       COMPRESSION lz4 NOT NULL,
    -- scorecard's line verbatim (text, not jsonb, so nothing is reordered or lost).
    raw_json          text        COMPRESSION lz4 NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Per-check scores of the latest result, so "Maintained < 3" is an indexed query and not
-- JSON parsing at query time. No foreign key: the sink replaces a repository's checks in the
-- same transaction as its scores row, and checking ~18 rows a result against scores cost a
-- quarter of the sink's time (measured).
CREATE TABLE score_checks (
    repo_id bigint   NOT NULL,
    name    text     NOT NULL,
    -- 0..10; NULL when the check was inconclusive (-1).
    score   smallint CHECK (score BETWEEN 0 AND 10),
    reason  text     NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX score_checks_name_score_idx ON score_checks (name, score);

-- Every result ever recorded, one row per work item. The unique work_id makes a redelivered
-- result a no-op. No raw JSON here: at ~10 KB a result and 26 runs a year per repository it
-- would dominate the database; the latest raw output lives in scores and the results stream.
CREATE TABLE score_history (
    work_id           text        PRIMARY KEY,
    repo_id           bigint      NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    score             numeric(3, 1) CHECK (score BETWEEN 0 AND 10),
    commit_sha        text        NOT NULL,
    scorecard_version text        NOT NULL,
    scored_at         timestamptz NOT NULL,
    exit_code         integer     NOT NULL,
    -- {check name: score or null}: enough to chart a check over time.
    check_scores      jsonb       NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX score_history_repo_idx ON score_history (repo_id, scored_at DESC);

-- The latest failure per repository (cleared by the next success), for operators and for
-- scheduling the retry by class.
CREATE TABLE work_failures (
    repo_id     bigint      PRIMARY KEY REFERENCES repos (id) ON DELETE CASCADE,
    work_id     text        NOT NULL,
    -- FailureClass without its prefix: SCAN_FAILED, TIMEOUT, RATE_LIMITED, ...
    class       text        NOT NULL,
    message     text        NOT NULL,
    attempts    integer     NOT NULL,
    failed_at   timestamptz NOT NULL,
    -- Failures in a row: a repository that keeps failing (deleted, renamed) is retried ever
    -- more rarely instead of daily forever.
    consecutive integer     NOT NULL DEFAULT 1
);
CREATE INDEX work_failures_class_idx ON work_failures (class);
