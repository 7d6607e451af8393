-- Every change to a conversation is an entry of its seq stream. Besides the messages
-- people write (`text`, `image`, `file`, `audio`, `video`, `location`, `custom`) the
-- stream holds entries that act on another message (`edit`, `recall`, `reaction`, with
-- its seq in `target`) and entries the server writes when the group changes
-- (`system`). Only the written kinds count as unread.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text'
    CHECK (kind IN ('text', 'image', 'file', 'audio', 'video', 'location', 'custom',
                    'system', 'edit', 'recall', 'reaction'));
-- A reference to a file in the company's own storage (url, mime, size, ...), checked
-- per kind before it is stored.
ALTER TABLE messages ADD COLUMN attach JSONB;
-- User ids the message mentions; 0 stands for everyone (@all).
ALTER TABLE messages ADD COLUMN mentions BIGINT[];
-- The seq an edit, recall or reaction acts on.
ALTER TABLE messages ADD COLUMN target BIGINT;
-- What a system entry did ({action, actor, users, role?, title?}) or what a reaction
-- entry set ({emoji, on}).
ALTER TABLE messages ADD COLUMN meta JSONB;

-- History, sync and the conversation list fold the entries that act on the messages
-- they return: one probe per message.
CREATE INDEX messages_conv_target ON messages (conv, target) WHERE target IS NOT NULL;

-- A member's role in a group, and the seq of the entry that added them: a member added
-- later reads the conversation from there on.
ALTER TABLE members ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member'));
ALTER TABLE members ADD COLUMN joined_seq BIGINT NOT NULL DEFAULT 0;
UPDATE members m SET role = 'owner'
  FROM conversations c
 WHERE c.id = m.conv AND c.kind = 'group' AND c.created_by = m.user_id;

-- Who blocked whom: a blocked user cannot open a direct conversation with, nor send
-- into one to, the user who blocked them.
CREATE TABLE blocks (
    blocker    BIGINT NOT NULL REFERENCES users (id),
    blocked    BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker, blocked),
    CHECK (blocker <> blocked)
);

ALTER TABLE users ADD COLUMN avatar_url TEXT;
