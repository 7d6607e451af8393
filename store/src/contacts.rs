//! Contacts, friend requests and blocks.
//!
//! Each operation is one transaction that changes the state and records the events
//! of both users it concerns (see `events.rs`): it first locks both user rows, lowest
//! id first, so two operations on one pair (a request each way at once, an accept
//! racing a cancel) run one after the other, and none waits on another in a circle.
//! A refusal changes nothing: the transaction is dropped, which rolls it back.
//!
//! A request from B while A's request to B is pending does not conflict: it accepts
//! A's request (both asked, so both agree), and answers with that request, accepted.

use crate::error::StoreError;
use crate::events::{lock_users, record_user_event, Recorded};
use crate::store::Store;
use chat_wire::{
    Contact, ContactRequest, ContactsResponse, RequestId, RequestStatus, UserEvent, UserId,
};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

const INSERT_REQUEST: &str = "INSERT INTO contact_requests (from_user, to_user, note)
     VALUES ($1, $2, $3)
     RETURNING id, from_user, to_user, note, status, created_at, answered_at";

/// The pending request between `$1` and `$2`, either way (by the pair index).
const PENDING_BETWEEN: &str = "SELECT id, from_user, to_user, note, status, created_at, answered_at
       FROM contact_requests
      WHERE status = 'pending'
        AND LEAST(from_user, to_user) = LEAST($1::bigint, $2::bigint)
        AND GREATEST(from_user, to_user) = GREATEST($1::bigint, $2::bigint)";

const REQUEST_BY_ID: &str = "SELECT id, from_user, to_user, note, status, created_at, answered_at
       FROM contact_requests WHERE id = $1";

const ANSWER_REQUEST: &str = "UPDATE contact_requests SET status = $2, answered_at = now()
      WHERE id = $1 AND status = 'pending'
  RETURNING id, from_user, to_user, note, status, created_at, answered_at";

/// Ends every pending request between `$1` and `$2`, either way (at most one).
const CANCEL_PENDING_BETWEEN: &str =
    "UPDATE contact_requests SET status = 'cancelled', answered_at = now()
      WHERE status = 'pending'
        AND LEAST(from_user, to_user) = LEAST($1::bigint, $2::bigint)
        AND GREATEST(from_user, to_user) = GREATEST($1::bigint, $2::bigint)
  RETURNING id, from_user, to_user, note, status, created_at, answered_at";

const ARE_CONTACTS: &str = "SELECT 1 FROM contacts WHERE user_id = $1 AND peer = $2";

const BLOCKED_BETWEEN: &str = "SELECT 1 FROM blocks
     WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1)";

const INSERT_CONTACTS: &str = "INSERT INTO contacts (user_id, peer) VALUES ($1, $2), ($2, $1)
     ON CONFLICT DO NOTHING";

const DELETE_CONTACTS: &str =
    "DELETE FROM contacts WHERE (user_id = $1 AND peer = $2) OR (user_id = $2 AND peer = $1)";

const INSERT_BLOCK: &str =
    "INSERT INTO blocks (blocker, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING";

const DELETE_BLOCK: &str = "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2";

const LIST_CONTACTS: &str = "SELECT c.peer, c.since, u.username, u.display_name, u.avatar_url
       FROM contacts c JOIN users u ON u.id = c.peer
      WHERE c.user_id = $1 ORDER BY u.username";

const PENDING_OF: &str = "SELECT id, from_user, to_user, note, status, created_at, answered_at
       FROM contact_requests
      WHERE status = 'pending' AND (to_user = $1 OR from_user = $1) ORDER BY id";

const BLOCKED_BY: &str = "SELECT blocked FROM blocks WHERE blocker = $1 ORDER BY blocked";

/// Why a contacts operation was refused (nothing changed), or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ContactError {
    #[error("you cannot send a friend request to yourself")]
    ToSelf,
    #[error("you cannot block yourself")]
    BlockSelf,
    #[error("user not found")]
    UnknownUser,
    #[error("you are already contacts")]
    AlreadyContacts,
    #[error("a friend request between you is already pending")]
    AlreadyPending,
    #[error("a block stands between you and this user")]
    Blocked,
    #[error("friend request not found")]
    NoSuchRequest,
    #[error("only the recipient of a friend request can accept or decline it")]
    NotRecipient,
    #[error("only the sender of a friend request can cancel it")]
    NotSender,
    #[error("this friend request is already {0}")]
    Answered(RequestStatus),
    #[error("this user is not one of your contacts")]
    NotContacts,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for ContactError {
    fn from(e: tokio_postgres::Error) -> Self {
        ContactError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ContactError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ContactError::Store(e.into())
    }
}

