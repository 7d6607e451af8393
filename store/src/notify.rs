//! The queue of offline notifications (see `sql/V8__settings_notifications.sql`).
//!
//! Two stages, both durable in Postgres, so neither a dead endpoint nor a node that
//! restarts loses a due notification:
//!
//! 1. `notify_queue`: one row per message people write, added by the group commit
//!    that stores it (only while the node queues notifications). A worker claims due
//!    rows (`FOR UPDATE SKIP LOCKED`: workers of several nodes never take the same),
//!    works out whom to tell and moves them into `notify_outbox`, in one transaction.
//! 2. `notify_outbox`: one row per notification, with the id the receiver dedupes by.
//!    A worker claims due rows by moving their `next_at` past its POST's timeout,
//!    deletes them once the endpoint took them, or moves them by a backoff.

use crate::error::StoreError;
use crate::rows::message;
use crate::sql::message_columns;
use crate::store::Store;
use chat_wire::{Notification, UserId};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

/// Queues the messages `$1`/`$2` (stored at `$3`) for a first look, due at once; in
/// the group commit's transaction.
pub(crate) const QUEUE_MESSAGES: &str = "INSERT INTO notify_queue (conv, seq, stored_at, due_at)
     SELECT k.conv, k.seq, $3, $3 FROM unnest($1::bigint[], $2::bigint[]) AS k(conv, seq)";

/// Takes up to `$1` due rows of the queue that no other transaction holds, and
/// deletes them (the delete commits with what they were expanded into).
const CLAIM_QUEUE: &str = "DELETE FROM notify_queue q
     WHERE q.id IN (SELECT id FROM notify_queue WHERE due_at <= now()
                     ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
 RETURNING q.conv, q.seq, q.user_id, q.stored_at";

/// The members to tell of each claimed message (`$1` convs, `$2` seqs, `$3` one
/// member or NULL for all, `$4` the stored time, which finds the message's
/// partition): not its sender, not a member added after it, not one who read it, not
/// one who muted the conversation; nobody for a message of a user deleted since.
const CANDIDATES: &str = concat!(
    "SELECT ",
    message_columns!("x"),
    ", m.user_id AS notify_user, k.only_user IS NOT NULL AS recheck,
       COALESCE(x.mentions && ARRAY[m.user_id, 0::bigint], false) AS mention
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
         AS k(conv, seq, only_user, stored_at)
 CROSS JOIN LATERAL (
       SELECT * FROM messages x
        WHERE x.conv = k.conv AND x.seq = k.seq AND x.created_at = k.stored_at LIMIT 1) x
  JOIN members m ON m.conv = k.conv AND (k.only_user IS NULL OR m.user_id = k.only_user)
 WHERE m.user_id <> x.sender AND m.user_id <> 0
   AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = x.sender AND u.deleted_at IS NOT NULL)
   AND m.joined_seq < k.seq
   AND m.read_seq < k.seq
   AND (m.muted_until IS NULL OR m.muted_until <= now())
 ORDER BY k.conv, k.seq, m.user_id"
);

const INSERT_OUTBOX: &str = "INSERT INTO notify_outbox (id, body, stored_at, next_at)
     SELECT k.id, k.body, k.stored_at, now()
       FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[]) AS k(id, body, stored_at)
     ON CONFLICT (id) DO NOTHING";

/// Looks again at members `$3` of messages `$1`/`$2` at `$5` (stored at `$4`).
const QUEUE_RECHECKS: &str = "INSERT INTO notify_queue (conv, seq, user_id, stored_at, due_at)
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[],
                          $5::timestamptz[])";

