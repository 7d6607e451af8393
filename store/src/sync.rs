//! Sync: every visible conversation past the client's cursors, with its new messages.

use crate::error::StoreError;
use crate::fold::fold;
use crate::messages::lower_bound;
use crate::rows::message;
use crate::sql::{
    audience_keys, day_of_seq, message_columns, retained, settings_columns, unread, visible,
};
use crate::store::Store;
use chat_wire::http::{SyncConversation, SyncResponse};
use chat_wire::{AudienceKey, ConvId, Message, Seq, UserId};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// Most conversations one sync answer carries; the rest come in the next round.
const SYNC_MAX_CONVERSATIONS: i64 = 200;

/// Visible conversations whose `last_seq` is past the client's cursor (`$5` ids,
/// `$6` cursors; a missing cursor is 0; a member added later reads from the entry
/// that added them), at most `$7` of them, by id.
const SYNC_CONVERSATIONS: &str = concat!(
    visible!(),
    ", cur AS (SELECT * FROM unnest($5::bigint[], $6::bigint[]) AS t(conv, after))
SELECT v.id, v.last_seq, v.read_seq, ",
    unread!(),
    " AS unread, ",
    unread!(mentions),
    " AS mentions_unread, ",
    settings_columns!(),
    ",
       GREATEST(COALESCE(cur.after, 0), v.joined_seq - 1) AS after,
       ",
    day_of_seq!(
        "v.id",
        "GREATEST(COALESCE(cur.after, 0), v.joined_seq - 1) + 1"
    ),
    " AS since
  FROM vis v LEFT JOIN cur ON cur.conv = v.id
 WHERE v.last_seq > GREATEST(COALESCE(cur.after, 0), v.joined_seq - 1)
 ORDER BY v.id
 LIMIT $7"
);

/// Up to `$5` retained messages after each cursor (`$1` ids, `$2` cursors), on the
/// partitions from `$6` on (the day of the oldest cursor: see `conversation_days`),
/// whole conversations in id order while the messages before them (body, cid and
/// 256 bytes for the rest of each) stay under `$7` bytes (the first always comes). `cut_at`: the first conversation left out, on
/// every row, or NULL when none was.
const SYNC_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!("y"),
    ", y.cut_at FROM (
  SELECT x.*, min(CASE WHEN x.before_conv >= $7 THEN x.conv END) OVER () AS cut_at
    FROM (
      SELECT x.*,
             sum(octet_length(x.body) + octet_length(x.cid) + COALESCE(octet_length(x.attach::text), 0) + 256)
                 OVER (ORDER BY x.conv, x.seq)
               - sum(octet_length(x.body) + octet_length(x.cid) + COALESCE(octet_length(x.attach::text), 0) + 256)
                   OVER (PARTITION BY x.conv ORDER BY x.seq)
               AS before_conv
        FROM unnest($1::bigint[], $2::bigint[]) AS t(conv, after)
       CROSS JOIN LATERAL (
             SELECT * FROM messages x
              WHERE x.conv = t.conv AND x.seq > t.after AND x.created_at >= $6 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq LIMIT $5) x) x) y
 WHERE y.before_conv < $7
 ORDER BY y.conv, y.seq"
);

impl Store {
    /// Every visible conversation past its cursor, with up to `limit` messages each,
    /// while the message bodies stay within `max_bytes`: a conversation that would
    /// go past it is left for the next round (`more`), whole, so that a client's rules
    /// for a short or empty conversation never misread a cut one. The first
    /// conversation always comes.
    pub async fn sync(
        &self,
        user: UserId,
        audiences: &[AudienceKey],
        cursors: &BTreeMap<ConvId, Seq>,
        limit: i64,
        max_bytes: i64,
    ) -> Result<SyncResponse, StoreError> {
        let c = self.cutoffs();
        let client = self.pool().get().await?;
        let (cur_ids, cur_seqs): (Vec<i64>, Vec<i64>) =
            cursors.iter().map(|(k, v)| (k.0, v.0.max(0))).unzip();
        let stmt = client.prepare_cached(SYNC_CONVERSATIONS).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &user.0,
                    &audience_keys(audiences),
                    &c.normal,
                    &c.important,
                    &cur_ids,
                    &cur_seqs,
                    &(SYNC_MAX_CONVERSATIONS + 1),
                ],
            )
            .await?;
        let mut more = rows.len() as i64 > SYNC_MAX_CONVERSATIONS;
        let mut convs = Vec::with_capacity(rows.len());
        let (mut ids, mut afters) = (vec![], vec![]);
        // One bound for all: the oldest cursor's day (no bound where one is unknown).
        let mut since: Option<DateTime<Utc>> = None;
        let mut unbounded = false;
        for r in rows.iter().take(SYNC_MAX_CONVERSATIONS as usize) {
            let id: i64 = r.try_get("id")?;
            ids.push(id);
            afters.push(r.try_get::<_, i64>("after")?);
            match r.try_get::<_, Option<DateTime<Utc>>>("since")? {
                Some(day) => since = Some(since.map_or(day, |s| s.min(day))),
                None => unbounded = true,
            }
            convs.push(SyncConversation {
                id: ConvId(id),
                last_seq: Seq(r.try_get("last_seq")?),
                read_seq: Seq(r.try_get("read_seq")?),
                unread: r.try_get("unread")?,
                mentions_unread: r.try_get("mentions_unread")?,
                muted_until: crate::rows::mute(r)?,
                pinned: r.try_get("pinned")?,
                archived: r.try_get("archived")?,
                messages: Vec::new(),
            });
        }
        if !ids.is_empty() {
            let since = lower_bound(if unbounded { None } else { since });
            let stmt = client.prepare_cached(SYNC_MESSAGES).await?;
            let rows = client
                .query(
                    &stmt,
                    &[
                        &ids,
                        &afters,
                        &c.normal,
                        &c.important,
                        &(limit + 1),
                        &since,
                        &max_bytes,
                    ],
                )
                .await?;
            let mut by_conv: HashMap<i64, Vec<Message>> = HashMap::new();
            let mut cut_at: Option<i64> = None;
            let mut all = Vec::with_capacity(rows.len());
            for r in &rows {
                cut_at = r.try_get("cut_at")?;
                all.push(message(r)?);
            }
            fold(&client, user, &mut all, c).await?;
            for m in all {
                by_conv.entry(m.conv.0).or_default().push(m);
            }
            if let Some(cut) = cut_at {
                convs.retain(|c| c.id.0 < cut);
                more = true;
            }
            for conv in &mut convs {
                let mut msgs = by_conv.remove(&conv.id.0).unwrap_or_default();
                if msgs.len() as i64 > limit {
                    msgs.truncate(limit as usize);
                    more = true;
                }
                conv.messages = msgs;
            }
        }
        Ok(SyncResponse {
            conversations: convs,
            more,
            // The caller's own events are read beside this (`Chat::sync`).
            events: Vec::new(),
            events_cursor: 0,
        })
    }
}
