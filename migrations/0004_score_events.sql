-- Change events waiting to be published: the transactional outbox. A row is written in the
-- transaction of the batch that changed the repository's latest score, and deleted once
-- JetStream has acknowledged the event, so a sink killed between its commit and the publish
-- publishes the event after its restart (the work id as Nats-Msg-Id drops a second copy).
CREATE TABLE score_events (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_id    text        NOT NULL,
    -- A ScoreChanged protobuf.
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