/// Takes up to `$1` due notifications, oldest first, holding them for `$2` seconds.
const CLAIM_OUTBOX: &str = "UPDATE notify_outbox o
       SET next_at = now() + make_interval(secs => $2::float8), attempts = o.attempts + 1
     WHERE o.id IN (SELECT id FROM notify_outbox WHERE next_at <= now()
                     ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
 RETURNING o.id, o.body, o.stored_at, o.attempts";

const DELIVERED: &str = "DELETE FROM notify_outbox WHERE id = ANY($1::text[])";

/// Moves each of `$1` by `$2` milliseconds from now.
const RETRY: &str = "UPDATE notify_outbox o
       SET next_at = now() + k.ms * interval '1 millisecond'
      FROM unnest($1::text[], $2::float8[]) AS k(id, ms)
     WHERE o.id = k.id";

const DROP_OLD_OUTBOX: &str = "DELETE FROM notify_outbox
     WHERE stored_at < now() - make_interval(secs => $1::float8) RETURNING id";

const DROP_OLD_QUEUE: &str = "DELETE FROM notify_queue
     WHERE stored_at < now() - make_interval(secs => $1::float8) RETURNING id";

/// Deletes the `$1` oldest notifications.
const DROP_OLDEST_OUTBOX: &str = "DELETE FROM notify_outbox
     WHERE id IN (SELECT id FROM notify_outbox ORDER BY stored_at, id LIMIT $1) RETURNING id";

const DEPTH: &str = "SELECT (SELECT count(*) FROM notify_queue) AS messages,
            (SELECT count(*) FROM notify_outbox) AS notifications";

/// What one round of expansion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expanded {
    /// Queue rows claimed (and deleted).
    pub claimed: usize,
    /// Notifications put in the outbox.
    pub queued: usize,
    /// Members with an open socket, to be looked at again after the delay.
    pub rechecks: usize,
}

/// A notification claimed for a POST.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: String,
    /// The notification as it is POSTed.
    pub body: serde_json::Value,
    /// When its message was stored.
    pub stored_at: DateTime<Utc>,
    /// POSTs tried, this one included.
    pub attempts: i32,
}