/// What an operation changed, and the events it recorded: push them once committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed<T> {
    pub value: T,
    pub events: Vec<Recorded>,
}

/// How a friend request sent now ended up.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// Stored as a new pending request.
    Created(ContactRequest),
    /// The other user had already asked: their request is accepted instead.
    AcceptedTheirs(ContactRequest),
}

impl Sent {
    pub fn request(&self) -> &ContactRequest {
        match self {
            Sent::Created(r) | Sent::AcceptedTheirs(r) => r,
        }
    }
}

/// What the caller does with a friend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The recipient agrees: the two become contacts.
    Accept,
    /// The recipient refuses.
    Decline,
    /// The sender withdraws it.
    Cancel,
}

impl Answer {
    fn status(self) -> RequestStatus {
        match self {
            Answer::Accept => RequestStatus::Accepted,
            Answer::Decline => RequestStatus::Declined,
            Answer::Cancel => RequestStatus::Cancelled,
        }
    }
}

/// Rules of `create_direct`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectRules {
    /// Only contacts may open a direct conversation (`chat.direct_requires_friendship`).
    pub requires_friendship: bool,
}

pub(crate) fn request(row: &Row) -> Result<ContactRequest, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(ContactRequest {
        id: RequestId(row.try_get("id")?),
        from: UserId(row.try_get("from_user")?),
        to: UserId(row.try_get("to_user")?),
        note: row.try_get("note")?,
        status: status
            .parse()
            .map_err(|e: String| StoreError::Unavailable(e))?,
        ts: row.try_get("created_at")?,
        answered_at: row.try_get("answered_at")?,
    })
}

/// Whether `a` and `b` are contacts, in `tx`.
pub(crate) async fn are_contacts_in(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
) -> Result<bool, StoreError> {
    let stmt = tx.prepare_cached(ARE_CONTACTS).await?;
    Ok(tx.query_opt(&stmt, &[&a.0, &b.0]).await?.is_some())
}

/// Whether either of `a` and `b` blocked the other, in `tx`.
pub(crate) async fn blocked_between_in(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
) -> Result<bool, StoreError> {
    let stmt = tx.prepare_cached(BLOCKED_BETWEEN).await?;
    Ok(tx.query_opt(&stmt, &[&a.0, &b.0]).await?.is_some())
}

/// Records `event` for each of `users`, in `tx` (their rows are locked already).
async fn record_for(
    tx: &Transaction<'_>,
    users: &[UserId],
    event: &UserEvent,
    out: &mut Vec<Recorded>,
) -> Result<(), StoreError> {
    for user in users {
        out.push(record_user_event(tx, *user, event).await?);
    }
    Ok(())
}

/// Locks `me` and `other`; `UnknownUser` unless both exist.
async fn lock_pair(tx: &Transaction<'_>, me: UserId, other: UserId) -> Result<(), ContactError> {
    if lock_users(tx, &[me, other]).await? != 2 {
        return Err(ContactError::UnknownUser);
    }
    Ok(())
}

/// The pending request between `a` and `b`, either way.
async fn pending_between(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
) -> Result<Option<ContactRequest>, StoreError> {
    let stmt = tx.prepare_cached(PENDING_BETWEEN).await?;
    tx.query_opt(&stmt, &[&a.0, &b.0])
        .await?
        .as_ref()
        .map(request)
        .transpose()
}

/// Sets a pending request's status (the users are locked); `Answered` if it was not
/// pending any more.
async fn set_status(
    tx: &Transaction<'_>,
    id: RequestId,
    status: RequestStatus,
) -> Result<ContactRequest, ContactError> {
    let stmt = tx.prepare_cached(ANSWER_REQUEST).await?;
    match tx.query_opt(&stmt, &[&id.0, &status.as_str()]).await? {
        Some(row) => Ok(request(&row)?),
        None => Err(ContactError::NoSuchRequest),
    }
}

