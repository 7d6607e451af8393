-- Users, conversations, members and messages of the chat node.
--
-- Messages are partitioned so that expiry drops whole partitions: first by tier
-- (LIST), then by creation time (RANGE). Range partitions are created ahead of time by
-- the store (at start and by the upkeep leader); the DEFAULT partitions only catch rows
-- that arrive before their range exists.
--
-- Postgres cannot enforce a UNIQUE constraint on a partitioned table unless it holds
-- the partition keys, so (conv, seq) and (conv, sender, cid) are kept unique by the
-- write protocol instead: every insert into `messages` happens in a transaction that
-- first locks the conversation row (SELECT ... FOR UPDATE), takes its seqs from
-- `conversations.last_seq` and looks the cids up under that lock. Writers of one
-- conversation are therefore serialised, whichever node they run on.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    -- argon2id PHC string; NULL for users provisioned by the company's backend.
    password_hash TEXT,
    external_id   TEXT UNIQUE,
    org           TEXT,
    roles         TEXT[] NOT NULL DEFAULT '{}',
    jobs          TEXT[] NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX users_username_prefix ON users (username text_pattern_ops);

-- User 0 is the system sender of broadcasts.
INSERT INTO users (id, username, display_name) VALUES (0, 'system', 'System');

CREATE TABLE conversations (
    id            BIGSERIAL PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('direct', 'group', 'broadcast')),
    title         TEXT,
    -- For direct conversations the two members, lower id first: one pair, one row.
    direct_a      BIGINT REFERENCES users (id),
    direct_b      BIGINT REFERENCES users (id),
    -- For broadcast conversations the canonical audience path (org/1/role/3).
    audience      TEXT UNIQUE,
    default_tier  TEXT NOT NULL DEFAULT 'normal' CHECK (default_tier IN ('normal', 'important')),
    last_seq      BIGINT NOT NULL DEFAULT 0,
    last_activity TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by    BIGINT REFERENCES users (id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (direct_a, direct_b),
    CHECK ((kind = 'direct') = (direct_a IS NOT NULL AND direct_b IS NOT NULL)),
    CHECK (direct_a IS NULL OR direct_a < direct_b),
    CHECK ((kind = 'broadcast') = (audience IS NOT NULL))
);

-- Membership of direct and group conversations, and every member's read cursor. For
-- broadcast conversations membership comes from the audience; a row here only holds
-- the reader's cursor and is created on first read.
CREATE TABLE members (
    conv      BIGINT NOT NULL REFERENCES conversations (id),
    user_id   BIGINT NOT NULL REFERENCES users (id),
    read_seq  BIGINT NOT NULL DEFAULT 0,
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (conv, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conv);

CREATE TABLE messages (
    conv       BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    sender     BIGINT NOT NULL,
    cid        TEXT NOT NULL,
    body       TEXT NOT NULL,
    tier       TEXT NOT NULL CHECK (tier IN ('normal', 'important')),
    reply_to   BIGINT,
    created_at TIMESTAMPTZ NOT NULL
) PARTITION BY LIST (tier);

CREATE TABLE messages_normal PARTITION OF messages
    FOR VALUES IN ('normal') PARTITION BY RANGE (created_at);
CREATE TABLE messages_important PARTITION OF messages
    FOR VALUES IN ('important') PARTITION BY RANGE (created_at);
CREATE TABLE messages_normal_default PARTITION OF messages_normal DEFAULT;
CREATE TABLE messages_important_default PARTITION OF messages_important DEFAULT;

-- History, sync, unread and last message walk (conv, seq); dedupe looks up
-- (conv, sender, cid) under the conversation lock.
CREATE INDEX messages_conv_seq ON messages (conv, seq);
CREATE INDEX messages_conv_sender_cid ON messages (conv, sender, cid);