/// How many rows wait in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub messages: i64,
    pub notifications: i64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// Takes up to `limit` due rows of the queue and turns them into notifications in
    /// the outbox, in one transaction: every member to tell who `online` does not
    /// name (asked once, with every member of a first look); with `delay`, the ones it
    /// names are looked at again that long after the message was stored, and then
    /// told if they still have not read it, socket or not.
    pub async fn expand_notifications<F, Fut>(
        &self,
        limit: i64,
        delay: Option<Duration>,
        online: F,
    ) -> Result<Expanded, StoreError>
    where
        F: FnOnce(Vec<UserId>) -> Fut,
        Fut: Future<Output = HashSet<UserId>>,
    {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(CLAIM_QUEUE).await?;
        let claimed = tx.query(&stmt, &[&limit]).await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Expanded::default());
        }
        let (mut convs, mut seqs, mut only, mut stored) = (vec![], vec![], vec![], vec![]);
        for r in &claimed {
            convs.push(r.try_get::<_, i64>("conv")?);
            seqs.push(r.try_get::<_, i64>("seq")?);
            only.push(r.try_get::<_, Option<i64>>("user_id")?);
            stored.push(r.try_get::<_, DateTime<Utc>>("stored_at")?);
        }
        let stmt = tx.prepare_cached(CANDIDATES).await?;
        let rows = tx.query(&stmt, &[&convs, &seqs, &only, &stored]).await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for r in &rows {
            candidates.push((
                message(r)?,
                UserId(r.try_get("notify_user")?),
                r.try_get::<_, bool>("recheck")?,
                r.try_get::<_, bool>("mention")?,
            ));
        }
        let mut first_look: Vec<UserId> = candidates
            .iter()
            .filter(|(_, _, recheck, _)| !recheck)
            .map(|(_, u, _, _)| *u)
            .collect();
        first_look.sort_unstable();
        first_look.dedup();
        let online = if first_look.is_empty() {
            HashSet::new()
        } else {
            online(first_look).await
        };
        let (mut ids, mut bodies, mut at) = (vec![], vec![], vec![]);
        let (mut r_conv, mut r_seq, mut r_user, mut r_stored, mut r_due) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (m, user, recheck, mention) in candidates {
            if recheck || !online.contains(&user) {
                let n = Notification {
                    id: Notification::id_of(m.conv, m.seq, user),
                    user,
                    conv: m.conv,
                    seq: m.seq,
                    sender: m.sender,
                    kind: m.kind,
                    preview: m.preview(),
                    mention,
                };
                let body = serde_json::to_value(&n).map_err(|e| {
                    StoreError::Unavailable(format!("encoding a notification: {e}"))
                })?;
                ids.push(n.id);
                bodies.push(body);
                at.push(m.ts);
            } else if let Some(delay) = delay.and_then(|d| chrono::Duration::from_std(d).ok()) {
                r_conv.push(m.conv.0);
                r_seq.push(m.seq.0);
                r_user.push(user.0);
                r_stored.push(m.ts);
                r_due.push(m.ts + delay);
            }
        }
        let out = Expanded {
            claimed: claimed.len(),
            queued: ids.len(),
            rechecks: r_conv.len(),
        };
        if !ids.is_empty() {
            let stmt = tx.prepare_cached(INSERT_OUTBOX).await?;
            tx.execute(&stmt, &[&ids, &bodies, &at]).await?;
        }
        if !r_conv.is_empty() {
            let stmt = tx.prepare_cached(QUEUE_RECHECKS).await?;
            tx.execute(&stmt, &[&r_conv, &r_seq, &r_user, &r_stored, &r_due])
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Takes up to `limit` due notifications, oldest first, for one POST; they are not
    /// due again for `hold` (longer than the POST may take), so a worker that dies
    /// mid-POST leaves them to be taken again then.
    pub async fn claim_notifications(
        &self,
        limit: i64,
        hold: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = self.query(CLAIM_OUTBOX, &[&limit, &secs(hold)]).await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    body: r.try_get("body")?,
                    stored_at: r.try_get("stored_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by(|a, b| a.stored_at.cmp(&b.stored_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The endpoint took these notifications: they are done.
    pub async fn notifications_delivered(&self, ids: &[String]) -> Result<(), StoreError> {
        self.query(DELIVERED, &[&ids]).await?;
        Ok(())
    }

    /// A POST of these failed: each is due again after its wait.
    pub async fn retry_notifications(
        &self,
        waits: &[(String, Duration)],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = waits.iter().map(|(id, _)| id.as_str()).collect();
        let ms: Vec<f64> = waits
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        self.query(RETRY, &[&ids, &ms]).await?;
        Ok(())
    }

    /// Drops what waited longer than `max_age` since its message was stored; answers
    /// the notifications dropped and the queued messages dropped.
    pub async fn drop_old_notifications(
        &self,
        max_age: Duration,
    ) -> Result<(usize, usize), StoreError> {
        let age = secs(max_age);
        let outbox = self.query(DROP_OLD_OUTBOX, &[&age]).await?;
        let queue = self.query(DROP_OLD_QUEUE, &[&age]).await?;
        Ok((outbox.len(), queue.len()))
    }

    /// Deletes the `n` oldest notifications waiting (past `notify.max_pending`: an
    /// endpoint down for long fills the outbox no further); answers how many went.
    pub async fn drop_oldest_notifications(&self, n: i64) -> Result<u64, StoreError> {
        if n <= 0 {
            return Ok(0);
        }
        Ok(self.query(DROP_OLDEST_OUTBOX, &[&n]).await?.len() as u64)
    }

    /// Rows waiting in each stage.
    pub async fn notify_depth(&self) -> Result<QueueDepth, StoreError> {
        let row = self.query_one(DEPTH, &[]).await?;
        Ok(QueueDepth {
            messages: row.try_get("messages")?,
            notifications: row.try_get("notifications")?,
        })
    }
}