/// Makes `request` accepted and its two users contacts, with the events of both.
async fn accept(
    tx: &Transaction<'_>,
    pending: &ContactRequest,
    events: &mut Vec<Recorded>,
) -> Result<ContactRequest, ContactError> {
    let accepted = set_status(tx, pending.id, RequestStatus::Accepted).await?;
    let stmt = tx.prepare_cached(INSERT_CONTACTS).await?;
    tx.execute(&stmt, &[&accepted.from.0, &accepted.to.0])
        .await?;
    let event = UserEvent::RequestAnswered {
        request: accepted.clone(),
    };
    record_for(tx, &[accepted.from, accepted.to], &event, events).await?;
    Ok(accepted)
}

impl Store {
    /// `from` asks `to` to become contacts, with an optional note (checked by the
    /// caller). Refused to oneself, to an unknown user, between contacts, while a
    /// request from `from` is pending, and where either blocked the other. Where `to`
    /// already asked `from`, that request is accepted instead (see the module
    /// documentation).
    pub async fn send_contact_request(
        &self,
        from: UserId,
        to: UserId,
        note: Option<&str>,
    ) -> Result<Changed<Sent>, ContactError> {
        if from == to {
            return Err(ContactError::ToSelf);
        }
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        lock_pair(&tx, from, to).await?;
        if blocked_between_in(&tx, from, to).await? {
            return Err(ContactError::Blocked);
        }
        if are_contacts_in(&tx, from, to).await? {
            return Err(ContactError::AlreadyContacts);
        }
        let mut events = Vec::new();
        let sent = match pending_between(&tx, from, to).await? {
            Some(p) if p.from == from => return Err(ContactError::AlreadyPending),
            Some(theirs) => Sent::AcceptedTheirs(accept(&tx, &theirs, &mut events).await?),
            None => {
                let stmt = tx.prepare_cached(INSERT_REQUEST).await?;
                let row = tx.query_one(&stmt, &[&from.0, &to.0, &note]).await?;
                let created = request(&row)?;
                let event = UserEvent::Request {
                    request: created.clone(),
                };
                record_for(&tx, &[from, to], &event, &mut events).await?;
                Sent::Created(created)
            }
        };
        tx.commit().await?;
        Ok(Changed {
            value: sent,
            events,
        })
    }

    /// `caller` accepts or declines (as its recipient) or cancels (as its sender) the
    /// pending request `id`.
    pub async fn answer_contact_request(
        &self,
        caller: UserId,
        id: RequestId,
        answer: Answer,
    ) -> Result<Changed<ContactRequest>, ContactError> {
        let found = self
            .query_opt(REQUEST_BY_ID, &[&id.0])
            .await?
            .as_ref()
            .map(request)
            .transpose()?
            .ok_or(ContactError::NoSuchRequest)?;
        let allowed = match answer {
            Answer::Accept | Answer::Decline => found.to == caller,
            Answer::Cancel => found.from == caller,
        };
        if !allowed {
            return Err(match answer {
                Answer::Accept | Answer::Decline => ContactError::NotRecipient,
                Answer::Cancel => ContactError::NotSender,
            });
        }
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        lock_pair(&tx, found.from, found.to).await?;
        // Read again under the locks: it may have been answered meanwhile.
        let stmt = tx.prepare_cached(REQUEST_BY_ID).await?;
        let current = request(&tx.query_one(&stmt, &[&id.0]).await?)?;
        if current.status != RequestStatus::Pending {
            return Err(ContactError::Answered(current.status));
        }
        let mut events = Vec::new();
        let answered = match answer {
            Answer::Accept => accept(&tx, &current, &mut events).await?,
            Answer::Decline | Answer::Cancel => {
                let answered = set_status(&tx, id, answer.status()).await?;
                let event = UserEvent::RequestAnswered {
                    request: answered.clone(),
                };
                record_for(&tx, &[answered.from, answered.to], &event, &mut events).await?;
                answered
            }
        };
        tx.commit().await?;
        Ok(Changed {
            value: answered,
            events,
        })
    }

