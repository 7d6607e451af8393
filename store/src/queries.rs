//! Every SQL statement of the node. Nothing outside this crate writes SQL.
//!
//! Statements that read messages filter by retention: a message is retained while its
//! `created_at` is after its tier's cutoff, so an expired message is never returned or
//! counted, whether or not its partition has been dropped yet.

/// The retention predicate over the messages alias `$m`, with the normal and important
/// cutoffs in the parameters `$n` and `$i`.
macro_rules! retained {
    ($m:literal, $n:literal, $i:literal) => {
        concat!(
            $m,
            ".created_at > CASE ",
            $m,
            ".tier WHEN 'important' THEN ",
            $i,
            "::timestamptz ELSE ",
            $n,
            "::timestamptz END"
        )
    };
}

/// The conversations user `$1` can see: direct and group conversations by membership,
/// broadcast conversations by audience (`$2`, the user's audiences). `read_seq` is 0
/// where a broadcast has not been read yet.
macro_rules! visible {
    () => {
        "WITH vis AS (
            SELECT c.id, c.kind, c.title, c.audience, c.default_tier, c.last_seq,
                   c.last_activity, m.read_seq
              FROM members m JOIN conversations c ON c.id = m.conv
             WHERE m.user_id = $1 AND c.kind <> 'broadcast'
            UNION ALL
            SELECT c.id, c.kind, c.title, c.audience, c.default_tier, c.last_seq,
                   c.last_activity, COALESCE(m.read_seq, 0)
              FROM conversations c
              LEFT JOIN members m ON m.conv = c.id AND m.user_id = $1
             WHERE c.kind = 'broadcast' AND c.audience = ANY($2::text[])
        ) "
    };
}

/// Unread of the `vis` row `v` for user `$1`, cutoffs in `$3`, `$4`.
macro_rules! unread {
    () => {
        concat!(
            "(CASE WHEN v.last_seq <= v.read_seq THEN 0 ELSE (
                SELECT count(*) FROM messages x
                 WHERE x.conv = v.id AND x.seq > v.read_seq AND x.sender <> $1 AND ",
            retained!("x", "$3", "$4"),
            ") END)::bigint"
        )
    };
}

/// Columns of a message row, in the order `row_to_message` reads them.
macro_rules! message_columns {
    ($m:literal) => {
        concat!(
            $m,
            ".conv, ",
            $m,
            ".seq, ",
            $m,
            ".sender, ",
            $m,
            ".cid, ",
            $m,
            ".body, ",
            $m,
            ".tier, ",
            $m,
            ".created_at, ",
            $m,
            ".reply_to"
        )
    };
}

// ---- users ----

pub const INSERT_USER: &str =
    "INSERT INTO users (username, display_name, password_hash, external_id, org, roles, jobs)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

pub const PROVISION_USER: &str =
    "INSERT INTO users (username, display_name, external_id, org, roles, jobs)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (external_id) DO NOTHING RETURNING id";

pub const USER_BY_EXTERNAL_ID: &str = "SELECT id FROM users WHERE external_id = $1";

pub const USER_AUTH: &str = "SELECT id, password_hash FROM users WHERE username = $1 AND id <> 0";

pub const USER_BY_ID: &str =
    "SELECT id, username, display_name, org, roles, jobs FROM users WHERE id = $1 AND id <> 0";

pub const SEARCH_USERS: &str = "SELECT id, username, display_name FROM users
     WHERE username LIKE $1 ESCAPE '\\' AND id <> 0 ORDER BY username LIMIT $2";

pub const SET_ATTRIBUTES: &str =
    "UPDATE users SET org = $2, roles = $3, jobs = $4 WHERE id = $1 AND id <> 0";

pub const COUNT_USERS: &str = "SELECT count(*) FROM users WHERE id = ANY($1::bigint[]) AND id <> 0";

// ---- conversations ----

pub const INSERT_DIRECT: &str =
    "INSERT INTO conversations (kind, direct_a, direct_b, created_by, default_tier)
     VALUES ('direct', $1, $2, $3, $4)
     ON CONFLICT (direct_a, direct_b) DO NOTHING RETURNING id";

pub const DIRECT_BY_PAIR: &str =
    "SELECT id FROM conversations WHERE direct_a = $1 AND direct_b = $2";

pub const INSERT_GROUP: &str = "INSERT INTO conversations (kind, title, created_by, default_tier)
     VALUES ('group', $1, $2, $3) RETURNING id";

pub const INSERT_MEMBERS: &str = "INSERT INTO members (conv, user_id)
     SELECT $1, u FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING";

pub const BROADCAST_CONVERSATION: &str =
    "INSERT INTO conversations (kind, audience, title, created_by)
     VALUES ('broadcast', $1, $1, 0)
     ON CONFLICT (audience) DO UPDATE SET audience = EXCLUDED.audience RETURNING id";

/// Whether user `$1` (audiences `$2`) may see conversation `$3`.
pub const MEMBERSHIP: &str = "SELECT c.kind, c.last_seq, COALESCE(m.read_seq, 0),
            CASE WHEN c.kind = 'broadcast' THEN c.audience = ANY($2::text[])
                 ELSE m.user_id IS NOT NULL END
       FROM conversations c
       LEFT JOIN members m ON m.conv = c.id AND m.user_id = $1
      WHERE c.id = $3";

pub const USER_CONVERSATIONS: &str =
    "SELECT m.conv FROM members m JOIN conversations c ON c.id = m.conv
     WHERE m.user_id = $1 AND c.kind <> 'broadcast'";

