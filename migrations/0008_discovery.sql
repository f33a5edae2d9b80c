-- Discovery: a GET of a repository the fleet has never scored queues one scan of it.

ALTER TABLE repos
    -- Added by a person's GET, and named by no imported list since (an import clears it).
    ADD COLUMN discovered         boolean     NOT NULL DEFAULT false,
    -- The last GET of a discovered repository (at most a day old when read): a discovered
    -- repository nobody asks for is retired.
    ADD COLUMN last_asked_at      timestamptz,
    -- When the producer retired it (disabled with its data kept); a GET brings it back.
    -- Operators disable repositories with `enabled` alone, and a GET never re-enables those.
    ADD COLUMN retired_at         timestamptz,
    -- When scorecard last found that GitHub has no such public repository, and until when
    -- that answer is trusted: meanwhile a GET queues nothing (the sink sets both, a score
    -- clears them).
    ADD COLUMN missing_checked_at timestamptz,
    ADD COLUMN missing_until      timestamptz;

-- The producer's retirement sweep reads only discovered, enabled rows, oldest ask first.
CREATE INDEX repos_discovered_asked_idx ON repos (coalesce(last_asked_at, created_at))
    WHERE discovered AND enabled;

-- One row per discovery queued: the fleet-wide hourly budget counts the last hour's rows.
CREATE TABLE discoveries (
    at      timestamptz NOT NULL DEFAULT now(),
    repo_id bigint      NOT NULL REFERENCES repos (id) ON DELETE CASCADE
);
CREATE INDEX discoveries_at_idx ON discoveries (at);

-- A discovery, decided and recorded in one call, so a hundred concurrent GETs queue one scan.
-- Serialised on an advisory lock: the budget's count and the row's state are read and written
-- by one caller at a time (discoveries are rare; a known repository's GET never gets here).
-- Returns what happened ('queued', 'pending', 'known', 'missing', 'budget'), for 'budget' the
-- seconds until the budget has room again, and for 'missing' when GitHub was last checked. The caller publishes the work item inside the
-- same transaction, so a failed publish records nothing.
CREATE FUNCTION discover(
    key text, owner_ text, name_ text, lease interval, per_hour integer, priority_ integer,
    OUT outcome text, OUT retry_secs integer, OUT checked timestamptz
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    r repos%ROWTYPE;
    existed boolean;
    scored boolean;
    failed boolean;
    last_failed timestamptz;
    used integer;
    oldest timestamptz;
BEGIN
    retry_secs := 0;
    PERFORM pg_advisory_xact_lock(hashtext('scorecard-fleet discovery'));
    SELECT * INTO r FROM repos WHERE repo_key = key FOR UPDATE;
    existed := FOUND;
    IF existed THEN
        scored := EXISTS (SELECT 1 FROM scores s WHERE s.repo_id = r.id);
        SELECT f.failed_at INTO last_failed FROM work_failures f WHERE f.repo_id = r.id;
        failed := last_failed IS NOT NULL;
        -- Queued or running: enqueued within the lease, and nothing came back since.
        IF r.last_enqueued_at > now() - lease
           AND coalesce(greatest(r.last_scored_at, last_failed), '-infinity') < r.last_enqueued_at THEN
            outcome := 'pending';
            RETURN;
        END IF;
        IF r.missing_until > now() THEN
            outcome := 'missing';
            checked := r.missing_checked_at;
            RETURN;
        END IF;
        -- Scored, or failed for a reason the "missing" memory does not explain (a later
        -- failure retries on the schedule's backoff), or disabled by an operator: the schedule
        -- answers it. A retired one, a missing one whose memory ran out, and one never tried
        -- are discovered again.
        IF r.retired_at IS NULL AND (NOT r.enabled OR scored
            OR (failed AND (r.missing_until IS NULL OR last_failed > r.missing_checked_at))) THEN
            outcome := 'known';
            RETURN;
        END IF;
    END IF;
    DELETE FROM discoveries WHERE at < now() - interval '2 hours';
    SELECT count(*), min(at) INTO used, oldest FROM discoveries WHERE at > now() - interval '1 hour';
    IF used >= per_hour THEN
        outcome := 'budget';
        retry_secs := greatest(1, ceil(extract(epoch FROM oldest + interval '1 hour' - now())))::integer;
        RETURN;
    END IF;
    IF existed THEN
        UPDATE repos SET enabled = true, retired_at = NULL, last_asked_at = now(),
            next_due_at = greatest(next_due_at, now() + lease), last_enqueued_at = now()
        WHERE id = r.id;
    ELSE
        INSERT INTO repos (repo_key, host, owner, name, priority, discovered, last_asked_at,
                           next_due_at, last_enqueued_at)
        VALUES (key, 'github.com', owner_, name_, priority_, true, now(), now() + lease, now())
        ON CONFLICT (repo_key) DO NOTHING
        RETURNING * INTO r;
        -- An import or the sink added it since the lookup: the schedule has it.
        IF NOT FOUND THEN
            outcome := 'known';
            RETURN;
        END IF;
    END IF;
    INSERT INTO discoveries (repo_id) VALUES (r.id);
    outcome := 'queued';
END
$$;
REVOKE ALL ON FUNCTION discover(text, text, text, interval, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION discover(text, text, text, interval, integer, integer) TO scorecard_api;

-- A GET of a discovered repository, at most once a day per repository: what keeps it from
-- retirement.
CREATE FUNCTION asked_for(ids bigint[])
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    UPDATE repos SET last_asked_at = now()
    WHERE id IN (SELECT id FROM repos WHERE id = ANY(ids) AND discovered
                 AND (last_asked_at IS NULL OR last_asked_at < now() - interval '1 day')
                 ORDER BY id FOR UPDATE);
$$;
REVOKE ALL ON FUNCTION asked_for(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION asked_for(bigint[]) TO scorecard_api;

-- The functions that run as their owner resolve names in this schema only: with pg_temp
-- last, a caller's temporary table cannot stand in for one of the fleet's (a temporary
-- `discoveries` would otherwise lift the budget). 0005's request_scans too.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION discover(text, text, text, interval, integer, integer) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION asked_for(bigint[]) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION request_scans(text[], text[], text[], interval) SET search_path = %I, pg_temp', current_schema());
END
$$;
