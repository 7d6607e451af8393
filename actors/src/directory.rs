//! Who is connected to this node, readable from any thread: the sessions of each online
//! user, and the online users of each broadcast audience.
//!
//! The Registry writes it as sessions attach and detach and as audiences change; the
//! Conversation actors read it to hand a frame to their members' sessions themselves,
//! each on its own arbiter, instead of sending every frame through one actor. A push
//! goes straight into the session's outbound queue (the one its writer task drains),
//! not through the session actor's mailbox. A frame of one conversation still reaches
//! each session in seq order: it is queued by that conversation's actor only, in order,
//! and the queue keeps the order of one sender.

use crate::messages::{SessionId, SlowConsumer};
use crate::metrics as m;
use crate::session::{OutQueue, Outbound};
use actix::Recipient;
use bytestring::ByteString;
use chat_wire::{AudienceKey, UserId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::mpsc;

/// Where pushes to one session go.
struct Pusher {
    id: SessionId,
    /// Told when its queue is full.
    slow: Recipient<SlowConsumer>,
    out: OutQueue,
}

impl Pusher {
    /// Queues `frame`; a full queue means the client is not reading, and the session
    /// closes itself (4001). Returns whether it was queued.
    fn push(&self, frame: &ByteString) -> bool {
        match self.out.try_send(Outbound::Text(frame.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.do_send(SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<UserId, Vec<Pusher>>,
    audiences: HashMap<AudienceKey, Vec<UserId>>,
}

/// The node's directory of sessions. Cheap to clone: clones share it.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<Inner>>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while the lock was held cannot leave the maps half-changed in a way
    // that matters (each change is one insert or remove), so a poisoned lock is used.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A session of `user` is open here; pushes go to its queue `out`.
    pub fn attach(
        &self,
        user: UserId,
        id: SessionId,
        slow: Recipient<SlowConsumer>,
        out: OutQueue,
    ) {
        self.write()
            .sessions
            .entry(user)
            .or_default()
            .push(Pusher { id, slow, out });
    }

    /// Those of `users` with a session open on this node now (before the presence
    /// hub's next tick has told the cluster).
    pub fn here_of(&self, users: &[UserId]) -> Vec<UserId> {
        let inner = self.read();
        users
            .iter()
            .copied()
            .filter(|u| inner.sessions.contains_key(u))
            .collect()
    }

    /// A session of `user` is gone.
    pub fn detach(&self, user: UserId, id: SessionId) {
        let mut inner = self.write();
        if let Some(list) = inner.sessions.get_mut(&user) {
            list.retain(|p| p.id != id);
            if list.is_empty() {
                inner.sessions.remove(&user);
            }
        }
    }

    /// `user` (online here) belongs to `audience` now.
    pub fn join_audience(&self, audience: &AudienceKey, user: UserId) {
        let mut inner = self.write();
        let users = inner.audiences.entry(audience.clone()).or_default();
        if !users.contains(&user) {
            users.push(user);
        }
    }

    /// `user` no longer belongs to `audience` (or went offline).
    pub fn leave_audience(&self, audience: &AudienceKey, user: UserId) {
        let mut inner = self.write();
        if let Some(users) = inner.audiences.get_mut(audience) {
            users.retain(|u| *u != user);
            if users.is_empty() {
                inner.audiences.remove(audience);
            }
        }
    }

    /// One frame to every session here of `users`, except the session `skip` and the
    /// sessions of `skip_user`. Returns how many sessions it was queued for.
    pub fn to_users(
        &self,
        users: &[UserId],
        frame: &ByteString,
        skip: Option<SessionId>,
        skip_user: Option<UserId>,
    ) -> u64 {
        let n = deliver(&self.read(), users.iter(), frame, skip, skip_user);
        metrics::counter!(m::DELIVERIES_TOTAL).increment(n);
        n
    }

    /// One frame to every session here.
    pub fn to_all(&self, frame: &ByteString) -> u64 {
        let inner = self.read();
        let n = deliver(&inner, inner.sessions.keys(), frame, None, None);
        drop(inner);
        metrics::counter!(m::DELIVERIES_TOTAL).increment(n);
        n
    }

    /// One frame to every session here of a user of `audience`.
    pub fn to_audience(&self, audience: &AudienceKey, frame: &ByteString) -> u64 {
        let inner = self.read();
        let users = inner.audiences.get(audience).into_iter().flatten();
        let n = deliver(&inner, users, frame, None, None);
        drop(inner);
        metrics::counter!(m::DELIVERIES_TOTAL).increment(n);
        n
    }
}

/// Hands `frame` to the sessions of `users` (see [`Directory::to_users`]).
fn deliver<'a>(
    inner: &Inner,
    users: impl Iterator<Item = &'a UserId>,
    frame: &ByteString,
    skip: Option<SessionId>,
    skip_user: Option<UserId>,
) -> u64 {
    let mut n = 0;
    for user in users {
        if Some(*user) == skip_user {
            continue;
        }
        for p in inner.sessions.get(user).into_iter().flatten() {
            if Some(p.id) != skip && p.push(frame) {
                n += 1;
            }
        }
    }
    n
}
