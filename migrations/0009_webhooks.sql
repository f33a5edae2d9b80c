-- Webhooks: subscriptions (owned by an API key's name) and the log of their deliveries.

-- What an API-key holder asked to be told about, and where. No secret here: the signing
-- secret is derived from the master key (a setting), the id and the salt, so this table lets
-- nobody sign a webhook. Filters: a repository is in scope when listed in `repos` or its
-- owner in `owners` (both empty: every repository); then any trigger (any_change, the
-- aggregate dropping below `below`, a check dropping, restricted to `checks` when not empty)
-- makes a delivery.
CREATE TABLE webhook_subscriptions (
    id             uuid        PRIMARY KEY,
    -- The API key's name (the api's keys file), never the key.
    owner          text        NOT NULL,
    url            text        NOT NULL,
    -- Lower-cased `github.com/owner/name` and `github.com/owner`, as repos.repo_key spells them.
    repos          text[]      NOT NULL DEFAULT '{}',
    owners         text[]      NOT NULL DEFAULT '{}',
    -- Check names as scorecard spells them (`Code-Review`).
    checks         text[]      NOT NULL DEFAULT '{}',
    below          numeric(3, 1),
    check_drops    boolean     NOT NULL DEFAULT false,
    any_change     boolean     NOT NULL DEFAULT false,
    -- Random, not secret: makes each secret unique even under a reused id, and lets a
    -- secret be rotated by a new salt.
    secret_salt    bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Set when a delivery was dead-lettered after its retry window; a later success clears it.
    failing_since  timestamptz,
    failing_reason text,
    CHECK (below IS NOT NULL OR check_drops OR any_change)
);
-- The subscriptions of an event: its repository in `repos`, its owner in `owners`, or no
-- scope at all. Three index scans OR'ed in a bitmap, whatever the number of subscriptions.
CREATE INDEX webhook_subscriptions_repos_idx ON webhook_subscriptions USING gin (repos);
CREATE INDEX webhook_subscriptions_owners_idx ON webhook_subscriptions USING gin (owners);
CREATE INDEX webhook_subscriptions_everything_idx ON webhook_subscriptions (id)
    WHERE repos = '{}' AND owners = '{}';
-- An owner's list.
CREATE INDEX webhook_subscriptions_owner_idx ON webhook_subscriptions (owner, created_at);

-- Every attempt of every delivery, for the owner to read (newest first). Pruned after
-- WEBHOOKS_LOG_DAYS by the webhooks service. The error is short and holds no secret and at
-- most a small cap of a response.
CREATE TABLE webhook_deliveries (
    subscription_id uuid        NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    webhook_id      text        NOT NULL,
    kind            text        NOT NULL,
    attempt         integer     NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    error           text,
    outcome         text        NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'dead'))
);
CREATE INDEX webhook_deliveries_subscription_at_idx ON webhook_deliveries (subscription_id, at DESC);
-- The attempt number of a delivery's next attempt.
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id);
-- For the retention DELETE; rows arrive in `at` order, so BRIN is enough.
CREATE INDEX webhook_deliveries_at_brin ON webhook_deliveries USING brin (at);

-- A new subscription, for the api's read-only role. Returns its id and salt, from which the
-- api derives the secret it shows once.
CREATE FUNCTION create_webhook_subscription(
    owner_ text, url_ text, repos_ text[], owners_ text[], checks_ text[], below_ numeric,
    check_drops_ boolean, any_change_ boolean, OUT id uuid, OUT secret_salt bytea
)
LANGUAGE sql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    INSERT INTO webhook_subscriptions (id, owner, url, repos, owners, checks, below, check_drops,
                                       any_change, secret_salt)
    VALUES (gen_random_uuid(), owner_, url_, coalesce(repos_, '{}'), coalesce(owners_, '{}'),
            coalesce(checks_, '{}'), below_, check_drops_, any_change_,
            uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
    RETURNING id, secret_salt;
$$;
REVOKE ALL ON FUNCTION create_webhook_subscription(text, text, text[], text[], text[], numeric, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_webhook_subscription(text, text, text[], text[], text[], numeric, boolean, boolean) TO scorecard_api;

-- Deletes subscription `id` if `owner_` owns it; whether it did. Its log goes with it.
CREATE FUNCTION delete_webhook_subscription(id_ uuid, owner_ text)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    WITH gone AS (DELETE FROM webhook_subscriptions WHERE id = id_ AND owner = owner_ RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone);
$$;
REVOKE ALL ON FUNCTION delete_webhook_subscription(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION delete_webhook_subscription(uuid, text) TO scorecard_api;

GRANT SELECT ON webhook_subscriptions, webhook_deliveries TO scorecard_api;

-- As 0008's: names resolve in this schema only, pg_temp last.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION create_webhook_subscription(text, text, text[], text[], text[], numeric, boolean, boolean) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION delete_webhook_subscription(uuid, text) SET search_path = %I, pg_temp', current_schema());
END
$$;
