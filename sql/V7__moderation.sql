-- Moderation of groups and deleted users.
--
-- A member muted by an admin (or the owner, or the company's backend) may read the
-- group but not write to it until `silenced_until` has passed. It is read under the
-- conversation's row lock with the rest of the sender's membership, so a send never
-- slips past a mute committed before it.
ALTER TABLE members ADD COLUMN silenced_until TIMESTAMPTZ;

-- Users banned from a group: not members, and not to be added again until unbanned.
CREATE TABLE bans (
    conv       BIGINT NOT NULL REFERENCES conversations (id),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    -- Who banned them (0: the company's backend).
    banned_by  BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conv, user_id)
);

-- A deleted user keeps their row (their messages still name them as sender) but can
-- no longer log in, is found by no search, and cannot be added anywhere.
ALTER TABLE users ADD COLUMN deleted_at TIMESTAMPTZ;
