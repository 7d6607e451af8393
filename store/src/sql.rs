//! SQL fragments shared by the statements of several domains, and the conversion of
//! typed arguments into statement parameters.
//!
//! The fragments are `macro_rules!` producing string literals, so each statement can
//! still be one `const` built with `concat!`. Import them by path
//! (`use crate::sql::{retained, visible};`).
//!
//! Statements that read messages filter by retention: a message is retained while its
//! `created_at` is after its tier's cutoff, so an expired message is never returned or
//! counted, whether or not its partition has been dropped yet.

use chat_wire::{AudienceKey, UserId};

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

/// The conversations user `$1` can see, as the CTE `vis`: direct and group
/// conversations by membership, broadcast conversations by audience (`$2`, the user's
/// audiences). `read_seq` is 0 where a broadcast has not been read yet.
macro_rules! visible {
    () => {
        "WITH vis AS (
            SELECT c.id, c.kind, c.title, c.audience, c.default_tier, c.last_seq,
                   c.last_activity, m.read_seq, m.joined_seq, m.role,
                   m.muted_until, m.pinned, m.archived
              FROM members m JOIN conversations c ON c.id = m.conv
             WHERE m.user_id = $1 AND c.kind <> 'broadcast'
            UNION ALL
            SELECT c.id, c.kind, c.title, c.audience, c.default_tier, c.last_seq,
                   c.last_activity, COALESCE(m.read_seq, 0), 0::bigint, NULL::text,
                   m.muted_until, COALESCE(m.pinned, false), COALESCE(m.archived, false)
              FROM conversations c
              LEFT JOIN members m ON m.conv = c.id AND m.user_id = $1
             WHERE c.kind = 'broadcast' AND c.audience = ANY($2::text[])
               -- An audience's conversation shows once it holds a notice (a broadcast
               -- whose send failed leaves it empty).
               AND c.last_seq > 0
        ) "
    };
}

/// The caller's settings of the `vis` row `v`, as [`crate::rows::mute`] reads them:
/// `muted_until` only while it holds and is finite, `muted_forever` for `'infinity'`.
macro_rules! settings_columns {
    () => {
        "CASE WHEN v.muted_until = 'infinity' THEN NULL
              WHEN v.muted_until > now() THEN v.muted_until END AS muted_until,
         COALESCE(v.muted_until = 'infinity', false) AS muted_forever,
         v.pinned, v.archived"
    };
}

/// The day `conversation_days` records for seq `$seq` of conversation `$conv` (the last
/// day whose first seq is at or before it), or NULL where none is recorded.
macro_rules! day_of_seq {
    ($conv:literal, $seq:literal) => {
        concat!(
            "(SELECT max(d.day) FROM conversation_days d WHERE d.conv = ",
            $conv,
            " AND d.first_seq <= ",
            $seq,
            ")"
        )
    };
}

/// The lowest `created_at` a message of conversation `$conv` from seq `$seq` on can
/// have: [`day_of_seq!`] less the clock margin (`CLOCK_MARGIN` in `messages.rs`, which a
/// test holds to this text), or no bound where no day is recorded. A predicate
/// `created_at >= since!(..)` lets Postgres skip, as the statement runs, every
/// partition older than that day, however many there are.
macro_rules! since {
    ($conv:literal, $seq:literal) => {
        concat!(
            "COALESCE(",
            $crate::sql::day_of_seq!($conv, $seq),
            " - interval '6 hours', '-infinity')"
        )
    };
}

/// The kinds that count as unread (the ones people write), as an SQL list.
macro_rules! countable {
    () => {
        "('text', 'image', 'file', 'audio', 'video', 'location', 'custom')"
    };
}

/// The predicate "message `x` mentions user `$1` or everyone".
macro_rules! mentions {
    () => {
        "x.mentions && ARRAY[$1::bigint, 0::bigint]"
    };
}

