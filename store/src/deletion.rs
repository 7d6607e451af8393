//! Deleting a user (`DELETE /service/users/{id}`): their row stays, so the messages
//! they sent still name a sender, but it becomes a deleted user's: no login, no
//! username, no avatar, found by no search and added nowhere. Their contacts, friend
//! requests and blocks go, and the other users concerned learn it in their own event
//! streams. Leaving their groups is a group change per group (`groups.rs`).
//!
//! Erasure (for a legal request) also blanks the body, attachment and mentions of
//! every message they sent: the one exception to append-only. The entries keep their
//! seq, sender and time, so the stream has no gaps.

use crate::contacts::request;
use crate::error::StoreError;
use crate::events::{lock_users, record_user_event, Recorded};
use crate::store::Store;
use chat_wire::{ConvId, UserEvent, UserId};

/// The display name every deleted user has.
pub const DELETED_DISPLAY_NAME: &str = "Deleted user";

const LOCK_LIVE_USER: &str =
    "SELECT id FROM users WHERE id = $1 AND id <> 0 AND deleted_at IS NULL FOR NO KEY UPDATE";

const PEERS: &str = "SELECT peer FROM contacts WHERE user_id = $1";

const DELETE_CONTACTS: &str = "DELETE FROM contacts WHERE user_id = $1 OR peer = $1";

const CANCEL_PENDING: &str = "UPDATE contact_requests SET status = 'cancelled', answered_at = now()
     WHERE status = 'pending' AND (from_user = $1 OR to_user = $1)
     RETURNING id, from_user, to_user, note, status, created_at, answered_at";

/// The other users of the user's pending requests.
const PENDING_PARTIES: &str =
    "SELECT CASE WHEN from_user = $1 THEN to_user ELSE from_user END AS other
       FROM contact_requests WHERE status = 'pending' AND (from_user = $1 OR to_user = $1)";

const DELETE_BLOCKS: &str = "DELETE FROM blocks WHERE blocker = $1 OR blocked = $1";

/// The username is one no one can register (`#` is not allowed in usernames), so the
/// old one is free at once and this one never clashes.
const WIPE_PROFILE: &str = "UPDATE users
        SET deleted_at = now(), username = '#deleted-' || id::text, display_name = $2,
            avatar_url = NULL, password_hash = NULL, external_id = NULL
      WHERE id = $1";

/// Every entry the user wrote keeps its place; its content goes. Runs over every
/// partition (there is no index by sender): an erasure is rare and may take a while.
const ERASE_MESSAGES: &str = "UPDATE messages SET body = '', attach = NULL, mentions = NULL
     WHERE sender = $1 AND kind <> 'system'
       AND (body <> '' OR attach IS NOT NULL OR mentions IS NOT NULL)";

/// Notifications not yet delivered that name the user, as sender (their preview holds
/// the erased text) or as recipient (nobody is left to push to).
const DROP_NOTIFICATIONS: &str = "DELETE FROM notify_outbox
     WHERE (body->>'sender')::bigint = $1 OR (body->>'user')::bigint = $1";

const GROUPS_OF: &str = "SELECT m.conv FROM members m JOIN conversations c ON c.id = m.conv
     WHERE m.user_id = $1 AND c.kind = 'group' ORDER BY m.conv";

/// What deleting a user did.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// Messages whose content was blanked (0 unless erased).
    pub erased: u64,
    /// Events recorded for the other users concerned: push them.
    pub events: Vec<Recorded>,
}

impl Store {
    /// Makes `user` a deleted user, in one transaction; with `erase`, blanks their
    /// messages too. `NotFound` for an unknown or already deleted user.
    pub async fn delete_user(&self, user: UserId, erase: bool) -> Result<Deleted, StoreError> {
        let mut client = self.write_pool().get().await?;
        let tx = client.transaction().await?;
        let stmt = tx.prepare_cached(PEERS).await?;
        let peers: Vec<UserId> = tx
            .query(&stmt, &[&user.0])
            .await?
            .iter()
            .map(|r| Ok(UserId(r.try_get("peer")?)))
            .collect::<Result<_, StoreError>>()?;
        let stmt = tx.prepare_cached(PENDING_PARTIES).await?;
        let parties: Vec<UserId> = tx
            .query(&stmt, &[&user.0])
            .await?
            .iter()
            .map(|r| Ok(UserId(r.try_get("other")?)))
            .collect::<Result<_, StoreError>>()?;
        // Every user row this touches is locked at once, lowest id first, like the
        // contacts operations do: none of them waits on another in a circle.
        let mut concerned: Vec<UserId> = peers.iter().chain(&parties).copied().collect();
        concerned.push(user);
        lock_users(&tx, &concerned).await?;
        let lock = tx.prepare_cached(LOCK_LIVE_USER).await?;
        if tx.query_opt(&lock, &[&user.0]).await?.is_none() {
            return Err(StoreError::NotFound("user"));
        }
        let stmt = tx.prepare_cached(CANCEL_PENDING).await?;
        let cancelled = tx.query(&stmt, &[&user.0]).await?;
        let mut requests = Vec::with_capacity(cancelled.len());
        let mut others: Vec<UserId> = Vec::new();
        for row in &cancelled {
            let r = request(row)?;
            others.push(if r.from == user { r.to } else { r.from });
            requests.push(r);
        }
        let mut events = Vec::new();
        for peer in &peers {
            events.push(record_user_event(&tx, *peer, &UserEvent::Unfriended { user }).await?);
        }
        for (r, other) in requests.into_iter().zip(&others) {
            let event = UserEvent::RequestAnswered { request: r };
            events.push(record_user_event(&tx, *other, &event).await?);
        }
        let stmt = tx.prepare_cached(DELETE_CONTACTS).await?;
        tx.execute(&stmt, &[&user.0]).await?;
        let stmt = tx.prepare_cached(DELETE_BLOCKS).await?;
        tx.execute(&stmt, &[&user.0]).await?;
        let stmt = tx.prepare_cached(WIPE_PROFILE).await?;
        tx.execute(&stmt, &[&user.0, &DELETED_DISPLAY_NAME]).await?;
        let erased = if erase {
            let stmt = tx.prepare_cached(ERASE_MESSAGES).await?;
            tx.execute(&stmt, &[&user.0]).await?
        } else {
            0
        };
        let stmt = tx.prepare_cached(DROP_NOTIFICATIONS).await?;
        tx.execute(&stmt, &[&user.0]).await?;
        tx.commit().await?;
        Ok(Deleted { erased, events })
    }

    /// The groups `user` is a member of.
    pub async fn groups_of(&self, user: UserId) -> Result<Vec<ConvId>, StoreError> {
        let client = self.pool().get().await?;
        let stmt = client.prepare_cached(GROUPS_OF).await?;
        client
            .query(&stmt, &[&user.0])
            .await?
            .iter()
            .map(|r| Ok(ConvId(r.try_get("conv")?)))
            .collect()
    }
}
