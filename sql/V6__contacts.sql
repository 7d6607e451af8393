-- Contacts, friend requests and each user's own event stream.
--
-- A user's stream holds what happened to them outside any conversation (a friend
-- request to or from them, its answer, an unfriend, a block from another of their
-- devices). It has its own cursor, like a conversation's seq: `users.events_seq` is
-- the last seq given out, taken under the user's row lock in the transaction that
-- makes the change, so the stream has no gaps and a client that syncs from its cursor
-- finds every event after it.

ALTER TABLE users ADD COLUMN events_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE user_events (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    seq        BIGINT NOT NULL,
    -- The event as the wire names it ({"kind": "request", ...}).
    event      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);

-- Every friend request ever sent, with how it ended. A request stays `pending` until
-- its recipient accepts or declines it, or its sender cancels it (a block cancels it
-- too).
CREATE TABLE contact_requests (
    id          BIGSERIAL PRIMARY KEY,
    from_user   BIGINT NOT NULL REFERENCES users (id),
    to_user     BIGINT NOT NULL REFERENCES users (id),
    note        TEXT,
    status      TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at TIMESTAMPTZ,
    CHECK (from_user <> to_user),
    CHECK ((status = 'pending') = (answered_at IS NULL))
);

-- At most one pending request per pair, whichever way it goes.
CREATE UNIQUE INDEX contact_requests_pending_pair
    ON contact_requests (LEAST(from_user, to_user), GREATEST(from_user, to_user))
    WHERE status = 'pending';
-- A user's incoming and outgoing pending requests.
CREATE INDEX contact_requests_pending_to ON contact_requests (to_user) WHERE status = 'pending';
CREATE INDEX contact_requests_pending_from ON contact_requests (from_user) WHERE status = 'pending';

-- Friendship, one row per direction: (a, b) and (b, a) are written and removed
-- together, so a user's contacts are one index range.
CREATE TABLE contacts (
    user_id BIGINT NOT NULL REFERENCES users (id),
    peer    BIGINT NOT NULL REFERENCES users (id),
    since   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, peer),
    CHECK (user_id <> peer)
);