/// Unread of the `vis` row `v` for user `$1`, cutoffs in `$3`, `$4` (an expression:
/// the statement names its column): the messages people other than the user wrote
/// after the cursor. `unread!(mentions)`: of them, those that mention the user.
macro_rules! unread {
    () => {
        $crate::sql::unread!(@ "")
    };
    (mentions) => {
        $crate::sql::unread!(@ concat!(" AND ", $crate::sql::mentions!()))
    };
    (@ $extra:expr) => {
        concat!(
            "(CASE WHEN v.last_seq <= v.read_seq THEN 0 ELSE (
                SELECT count(*) FROM messages x
                 WHERE x.conv = v.id AND x.seq > v.read_seq AND x.sender <> $1
                   AND x.kind IN ",
            $crate::sql::countable!(),
            $extra,
            " AND ",
            $crate::sql::retained!("x", "$3", "$4"),
            " AND x.created_at >= ",
            $crate::sql::since!("v.id", "v.read_seq + 1"),
            ") END)::bigint"
        )
    };
}

/// The columns of a message of the messages alias `$m`, by name: the ones
/// [`crate::rows::message`] reads (a test holds both to `MESSAGE_COLUMNS`). With
/// `AS "prefix_"` each is aliased `prefix_<name>`, for a row that also holds other
/// columns (decode with [`crate::rows::message_prefixed`] and the same prefix).
#[rustfmt::skip]
macro_rules! message_columns {
    ($m:literal) => {
        concat!(
            $m, ".conv, ",
            $m, ".seq, ",
            $m, ".sender, ",
            $m, ".cid, ",
            $m, ".body, ",
            $m, ".tier, ",
            $m, ".created_at, ",
            $m, ".reply_to, ",
            $m, ".kind, ",
            $m, ".attach, ",
            $m, ".mentions, ",
            $m, ".target, ",
            $m, ".meta"
        )
    };
    ($m:literal AS $p:literal) => {
        concat!(
            $m, ".conv AS ", $p, "conv, ",
            $m, ".seq AS ", $p, "seq, ",
            $m, ".sender AS ", $p, "sender, ",
            $m, ".cid AS ", $p, "cid, ",
            $m, ".body AS ", $p, "body, ",
            $m, ".tier AS ", $p, "tier, ",
            $m, ".created_at AS ", $p, "created_at, ",
            $m, ".reply_to AS ", $p, "reply_to, ",
            $m, ".kind AS ", $p, "kind, ",
            $m, ".attach AS ", $p, "attach, ",
            $m, ".mentions AS ", $p, "mentions, ",
            $m, ".target AS ", $p, "target, ",
            $m, ".meta AS ", $p, "meta"
        )
    };
}

pub(crate) use {
    countable, day_of_seq, mentions, message_columns, retained, settings_columns, since, unread,
    visible,
};

/// User ids as a `bigint[]` parameter.
pub(crate) fn ids(list: &[UserId]) -> Vec<i64> {
    list.iter().map(|u| u.0).collect()
}

/// Audience keys as a `text[]` parameter.
pub(crate) fn audience_keys(list: &[AudienceKey]) -> Vec<&str> {
    list.iter().map(AudienceKey::as_str).collect()
}

#[cfg(test)]
mod tests {
    use crate::rows::MESSAGE_COLUMNS;

    #[test]
    fn retained_names_its_alias_and_parameters() {
        assert_eq!(
            retained!("x", "$3", "$4"),
            "x.created_at > CASE x.tier WHEN 'important' THEN $4::timestamptz \
             ELSE $3::timestamptz END"
        );
    }

    #[test]
    fn message_columns_list_every_decoded_column() {
        let plain: Vec<String> = MESSAGE_COLUMNS.iter().map(|c| format!("x.{c}")).collect();
        assert_eq!(message_columns!("x"), plain.join(", "));
        let aliased: Vec<String> = MESSAGE_COLUMNS
            .iter()
            .map(|c| format!("lm.{c} AS lm_{c}"))
            .collect();
        assert_eq!(message_columns!("lm" AS "lm_"), aliased.join(", "));
    }
}
