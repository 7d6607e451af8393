//! Messages: appending a batch of sends (group commit) and reading history.

use crate::error::StoreError;
use crate::rows::{message, parse_tier};
use crate::sql::{message_columns, retained};
use crate::store::Store;
use chat_wire::{ConvId, Draft, Message, Seq, UserId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Locks the conversation row: every writer of one conversation, on any node, queues
/// here. This is what keeps (conv, seq) and (conv, sender, cid) unique. `NO KEY UPDATE`
/// conflicts with itself but not with the key-share locks of foreign-key checks (a
/// first read of a broadcast inserting its cursor row does not wait for a commit).
const LOCK_CONVERSATION: &str =
    "SELECT last_seq, default_tier FROM conversations WHERE id = $1 FOR NO KEY UPDATE";

/// Messages of the batch already stored (a retried cid), looked up under the lock.
const FIND_CIDS: &str = concat!(
    "SELECT ",
    message_columns!("m"),
    " FROM messages m
  JOIN unnest($2::bigint[], $3::text[]) AS k(sender, cid) ON k.sender = m.sender AND k.cid = m.cid
 WHERE m.conv = $1"
);

const INSERT_MESSAGES: &str = "INSERT INTO messages (conv, seq, sender, cid, body, tier, reply_to, created_at)
     SELECT $1, * , $8 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])";

const ADVANCE_CONVERSATION: &str =
    "UPDATE conversations SET last_seq = $2, last_activity = $3 WHERE id = $1";

/// Sending moves the sender's read cursor to its own message.
const ADVANCE_SENDERS: &str = "UPDATE members m SET read_seq = GREATEST(m.read_seq, k.seq)
      FROM unnest($2::bigint[], $3::bigint[]) AS k(uid, seq)
     WHERE m.conv = $1 AND m.user_id = k.uid";

const HISTORY: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    " FROM messages x WHERE x.conv = $1 AND x.seq < $2 AND ",
    retained!("x", "$3", "$4"),
    " ORDER BY x.seq DESC LIMIT $5"
);

const OLDEST_RETAINED: &str = concat!(
    "SELECT min(x.seq) AS oldest FROM messages x WHERE x.conv = $1 AND ",
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

/// Now, at the microsecond precision Postgres stores, so the returned message equals
/// the one read back later.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

impl Store {
    /// Stores a batch of sends to one conversation in one transaction (group commit).
    ///
    /// Locks the conversation row, answers retried cids with their stored message,
    /// numbers the new ones from `last_seq + 1`, inserts them in one statement, moves
    /// `last_seq` and each sender's read cursor, and commits. The outcome of each send
    /// is at its index. The caller has checked membership.
    pub async fn append(
        &self,
        conv: ConvId,
        batch: &[NewMessage],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        // The lock and the cid lookup go out together (one round trip). Postgres runs
        // pipelined statements in order, so the lookup sees the conversation locked.
        let lock_stmt = tx.prepare_cached(LOCK_CONVERSATION).await?;
        let find_stmt = tx.prepare_cached(FIND_CIDS).await?;
        let senders: Vec<i64> = batch.iter().map(|m| m.sender.0).collect();
        let cids: Vec<&str> = batch.iter().map(|m| m.draft.cid.as_str()).collect();
        let (row, found) = futures_util::future::try_join(
            tx.query_opt(&lock_stmt, &[&conv.0]),
            tx.query(&find_stmt, &[&conv.0, &senders, &cids]),
        )
        .await?;
        let row = row.ok_or(StoreError::NotFound("conversation"))?;
        let mut last_seq: i64 = row.try_get("last_seq")?;
        let default_tier: String = row.try_get("default_tier")?;
        let default_tier = parse_tier(&default_tier)?;
        let mut known: HashMap<(i64, String), Message> = HashMap::new();
        for r in found {
            let m = message(&r)?;
            known.insert((m.sender.0, m.cid.clone()), m);
        }

        let ts = now_micros();
        let mut out = Vec::with_capacity(batch.len());
        // The columns of the insert borrow from the batch: nothing is copied for them.
        let (mut seqs, mut snd, mut cid, mut body, mut tier, mut reply) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut advanced: HashMap<i64, i64> = HashMap::new();
        for m in batch {
            let d = &m.draft;
            if let Some(stored) = known.get(&(m.sender.0, d.cid.clone())) {
                out.push(Appended::Duplicate(stored.clone()));
                continue;
            }
            if d.reply_to.is_some_and(|r| r.0 < 1 || r.0 > last_seq) {
                out.push(Appended::BadReply);
                continue;
            }
            last_seq += 1;
            let stored = Message {
                conv,
                seq: Seq(last_seq),
                sender: m.sender,
                cid: d.cid.clone(),
                body: d.body.clone(),
                tier: d.tier.unwrap_or(default_tier),
                ts,
                reply_to: d.reply_to,
            };
            seqs.push(last_seq);
            snd.push(m.sender.0);
            cid.push(d.cid.as_str());
            body.push(d.body.as_str());
            tier.push(stored.tier.as_str());
            reply.push(d.reply_to.map(|r| r.0));
            advanced.insert(m.sender.0, last_seq);
            known.insert((m.sender.0, d.cid.clone()), stored.clone());
            out.push(Appended::Stored(stored));
        }

        if !seqs.is_empty() {
            // Three independent writes, pipelined in one round trip.
            let insert = tx.prepare_cached(INSERT_MESSAGES).await?;
            let advance = tx.prepare_cached(ADVANCE_CONVERSATION).await?;
            let senders = tx.prepare_cached(ADVANCE_SENDERS).await?;
            let (uids, useqs): (Vec<i64>, Vec<i64>) = advanced.into_iter().unzip();
            futures_util::future::try_join3(
                tx.execute(
                    &insert,
                    &[&conv.0, &seqs, &snd, &cid, &body, &tier, &reply, &ts],
                ),
                tx.execute(&advance, &[&conv.0, &last_seq, &ts]),
                tx.execute(&senders, &[&conv.0, &uids, &useqs]),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
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
        let page = client.prepare_cached(HISTORY).await?;
        let oldest = client.prepare_cached(OLDEST_RETAINED).await?;
        // Independent reads: pipelined, one round trip.
        let (rows, row) = futures_util::future::try_join(
            client.query(
                &page,
                &[&conv.0, &before.0, &c.normal, &c.important, &limit],
            ),
            client.query_one(&oldest, &[&conv.0, &c.normal, &c.important]),
        )
        .await?;
        let mut messages = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((messages, Seq(oldest.unwrap_or(last_seq.0 + 1))))
    }
}
