//! Messages: appending a batch of sends (group commit) and reading history.

use crate::error::StoreError;
use crate::rows::{message, parse_tier};
use crate::sql::{message_columns, retained};
use crate::store::Store;
use chat_wire::{ConvId, Draft, Message, Seq, Tier, UserId};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// Locks the conversation rows of a group commit in id order, so that two writers of
/// overlapping sets never deadlock, and skips the rows another transaction holds: a
/// group commit never waits for another writer (another node, usually); the
/// conversations it could not lock go to the next one. Every writer of a
/// conversation, on any node, takes this lock before it numbers messages: that is
/// what keeps (conv, seq) and (conv, sender, cid) unique. `NO KEY UPDATE` conflicts
/// with itself but not with the key-share locks of foreign-key checks (a first read of
/// a broadcast inserting its cursor row does not wait for a commit).
const LOCK_CONVERSATIONS: &str = "SELECT id, last_seq, default_tier FROM conversations
     WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED";

/// Which of `$1` exist: tells a conversation another writer holds from one that is gone.
const EXISTING: &str = "SELECT id FROM conversations WHERE id = ANY($1::bigint[])";

/// The sends of the group commit already stored (a retried cid) within the dedupe
/// window (`created_at > $4`): one index probe per send, on the partitions the window
/// overlaps only, however many partitions there are.
const FIND_CIDS: &str = concat!(
    "SELECT ",
    message_columns!("m"),
    " FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(conv, sender, cid)
  CROSS JOIN LATERAL (
       SELECT * FROM messages x
        WHERE x.conv = k.conv AND x.sender = k.sender AND x.cid = k.cid AND x.created_at > $4
        LIMIT 1) m"
);

const INSERT_MESSAGES: &str =
    "INSERT INTO messages (conv, seq, sender, cid, body, tier, reply_to, created_at)
     SELECT *, $8 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                              $6::text[], $7::bigint[])";

const ADVANCE_CONVERSATIONS: &str =
    "UPDATE conversations c SET last_seq = k.last_seq, last_activity = $3
      FROM unnest($1::bigint[], $2::bigint[]) AS k(id, last_seq)
     WHERE c.id = k.id";

/// The first seq a conversation stored on a day (see `sql/V2__conversation_days.sql`).
const RECORD_DAYS: &str = "INSERT INTO conversation_days (conv, day, first_seq)
     SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[])
     ON CONFLICT DO NOTHING";

/// Sending moves the sender's read cursor to its own message.
const ADVANCE_SENDERS: &str = "UPDATE members m SET read_seq = GREATEST(m.read_seq, k.seq)
      FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS k(conv, uid, seq)
     WHERE m.conv = k.conv AND m.user_id = k.uid";

/// The day of the conversation's seq `$2` (the last day that began at or before it),
/// and its first day.
const DAYS: &str =
    "SELECT max(day) FILTER (WHERE first_seq <= $2) AS seq_day, min(day) AS first_day
       FROM conversation_days WHERE conv = $1";

/// A page of history, on the partitions from `$6` on.
const HISTORY: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    " FROM messages x WHERE x.conv = $1 AND x.seq < $2 AND x.created_at >= $6 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT $5"
);

/// The oldest retained seq, on the partitions from the conversation's first day (`$4`).
const OLDEST_RETAINED: &str = concat!(
    "SELECT min(x.seq) AS oldest FROM messages x WHERE x.conv = $1 AND x.created_at >= $4 AND ",
    retained!("x", "$2", "$3")
);

/// One send of a batch.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: UserId,
    /// What was sent; `tier: None` is the conversation's default tier.
    pub draft: Draft,
}

/// The outcome of one send of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Stored now.
    Stored(Message),
    /// The cid was stored before (or earlier in the batch): the stored message.
    Duplicate(Message),
    /// `reply_to` names no earlier message of the conversation; nothing stored.
    BadReply,
}

impl Appended {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Appended::Stored(m) | Appended::Duplicate(m) => Some(m),
            Appended::BadReply => None,
        }
    }
}

/// The sends to one conversation within a group commit.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub conv: ConvId,
    pub messages: &'a [NewMessage],
}

/// What became of one conversation's batch in a group commit.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// Committed: the outcome of each send, at its index.
    Appended(Vec<Appended>),
    /// Another transaction holds the conversation: nothing was done; write it again.
    Busy,
    /// The conversation does not exist.
    NotFound,
}

/// Now, at the microsecond precision Postgres stores, so the returned message equals
/// the one read back later.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// How far a message's `created_at` may lie before the day its seq was recorded on:
/// nodes stamp messages with their own clocks, which may disagree a little.
const CLOCK_MARGIN: chrono::Duration = chrono::Duration::hours(6);

