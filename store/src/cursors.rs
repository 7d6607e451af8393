//! Read cursors: moving them, and what is left unread behind them.

use crate::error::StoreError;
use crate::sql::{audience_keys, countable, retained, since, unread, visible};
use crate::store::Store;
use chat_wire::{AudienceKey, ConvId, Seq, UserId};
use std::collections::BTreeMap;

/// Unread per visible conversation that has any.
const UNREAD: &str = concat!(
    visible!(),
    "SELECT v.id, ",
    unread!(),
    " AS unread FROM vis v WHERE v.last_seq > v.read_seq"
);

const UNREAD_ONE: &str = concat!(
    "SELECT count(*) AS unread,
            count(*) FILTER (WHERE x.mentions && ARRAY[$3::bigint, 0::bigint]) AS mentions_unread
       FROM messages x
      WHERE x.conv = $1 AND x.seq > $2 AND x.sender <> $3 AND x.kind IN ",
    countable!(),
    " AND ",
    retained!("x", "$4", "$5"),
    " AND x.created_at >= ",
    since!("$1", "$2 + 1")
);

/// Moves a member's cursor forward, never back, and never past `last_seq`.
const MARK_READ: &str =
    "UPDATE members m SET read_seq = GREATEST(m.read_seq, LEAST($3, c.last_seq))
      FROM conversations c
     WHERE m.conv = $1 AND m.user_id = $2 AND c.id = m.conv
 RETURNING m.read_seq";

/// The same for a broadcast reader, whose cursor row is created on first read.
const MARK_READ_BROADCAST: &str = "INSERT INTO members (conv, user_id, read_seq)
     SELECT id, $2, LEAST($3, last_seq) FROM conversations WHERE id = $1
     ON CONFLICT (conv, user_id) DO UPDATE SET read_seq = GREATEST(members.read_seq, EXCLUDED.read_seq)
 RETURNING read_seq";

/// The cursor after a read, and what is left unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub read_seq: Seq,
    pub unread: i64,
    /// Of them, those that mention the reader (or everyone).
    pub mentions_unread: i64,
}

impl Store {
    /// Moves the read cursor forward (never back, never past `last_seq`). The caller
    /// has checked membership; `broadcast` creates the cursor row on first read.
    pub async fn mark_read(
        &self,
        user: UserId,
        conv: ConvId,
        seq: Seq,
        broadcast: bool,
    ) -> Result<ReadOutcome, StoreError> {
        let read_seq = {
            let client = self.pool().get().await?;
            let sql = if broadcast {
                MARK_READ_BROADCAST
            } else {
                MARK_READ
            };
            let stmt = client.prepare_cached(sql).await?;
            let row = client
                .query_opt(&stmt, &[&conv.0, &user.0, &seq.0.max(0)])
                .await?
                .ok_or(StoreError::NotFound("membership"))?;
            Seq(row.try_get("read_seq")?)
        };
        let (unread, mentions_unread) = self.unread_in(user, conv, read_seq).await?;
        Ok(ReadOutcome {
            read_seq,
            unread,
            mentions_unread,
        })
    }

    /// Unread per conversation (only those with any) and in total.
    pub async fn unread(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
    ) -> Result<(i64, BTreeMap<ConvId, i64>), StoreError> {
        let c = self.cutoffs();
        let rows = self
            .query(
                UNREAD,
                &[&user.0, &audience_keys(audiences), &c.normal, &c.important],
            )
            .await?;
        let mut map = BTreeMap::new();
        let mut total = 0;
        for r in &rows {
            let n: i64 = r.try_get("unread")?;
            if n > 0 {
                map.insert(ConvId(r.try_get("id")?), n);
                total += n;
            }
        }
        Ok((total, map))
    }

    /// Unread of one member whose cursor is at `read_seq`, and of them those that
    /// mention the member.
    pub async fn unread_in(
        &self,
        user: UserId,
        conv: ConvId,
        read_seq: Seq,
    ) -> Result<(i64, i64), StoreError> {
        let c = self.cutoffs();
        let row = self
            .query_one(
                UNREAD_ONE,
                &[&conv.0, &read_seq.0, &user.0, &c.normal, &c.important],
            )
            .await?;
        Ok((row.try_get("unread")?, row.try_get("mentions_unread")?))
    }
}
