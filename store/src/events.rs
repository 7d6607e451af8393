//! Each user's own event stream (`user_events`): what happened to them outside any
//! conversation, with a cursor of its own.
//!
//! An event is recorded in the transaction of the change it tells of, so it is
//! committed exactly when the change is. Its seq is `users.events_seq + 1`, taken by
//! an `UPDATE` that holds the user's row lock until commit: two transactions that
//! record for one user take their seqs in turn, and the stream has no gaps.

use crate::error::StoreError;
use crate::store::Store;
use chat_wire::{EventEntry, UserEvent, UserId};
use deadpool_postgres::Transaction;

/// Locks the user rows of `$1`, lowest id first. Every transaction that records for
/// two users takes both locks this way first, so two of them never wait on each other
/// in a circle.
const LOCK_USERS: &str = "SELECT id FROM users WHERE id = ANY($1::bigint[]) AND id <> 0
     ORDER BY id FOR NO KEY UPDATE";

const NEXT_SEQ: &str =
    "UPDATE users SET events_seq = events_seq + 1 WHERE id = $1 AND id <> 0 RETURNING events_seq";

const INSERT_EVENT: &str = "INSERT INTO user_events (user_id, seq, event) VALUES ($1, $2, $3)
     RETURNING created_at";

const LAST_SEQ: &str = "SELECT events_seq FROM users WHERE id = $1";

/// Events of `$1` after `$2` up to `$3` (the last seq read first), ascending.
const EVENTS_AFTER: &str = "SELECT seq, event, created_at FROM user_events
     WHERE user_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4";

/// An event recorded for a user in a transaction: to push once it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub user: UserId,
    pub entry: EventEntry,
}

/// Takes the row locks of `users` in ascending id order (see [`LOCK_USERS`]); returns
/// how many of them exist.
pub(crate) async fn lock_users(
    tx: &Transaction<'_>,
    users: &[UserId],
) -> Result<usize, StoreError> {
    let mut ids: Vec<i64> = users.iter().map(|u| u.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let stmt = tx.prepare_cached(LOCK_USERS).await?;
    Ok(tx.query(&stmt, &[&ids]).await?.len())
}

/// Records `event` as the next entry of `user`'s stream, in `tx`. A transaction that
/// records for two users locks both first with [`lock_users`].
pub async fn record_user_event(
    tx: &Transaction<'_>,
    user: UserId,
    event: &UserEvent,
) -> Result<Recorded, StoreError> {
    let stmt = tx.prepare_cached(NEXT_SEQ).await?;
    let row = tx
        .query_opt(&stmt, &[&user.0])
        .await?
        .ok_or(StoreError::NotFound("user"))?;
    let seq: i64 = row.try_get("events_seq")?;
    let json = serde_json::to_value(event)
        .map_err(|e| StoreError::Unavailable(format!("encoding an event: {e}")))?;
    let stmt = tx.prepare_cached(INSERT_EVENT).await?;
    let row = tx.query_one(&stmt, &[&user.0, &seq, &json]).await?;
    Ok(Recorded {
        user,
        entry: EventEntry {
            seq,
            ts: row.try_get("created_at")?,
            event: event.clone(),
        },
    })
}

impl Store {
    /// Up to `limit` events of `user` after seq `after`, ascending, and the last seq
    /// of the stream as it was when read (every returned seq is at most it; an
    /// unknown user has none and stands at 0).
    pub async fn user_events(
        &self,
        user: UserId,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<EventEntry>, i64), StoreError> {
        let client = self.pool().get().await?;
        // The last seq first: every event up to it is committed (its seq was taken in
        // the transaction that wrote it), so nothing below it can appear later.
        let stmt = client.prepare_cached(LAST_SEQ).await?;
        let last: i64 = match client.query_opt(&stmt, &[&user.0]).await? {
            Some(row) => row.try_get("events_seq")?,
            None => return Ok((Vec::new(), 0)),
        };
        if after >= last {
            return Ok((Vec::new(), last));
        }
        let stmt = client.prepare_cached(EVENTS_AFTER).await?;
        let rows = client
            .query(&stmt, &[&user.0, &after, &last, &limit])
            .await?;
        let entries = rows
            .iter()
            .map(|r| {
                let json: serde_json::Value = r.try_get("event")?;
                Ok(EventEntry {
                    seq: r.try_get("seq")?,
                    ts: r.try_get("created_at")?,
                    // A kind this build does not know reads as `Unknown`; anything
                    // else unreadable is a stored row gone wrong.
                    event: serde_json::from_value(json).map_err(|e| {
                        StoreError::Unavailable(format!("decoding a stored event: {e}"))
                    })?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((entries, last))
    }
}