    /// `me` and `peer` stop being contacts (both directions); `NotContacts` if they
    /// were not.
    pub async fn unfriend(&self, me: UserId, peer: UserId) -> Result<Changed<()>, ContactError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        lock_pair(&tx, me, peer).await?;
        let mut events = Vec::new();
        if !end_friendship(&tx, me, peer, &mut events).await? {
            return Err(ContactError::NotContacts);
        }
        tx.commit().await?;
        Ok(Changed { value: (), events })
    }

    /// `me` blocks `other`: it also ends their friendship and cancels a pending request
    /// either way. Blocking again changes nothing (no events). Returns whether the
    /// block is new.
    pub async fn block(&self, me: UserId, other: UserId) -> Result<Changed<bool>, ContactError> {
        if me == other {
            return Err(ContactError::BlockSelf);
        }
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        lock_pair(&tx, me, other).await?;
        let stmt = tx.prepare_cached(INSERT_BLOCK).await?;
        let mut events = Vec::new();
        if tx.execute(&stmt, &[&me.0, &other.0]).await? == 0 {
            return Ok(Changed {
                value: false,
                events,
            });
        }
        record_for(&tx, &[me], &UserEvent::Blocked { user: other }, &mut events).await?;
        end_friendship(&tx, me, other, &mut events).await?;
        let stmt = tx.prepare_cached(CANCEL_PENDING_BETWEEN).await?;
        for row in tx.query(&stmt, &[&me.0, &other.0]).await? {
            let cancelled = request(&row)?;
            let event = UserEvent::RequestAnswered { request: cancelled };
            record_for(&tx, &[me, other], &event, &mut events).await?;
        }
        tx.commit().await?;
        Ok(Changed {
            value: true,
            events,
        })
    }

    /// `me` lifts a block of `other`; nothing changes where there was none. Returns
    /// whether there was one.
    pub async fn unblock(&self, me: UserId, other: UserId) -> Result<Changed<bool>, ContactError> {
        if me == other {
            return Err(ContactError::BlockSelf);
        }
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        lock_pair(&tx, me, other).await?;
        let stmt = tx.prepare_cached(DELETE_BLOCK).await?;
        let mut events = Vec::new();
        let lifted = tx.execute(&stmt, &[&me.0, &other.0]).await? > 0;
        if lifted {
            record_for(
                &tx,
                &[me],
                &UserEvent::Unblocked { user: other },
                &mut events,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Changed {
            value: lifted,
            events,
        })
    }

    /// The caller's contacts with their profiles, pending requests both ways, and
    /// whom they blocked.
    pub async fn contacts(&self, user: UserId) -> Result<ContactsResponse, StoreError> {
        let contacts = self
            .query(LIST_CONTACTS, &[&user.0])
            .await?
            .iter()
            .map(|r| {
                Ok(Contact {
                    user: UserId(r.try_get("peer")?),
                    since: r.try_get("since")?,
                    username: r.try_get("username")?,
                    display_name: r.try_get("display_name")?,
                    avatar_url: r.try_get("avatar_url")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (mut incoming, mut outgoing) = (Vec::new(), Vec::new());
        for row in self.query(PENDING_OF, &[&user.0]).await? {
            let r = request(&row)?;
            if r.to == user {
                incoming.push(r);
            } else {
                outgoing.push(r);
            }
        }
        let blocked = self
            .query(BLOCKED_BY, &[&user.0])
            .await?
            .iter()
            .map(|r| Ok(UserId(r.try_get("blocked")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ContactsResponse {
            contacts,
            incoming,
            outgoing,
            blocked,
        })
    }

    /// Whether either of `a` and `b` blocked the other.
    pub async fn blocked_between(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        Ok(self
            .query_opt(BLOCKED_BETWEEN, &[&a.0, &b.0])
            .await?
            .is_some())
    }

    /// Whether `a` and `b` are contacts.
    pub async fn are_friends(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        Ok(self.query_opt(ARE_CONTACTS, &[&a.0, &b.0]).await?.is_some())
    }
}

/// Removes the friendship of `a` and `b` (both directions) and records `unfriended`
/// for both; returns whether they were contacts.
async fn end_friendship(
    tx: &Transaction<'_>,
    a: UserId,
    b: UserId,
    events: &mut Vec<Recorded>,
) -> Result<bool, StoreError> {
    let stmt = tx.prepare_cached(DELETE_CONTACTS).await?;
    if tx.execute(&stmt, &[&a.0, &b.0]).await? == 0 {
        return Ok(false);
    }
    record_for(tx, &[a], &UserEvent::Unfriended { user: b }, events).await?;
    record_for(tx, &[b], &UserEvent::Unfriended { user: a }, events).await?;
    Ok(true)
}
