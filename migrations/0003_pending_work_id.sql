-- A claim whose publish was not confirmed (an ack timeout: the server may have stored it
-- anyway) is handed back with the work id it was published under, and the next claim of the
-- row publishes that same id again. The server's Nats-Msg-Id dedup, the workers' scan
-- register and Job adoption then all see one work item, where a fresh id would have been a
-- second scan of the repository. The sink clears it once a result or failure is recorded:
-- from then on the claim it belonged to is answered.
ALTER TABLE repos ADD COLUMN pending_work_id text;