/// The start of the UTC day of `t`.
pub(crate) fn day_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(86_400) * 86_400;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// The `created_at` bound of reads from a recorded day: the day less the clock margin,
/// or the epoch (no bound) when no day is recorded.
pub(crate) fn lower_bound(day: Option<DateTime<Utc>>) -> DateTime<Utc> {
    day.and_then(|d| d.checked_sub_signed(CLOCK_MARGIN))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A locked conversation's numbering during a group commit.
struct Numbering {
    last_seq: i64,
    default_tier: Tier,
}

/// The columns of the one insert of a group commit. They borrow from the batches:
/// nothing of a send is copied for them.
#[derive(Default)]
struct Columns<'a> {
    conv: Vec<i64>,
    seq: Vec<i64>,
    sender: Vec<i64>,
    cid: Vec<&'a str>,
    body: Vec<&'a str>,
    tier: Vec<&'static str>,
    reply_to: Vec<Option<i64>>,
}

impl Store {
    /// Stores the batches of many conversations in one transaction (group commit
    /// across conversations), on a connection of the write pool.
    ///
    /// Locks the conversation rows in id order, skipping those another transaction
    /// holds (they come back `Busy`, untouched); answers retried cids found within the
    /// dedupe window with their stored message; numbers each conversation's new sends
    /// from its `last_seq + 1`; inserts every row in one statement, moves every
    /// `last_seq` in one, and every sender's read cursor in one; and commits. The
    /// outcome of each batch is at its index. An error means nothing was committed.
    pub async fn append_many(
        &self,
        batches: &[Batch<'_>],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let mut client = self.write_pool().get().await?;
        let tx = client.transaction().await?;
        let convs: Vec<i64> = batches.iter().map(|b| b.conv.0).collect();
        let (mut k_conv, mut k_sender, mut k_cid) = (vec![], vec![], vec![]);
        for b in batches {
            for m in b.messages {
                k_conv.push(b.conv.0);
                k_sender.push(m.sender.0);
                k_cid.push(m.draft.cid.as_str());
            }
        }
        let since = self.dedupe_since();
        // The lock and the cid lookup go out together (one round trip). Postgres runs
        // pipelined statements in order, so the lookup sees the rows locked.
        let lock_stmt = tx.prepare_cached(LOCK_CONVERSATIONS).await?;
        let find_stmt = tx.prepare_cached(FIND_CIDS).await?;
        let (locked, found) = futures_util::future::try_join(
            tx.query(&lock_stmt, &[&convs]),
            tx.query(&find_stmt, &[&k_conv, &k_sender, &k_cid, &since]),
        )
        .await?;
        let mut numbering: HashMap<i64, Numbering> = HashMap::with_capacity(locked.len());
        for r in &locked {
            let tier: String = r.try_get("default_tier")?;
            numbering.insert(
                r.try_get("id")?,
                Numbering {
                    last_seq: r.try_get("last_seq")?,
                    default_tier: parse_tier(&tier)?,
                },
            );
        }
        let skipped: Vec<i64> = convs
            .iter()
            .copied()
            .filter(|c| !numbering.contains_key(c))
            .collect();
        let existing: HashSet<i64> = if skipped.is_empty() {
            HashSet::new()
        } else {
            let stmt = tx.prepare_cached(EXISTING).await?;
            let rows = tx.query(&stmt, &[&skipped]).await?;
            rows.iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?
        };
        // Only what was found under the lock counts.
        let found: Vec<Message> = found
            .iter()
            .map(message)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|m| numbering.contains_key(&m.conv.0))
            .collect();
        // Keys borrow their cid (from `found`, then from the batches): nothing is
        // copied to look a send up.
        let mut known: HashMap<(i64, i64, &str), Message> = HashMap::new();
        for m in &found {
            known.insert((m.conv.0, m.sender.0, m.cid.as_str()), m.clone());
        }

        let ts = now_micros();
        let mut cols = Columns::default();
        let mut senders: HashMap<(i64, i64), i64> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        for b in batches {
            let conv = b.conv.0;
            let Some(num) = numbering.get_mut(&conv) else {
                outcomes.push(if existing.contains(&conv) {
                    BatchOutcome::Busy
                } else {
                    BatchOutcome::NotFound
                });
                continue;
            };
            let mut out = Vec::with_capacity(b.messages.len());
            for m in b.messages {
                let d = &m.draft;
                if let Some(stored) = known.get(&(conv, m.sender.0, d.cid.as_str())) {
                    out.push(Appended::Duplicate(stored.clone()));
                    continue;
                }
                if d.reply_to.is_some_and(|r| r.0 < 1 || r.0 > num.last_seq) {
                    out.push(Appended::BadReply);
                    continue;
                }
                num.last_seq += 1;
                let stored = Message {
                    conv: b.conv,
                    seq: Seq(num.last_seq),
                    sender: m.sender,
                    cid: d.cid.clone(),
                    body: d.body.clone(),
                    tier: d.tier.unwrap_or(num.default_tier),
                    ts,
                    reply_to: d.reply_to,
                };
                cols.conv.push(conv);
                cols.seq.push(num.last_seq);
                cols.sender.push(m.sender.0);
                cols.cid.push(d.cid.as_str());
                cols.body.push(d.body.as_str());
                cols.tier.push(stored.tier.as_str());
                cols.reply_to.push(d.reply_to.map(|r| r.0));
                senders.insert((conv, m.sender.0), num.last_seq);
                known.insert((conv, m.sender.0, d.cid.as_str()), stored.clone());
                out.push(Appended::Stored(stored));
            }
            outcomes.push(BatchOutcome::Appended(out));
        }

        if !cols.seq.is_empty() {
            // The first new seq of each conversation, on the day of this commit.
            let day = day_of(ts);
            let mut first: Vec<(i64, i64)> = Vec::new();
            for (conv, seq) in cols.conv.iter().zip(&cols.seq) {
                if !first.iter().any(|(c, _)| c == conv) {
                    first.push((*conv, *seq));
                }
            }
            let (d_conv, d_seq): (Vec<i64>, Vec<i64>) = first.into_iter().unzip();
            let d_day = vec![day; d_conv.len()];
            let mut advanced: Vec<(i64, i64)> = batches
                .iter()
                .filter_map(|b| numbering.get(&b.conv.0).map(|n| (b.conv.0, n.last_seq)))
                .collect();
            advanced.sort_unstable();
            advanced.dedup();
            let (a_conv, a_seq): (Vec<i64>, Vec<i64>) = advanced.into_iter().unzip();
            let (mut s_conv, mut s_uid, mut s_seq) = (vec![], vec![], vec![]);
            for ((conv, uid), seq) in senders {
                s_conv.push(conv);
                s_uid.push(uid);
                s_seq.push(seq);
            }
            // Four independent writes, pipelined in one round trip.
            let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
            let advance = tx.prepare_cached(ADVANCE_CONVERSATIONS).await?;
            let cursors = tx.prepare_cached(ADVANCE_SENDERS).await?;
            let days = tx.prepare_cached(RECORD_DAYS).await?;
            futures_util::future::try_join4(
                tx.execute(
                    &insert,
                    &[
                        &cols.conv,
                        &cols.seq,
                        &cols.sender,
                        &cols.cid,
                        &cols.body,
                        &cols.tier,
                        &cols.reply_to,
                        &ts,
                    ],
                ),
                tx.execute(&advance, &[&a_conv, &a_seq, &ts]),
                tx.execute(&cursors, &[&s_conv, &s_uid, &s_seq]),
                tx.execute(&days, &[&d_conv, &d_day, &d_seq]),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Up to `limit` retained messages below `before` (ascending), and the oldest
    /// retained seq of the conversation (`last_seq + 1` when none is retained).
    pub async fn history(
        &self,
        conv: ConvId,
        before: Seq,
        limit: i64,
        last_seq: Seq,
    ) -> Result<(Vec<Message>, Seq), StoreError> {
        let c = self.cutoffs();
        let client = self.pool().get().await?;
        let days = client.prepare_cached(DAYS).await?;
        let page = client.prepare_cached(HISTORY).await?;
        let oldest = client.prepare_cached(OLDEST_RETAINED).await?;
        // The page wants seqs from `before - limit` on (fewer if some expired), so
        // nothing older than that seq's day (less the clock margin) is read.
        let lowest = (before.0 - limit).max(1);
        let row = client.query_one(&days, &[&conv.0, &lowest]).await?;
        let seq_day: Option<DateTime<Utc>> = row.try_get("seq_day")?;
        let first_day: Option<DateTime<Utc>> = row.try_get("first_day")?;
        let (since, first) = (lower_bound(seq_day), lower_bound(first_day));
        let (n, i) = (c.normal, c.important);
        // Independent reads: pipelined, one round trip.
        let (mut rows, row) = futures_util::future::try_join(
            client.query(&page, &[&conv.0, &before.0, &n, &i, &limit, &since]),
            client.query_one(&oldest, &[&conv.0, &n, &i, &first]),
        )
        .await?;
        if (rows.len() as i64) < limit && since > first {
            // Short: messages of the page's range expired, and older retained ones
            // (important, say) lie before the bound. Read from the first day.
            rows = client
                .query(&page, &[&conv.0, &before.0, &n, &i, &limit, &first])
                .await?;
        }
        let mut messages = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((messages, Seq(oldest.unwrap_or(last_seq.0 + 1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_utc_midnight() {
        let t = DateTime::from_timestamp(86_400 * 3 + 5_000, 7).unwrap_or_default();
        assert_eq!(day_of(t).timestamp(), 86_400 * 3);
        let midnight = DateTime::from_timestamp(86_400 * 3, 0).unwrap_or_default();
        assert_eq!(day_of(midnight), midnight);
    }

    #[test]
    fn the_bound_leaves_a_clock_margin_or_none() {
        let day = DateTime::from_timestamp(86_400 * 10, 0).unwrap_or_default();
        assert_eq!(lower_bound(Some(day)), day - CLOCK_MARGIN);
        // The SQL form of the same bound spells the margin out.
        let hours = CLOCK_MARGIN.num_hours();
        assert!(crate::sql::since!("c", "s").contains(&format!("interval '{hours} hours'")));
        assert_eq!(lower_bound(None), DateTime::UNIX_EPOCH);
    }
}
