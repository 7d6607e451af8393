-- Per-member settings of a conversation and the queue of offline notifications.
--
-- Settings are the member's own, not the conversation's: they live on the member's
-- row and a change of them is an event of the member's own stream (`settings`), never
-- an entry of the conversation's seq stream.
--
-- `muted_until`: NULL (not muted), a time (muted until then), or 'infinity' (muted
-- until unmuted).
ALTER TABLE members
    ADD COLUMN muted_until TIMESTAMPTZ,
    ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN archived BOOLEAN NOT NULL DEFAULT false;

-- Messages to look at for offline notifications. The writer adds one row per
-- message people write (not edits, recalls, reactions, system entries or broadcasts)
-- in the transaction that stores it, and only while `notify.url` is set; a worker on
-- any node claims due rows (`FOR UPDATE SKIP LOCKED`), expands each into one
-- notification per member to tell (into `notify_outbox`) and deletes it, in one
-- transaction. `user_id` NULL: every member (the first look, at once); a user: that
-- member only, looked at again after `notify.delay` because they had a socket open
-- at the first look.
CREATE TABLE notify_queue (
    id        BIGSERIAL PRIMARY KEY,
    conv      BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    user_id   BIGINT,
    -- The message's `created_at` (which also finds its partition).
    stored_at TIMESTAMPTZ NOT NULL,
    due_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX notify_queue_due ON notify_queue (due_at);

-- Notifications to POST, one row per (message, member): `id` is "<conv>:<seq>:<user>",
-- the same across retries, so the receiver can drop duplicates. `next_at` is when the
-- row is due: a worker that claims a row moves it past the POST's timeout (a node
-- that dies mid-POST leaves the row to be claimed again then), a failed POST moves it
-- by the backoff, a delivered one is deleted.
CREATE TABLE notify_outbox (
    id        TEXT PRIMARY KEY,
    body      JSONB NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL,
    attempts  INT NOT NULL DEFAULT 0,
    next_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX notify_outbox_next ON notify_outbox (next_at);