pub const MEMBERS: &str = "SELECT user_id FROM members WHERE conv = $1 ORDER BY user_id";

pub const CONVERSATION_KIND: &str = "SELECT kind, audience FROM conversations WHERE id = $1";

/// The caller's conversations, newest activity first, with unread and last message.
/// `$5`: keyset cursor (a conversation id) or NULL; `$6`: limit; `$7`: one id or NULL.
pub const LIST_CONVERSATIONS: &str = concat!(
    visible!(),
    "SELECT v.id, v.kind, v.title, v.audience, v.last_seq, v.read_seq, ",
    unread!(),
    ",
       CASE WHEN v.kind = 'broadcast' THEN NULL
            ELSE (SELECT array_agg(user_id ORDER BY user_id) FROM members WHERE conv = v.id) END,
       v.default_tier,
       ",
    message_columns!("lm"),
    "
  FROM vis v
  LEFT JOIN LATERAL (
       SELECT * FROM messages x WHERE x.conv = v.id AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT 1) lm ON true
 WHERE ($5::bigint IS NULL
        OR (v.last_activity, v.id) < (SELECT last_activity, id FROM conversations WHERE id = $5))
   AND ($7::bigint IS NULL OR v.id = $7)
 ORDER BY v.last_activity DESC, v.id DESC
 LIMIT $6"
);

/// Unread per visible conversation that has any.
pub const UNREAD: &str = concat!(
    visible!(),
    "SELECT v.id, ",
    unread!(),
    " AS n FROM vis v WHERE v.last_seq > v.read_seq"
);

/// Visible conversations whose `last_seq` is past the client's cursor (`$5` ids,
/// `$6` cursors; a missing cursor is 0), at most `$7` of them, by id.
pub const SYNC_CONVERSATIONS: &str = concat!(
    visible!(),
    ", cur AS (SELECT * FROM unnest($5::bigint[], $6::bigint[]) AS t(conv, after))
SELECT v.id, v.last_seq, v.read_seq, ",
    unread!(),
    ", COALESCE(cur.after, 0)
  FROM vis v LEFT JOIN cur ON cur.conv = v.id
 WHERE v.last_seq > COALESCE(cur.after, 0)
 ORDER BY v.id
 LIMIT $7"
);

/// Up to `$5` retained messages after each cursor (`$1` ids, `$2` cursors).
pub const SYNC_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    " FROM unnest($1::bigint[], $2::bigint[]) AS t(conv, after)
  CROSS JOIN LATERAL (
       SELECT * FROM messages x WHERE x.conv = t.conv AND x.seq > t.after AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq LIMIT $5) x
 ORDER BY x.conv, x.seq"
);

// ---- messages ----

/// Locks the conversation row: every writer of one conversation, on any node, queues
/// here. This is what keeps (conv, seq) and (conv, sender, cid) unique. `NO KEY UPDATE`
/// conflicts with itself but not with the key-share locks of foreign-key checks (a
/// first read of a broadcast inserting its cursor row does not wait for a commit).
pub const LOCK_CONVERSATION: &str =
    "SELECT last_seq, default_tier FROM conversations WHERE id = $1 FOR NO KEY UPDATE";

/// Messages of the batch already stored (a retried cid), looked up under the lock.
pub const FIND_CIDS: &str = concat!(
    "SELECT ",
    message_columns!("m"),
    " FROM messages m
  JOIN unnest($2::bigint[], $3::text[]) AS k(sender, cid) ON k.sender = m.sender AND k.cid = m.cid
 WHERE m.conv = $1"
);

pub const INSERT_MESSAGES: &str = "INSERT INTO messages (conv, seq, sender, cid, body, tier, reply_to, created_at)
     SELECT $1, * , $8 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])";

pub const ADVANCE_CONVERSATION: &str =
    "UPDATE conversations SET last_seq = $2, last_activity = $3 WHERE id = $1";

/// Sending moves the sender's read cursor to its own message.
pub const ADVANCE_SENDERS: &str = "UPDATE members m SET read_seq = GREATEST(m.read_seq, k.seq)
      FROM unnest($2::bigint[], $3::bigint[]) AS k(uid, seq)
     WHERE m.conv = $1 AND m.user_id = k.uid";

pub const HISTORY: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    " FROM messages x WHERE x.conv = $1 AND x.seq < $2 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT $5"
);

pub const OLDEST_RETAINED: &str = concat!(
    "SELECT min(x.seq) FROM messages x WHERE x.conv = $1 AND ",
    retained!("x", "$2", "$3")
);

pub const UNREAD_ONE: &str = concat!(
    "SELECT count(*) FROM messages x WHERE x.conv = $1 AND x.seq > $2 AND x.sender <> $3 AND ",
    retained!("x", "$4", "$5")
);

/// Moves a member's cursor forward, never back, and never past `last_seq`.
pub const MARK_READ: &str =
    "UPDATE members m SET read_seq = GREATEST(m.read_seq, LEAST($3, c.last_seq))
      FROM conversations c
     WHERE m.conv = $1 AND m.user_id = $2 AND c.id = m.conv
 RETURNING m.read_seq";

/// The same for a broadcast reader, whose cursor row is created on first read.
pub const MARK_READ_BROADCAST: &str = "INSERT INTO members (conv, user_id, read_seq)
     SELECT id, $2, LEAST($3, last_seq) FROM conversations WHERE id = $1
     ON CONFLICT (conv, user_id) DO UPDATE SET read_seq = GREATEST(members.read_seq, EXCLUDED.read_seq)
 RETURNING read_seq";

// ---- operations ----

pub const PING: &str = "SELECT 1";
